"""Policy rules as pure functions: repo names, allowlists, token limits, signatures."""

from __future__ import annotations

import pytest

from ci_pool.core.capabilities import Capability
from ci_pool.core.policy import (
    Submitter,
    check_access,
    check_policy,
    repo_allowed,
    repo_name,
    sign,
    signature_mac,
    verify_signature,
)
from ci_pool.exceptions import AccessDenied, PolicyDenied

STRICT = Capability(
    name="deploy",
    queue="deploy",
    image="img",
    repos=("org/*",),
    refs=("refs/heads/main", "refs/tags/v*"),
    require_signature=True,
)
API = Submitter(name="token 'bot'", operator=False)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://git.example/org/app.git", "org/app"),
        ("ssh://git@git.example:2222/org/app", "org/app"),
        ("git@git.example:org/app.git", "org/app"),
        ("git://127.0.0.1:9418/org/sub/app.git/", "org/sub/app"),
    ],
)
def test_repo_name(url: str, name: str) -> None:
    assert repo_name(url) == name


def test_repo_globs_stay_within_a_segment_unless_doubled() -> None:
    assert repo_allowed(["org/*"], "https://h/org/app.git")
    assert not repo_allowed(["org/*"], "https://h/org/sub/app.git")
    assert repo_allowed(["org/**"], "https://h/org/sub/app.git")
    assert not repo_allowed(["org/*"], "https://h/orgx/app.git")
    assert repo_allowed(["https://h/org/*"], "https://h/org/app")
    assert not repo_allowed(["https://h/org/*"], "https://evil/org/app")
    assert not repo_allowed([], "https://h/org/app")


def test_allowed_repo_and_ref_with_a_signature_pass() -> None:
    check_policy(STRICT, "https://h/org/app", ["refs/tags/v1.2"], Submitter(signed_by="k@1"))


@pytest.mark.parametrize(
    ("repo", "refs", "who", "rule"),
    [
        ("https://h/other/app", ["refs/heads/main"], API, "capabilities.deploy.repos"),
        ("https://h/org/app", ["refs/heads/feature"], API, "capabilities.deploy.refs"),
        ("https://h/org/app", None, API, "capabilities.deploy.refs"),
        # A name that is both a branch and a tag: both must be allowed.
        ("https://h/org/app", ["refs/heads/v1", "refs/tags/v1"], API, "capabilities.deploy.refs"),
        ("https://h/org/app", ["refs/heads/main"], API, "capabilities.deploy.require_signature"),
    ],
)
def test_each_rule_denies_with_its_name(
    repo: str, refs: list[str] | None, who: Submitter, rule: str
) -> None:
    with pytest.raises(PolicyDenied) as info:
        check_policy(STRICT, repo, refs, who)
    assert info.value.rule == rule and f"denied by rule {rule}" in str(info.value)


def test_a_token_scoped_to_the_capability_or_the_operator_needs_no_signature() -> None:
    scoped = Submitter(name="t", capabilities=("deploy",), operator=False)
    check_policy(STRICT, "https://h/org/app", ["refs/heads/main"], scoped)
    check_policy(STRICT, "https://h/org/app", ["refs/heads/main"], Submitter())


def test_token_limits() -> None:
    who = Submitter(name="token 'ci'", capabilities=("linux",), repos=("org/*",), operator=False)
    with pytest.raises(AccessDenied, match="submit only for capabilities linux, not 'deploy'"):
        check_access(who, "deploy", "https://h/org/app")
    with pytest.raises(AccessDenied, match="only for repositories org/\\*"):
        check_access(who, "linux", "https://h/other/app")
    check_access(who, "linux", "https://h/org/app")


def test_ref_patterns_must_be_full_refs() -> None:
    with pytest.raises(ValueError, match="must be a full ref"):
        Capability(name="x", queue="x", image="i", refs=("main",))


KEYS = {"bot@1": "env:CI_POOL_TEST_KEY_1", "bot@2": "env:CI_POOL_TEST_KEY_2"}


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_POOL_TEST_KEY_1", "first-key")
    monkeypatch.setenv("CI_POOL_TEST_KEY_2", "second-key")


def test_signature_round_trip_and_rotation() -> None:
    body = {"repo": "r", "steps": [{"run": "x"}], "capability": "deploy"}
    assert verify_signature(sign(b"first-key", "bot@1", body), body, KEYS) == "bot@1"
    assert verify_signature(sign(b"second-key", "bot@2", body), body, KEYS) == "bot@2"
    # Key order in the body does not matter: the canonical form sorts it.
    reordered = dict(reversed(list(body.items())))
    assert verify_signature(sign(b"first-key", "bot@1", body), reordered, KEYS) == "bot@1"
    # Two signings of the same body in the same second differ (a fresh nonce each).
    one, two = (sign(b"first-key", "bot@1", body, now=1000.0) for _ in range(2))
    assert one != two and signature_mac(one) != signature_mac(two)
    assert verify_signature(two, body, KEYS, now=1000.0) == "bot@1"


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("", "must read keyid="),
        ("keyid=bot@1,t=1,nonce=00112233445566778899,sha256=zz", "must read keyid="),
        ("keyid=bot@1,t=1,sha256=" + "0" * 64, "must read keyid="),
        ("keyid=nobody,t=1,nonce=" + "a" * 32 + ",sha256=" + "0" * 64, "not configured"),
    ],
)
def test_malformed_or_unknown_signatures(header: str, words: str) -> None:
    with pytest.raises(AccessDenied, match=words):
        verify_signature(header, {}, KEYS)


def test_tampered_wrong_key_and_stale_signatures() -> None:
    body = {"ref": "main"}
    with pytest.raises(AccessDenied, match="does not match"):
        verify_signature(sign(b"first-key", "bot@1", body), {"ref": "evil"}, KEYS)
    with pytest.raises(AccessDenied, match="does not match"):
        verify_signature(sign(b"second-key", "bot@1", body), body, KEYS)
    with pytest.raises(AccessDenied, match="server's clock"):
        verify_signature(sign(b"first-key", "bot@1", body, now=1000.0), body, KEYS, now=2000.0)
    message = ""
    try:
        verify_signature(sign(b"second-key", "bot@1", body), body, KEYS)
    except AccessDenied as exc:
        message = str(exc)
    assert "first-key" not in message and "second-key" not in message
