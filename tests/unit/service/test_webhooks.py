"""Webhooks without a broker: signatures, ref globs, push triggers, payloads, replays."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from ci_pool.core.globs import glob_match
from ci_pool.core.triggers import push_trigger
from ci_pool.exceptions import InputError
from ci_pool.service import webhooks
from ci_pool.service.pool import Pool
from ci_pool.service.webhooks import (
    HookRefused,
    Push,
    WebhookDelivery,
    parse_push,
    record_delivery,
    sign,
    verify_signature,
)
from ci_pool.settings import load_settings
from ci_pool.store import Store, deliveries

SHA = "0123456789abcdef0123456789abcdef01234567"
BODY = b'{"ref": "refs/heads/main"}'


@pytest.fixture
def secret() -> str:
    return secrets.token_hex(16)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path}/s.db")
    s.init_schema()
    yield s
    s.close()


def refused(exc: pytest.ExceptionInfo[HookRefused], status: int, code: str) -> str:
    assert (exc.value.status, exc.value.code) == (status, code)
    return str(exc.value)


# -- signatures -------------------------------------------------------------------------------


def test_gitea_signature_is_the_hex_hmac_of_the_body(secret: str) -> None:
    verify_signature("gitea", secret, BODY, {"x-gitea-signature": sign(secret, BODY)})
    verify_signature("gitea", secret, BODY, {"x-gitea-signature": sign(secret, BODY).upper()})


def test_github_signature_is_prefixed_with_sha256(secret: str) -> None:
    header = {"x-hub-signature-256": "sha256=" + sign(secret, BODY)}
    verify_signature("github", secret, BODY, header)


@pytest.mark.parametrize("provider", ["gitea", "github"])
def test_missing_signature_is_401_naming_the_header(provider: webhooks.Provider) -> None:
    with pytest.raises(HookRefused) as exc:
        verify_signature(provider, "k", BODY, {})
    message = refused(exc, 401, "unauthorized")
    name = "X-Gitea-Signature" if provider == "gitea" else "X-Hub-Signature-256"
    assert name in message and "missing" in message


@pytest.mark.parametrize(
    ("provider", "header", "value"),
    [
        ("gitea", "x-gitea-signature", "0" * 64),
        ("gitea", "x-gitea-signature", "not-hex"),
        ("github", "x-hub-signature-256", "sha256=" + "0" * 64),
        ("github", "x-hub-signature-256", "sha1=" + "0" * 40),
    ],
)
def test_invalid_signature_is_401_and_never_shows_secret_or_digest(
    provider: webhooks.Provider, header: str, value: str, secret: str
) -> None:
    with pytest.raises(HookRefused) as exc:
        verify_signature(provider, secret, BODY, {header: value})
    message = refused(exc, 401, "unauthorized")
    assert secret not in message and sign(secret, BODY) not in message


def test_github_signature_without_prefix_is_refused(secret: str) -> None:
    with pytest.raises(HookRefused) as exc:
        verify_signature("github", secret, BODY, {"x-hub-signature-256": sign(secret, BODY)})
    assert "'sha256='" in refused(exc, 401, "unauthorized")


def test_signature_of_another_body_or_secret_is_refused(secret: str) -> None:
    for header in (sign(secret, BODY + b" "), sign(secret + "x", BODY)):
        with pytest.raises(HookRefused):
            verify_signature("gitea", secret, BODY, {"x-gitea-signature": header})


def test_non_ascii_signature_is_refused_not_an_error(secret: str) -> None:
    with pytest.raises(HookRefused):
        verify_signature("gitea", secret, BODY, {"x-gitea-signature": "é" * 64})


# -- globs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("main", "main", True),
        ("main", "main2", False),
        ("*", "main", True),
        ("*", "feature/x", False),
        ("**", "feature/x", True),
        ("feature/*", "feature/x", True),
        ("feature/*", "feature/x/y", False),
        ("feature/**", "feature/x/y", True),
        ("releases/**-alpha", "releases/beta/3-alpha", True),
        ("v*", "v1.2.3", True),
        ("v[12].[0-9]+.[0-9]+", "v1.10.3", True),
        ("v[12].[0-9]+.[0-9]+", "v3.1.0", False),
        ("v2*", "v2", True),
        ("docs?", "doc", True),
        ("docs?", "docs", True),
        ("docs?", "docss", False),
        ("v1.0", "v1x0", False),
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("*.md", "x.md", True),
        ("(x)", "(x)", True),
    ],
)
def test_glob_match(pattern: str, name: str, expected: bool) -> None:
    assert glob_match(pattern, name) is expected


# -- triggers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("on", ["push", ["pull_request", "push"], {"push": None}, {"push": {}}])
def test_push_without_filters_runs_for_every_branch_and_tag(on: Any) -> None:
    assert push_trigger(on, "branch", "feature/x") is None
    assert push_trigger(on, "tag", "v1") is None


@pytest.mark.parametrize("on", [None, "pull_request", ["workflow_dispatch"], {"schedule": []}])
def test_workflow_without_push_does_not_run(on: Any) -> None:
    why = push_trigger(on, "branch", "main")
    assert why is not None and "push" in why


def test_branch_filters() -> None:
    on = {"push": {"branches": ["main", "releases/**"]}}
    assert push_trigger(on, "branch", "main") is None
    assert push_trigger(on, "branch", "releases/1/x") is None
    why = push_trigger(on, "branch", "feature")
    assert why == "on.push.branches (main, releases/**) does not match branch 'feature'"
    assert "only branches" in (push_trigger(on, "tag", "v1") or "")


def test_branch_filter_as_a_single_string() -> None:
    assert push_trigger({"push": {"branches": "main"}}, "branch", "main") is None


def test_negated_patterns_apply_in_order() -> None:
    on = {"push": {"branches": ["releases/**", "!releases/**-alpha", "releases/keep-alpha"]}}
    assert push_trigger(on, "branch", "releases/10") is None
    assert push_trigger(on, "branch", "releases/10-alpha") is not None
    assert push_trigger(on, "branch", "releases/keep-alpha") is None


def test_ignore_filters() -> None:
    on = {"push": {"branches-ignore": ["wip/**"], "tags-ignore": ["*-rc"]}}
    assert push_trigger(on, "branch", "main") is None
    assert "'wip/**' matches" in (push_trigger(on, "branch", "wip/a/b") or "")
    assert push_trigger(on, "tag", "v1") is None
    assert push_trigger(on, "tag", "v1-rc") is not None


def test_tag_filters_only_leave_branches_out() -> None:
    on = {"push": {"tags": ["v*"]}}
    assert push_trigger(on, "tag", "v1.0") is None
    assert push_trigger(on, "tag", "release-1") is not None
    assert "only tags" in (push_trigger(on, "branch", "main") or "")


def test_branch_and_tag_filters_each_apply_to_their_kind() -> None:
    on = {"push": {"branches": ["main"], "tags": ["v*"]}}
    assert push_trigger(on, "branch", "main") is None
    assert push_trigger(on, "tag", "v2") is None
    assert push_trigger(on, "branch", "dev") is not None
    assert push_trigger(on, "tag", "x") is not None


@pytest.mark.parametrize(
    ("push", "fragment"),
    [
        ({"branches": ["a"], "branches-ignore": ["b"]}, "not both"),
        ({"paths": ["src/**"], "paths-ignore": ["docs/**"]}, "not both"),
        ({"branches": [1]}, "list of patterns"),
        ("main", "mapping"),
    ],
)
def test_filters_that_cannot_be_honoured_skip_with_a_reason(push: Any, fragment: str) -> None:
    assert fragment in (push_trigger({"push": push}, "branch", "a") or "")


# -- payloads ---------------------------------------------------------------------------------


def payload(ref: str = "refs/heads/main", after: str = SHA, **extra: Any) -> dict[str, Any]:
    return {
        "ref": ref,
        "before": "f" * 40,
        "after": after,
        "repository": {"clone_url": "https://git.example.org/org/app.git", "full_name": "o/a"},
        **extra,
    }


def test_branch_and_tag_pushes() -> None:
    repo = "https://git.example.org/org/app.git"
    assert parse_push(payload(), False) == Push("branch", "main", SHA, repo)
    assert parse_push(payload("refs/heads/feature/x"), False) == Push(
        "branch", "feature/x", SHA, repo
    )
    assert parse_push(payload("refs/tags/v1.0"), False) == Push("tag", "v1.0", SHA, repo)


def test_deleted_refs_and_other_refs_are_ignored_with_a_reason() -> None:
    assert "deleted" in str(parse_push(payload(after="0" * 40), False))
    assert "deleted" in str(parse_push(payload(deleted=True), False))
    assert "neither a branch nor a tag" in str(parse_push(payload("refs/pull/1/head"), False))


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"ref": "refs/heads/main", "after": SHA}, "repository"),
        (payload(after="abc"), "after"),
        (payload("refs/heads/--upload-pack=x"), "ref"),
        (payload(repository={"clone_url": "file:///etc"}), "repository.clone_url"),
        (payload(repository={"clone_url": "--upload-pack=x"}), "repository.clone_url"),
        ([1, 2], None),
    ],
)
def test_invalid_payloads_name_the_field(data: Any, field: str | None) -> None:
    with pytest.raises(InputError) as exc:
        parse_push(data, False)
    assert exc.value.field == field


def test_local_repositories_only_when_allowed() -> None:
    data = payload(repository={"clone_url": "file:///srv/git/app.git"})
    push = parse_push(data, True)
    assert isinstance(push, Push) and push.repo == "file:///srv/git/app.git"


def test_body_as_json_or_github_form() -> None:
    data = payload()
    assert webhooks.load_body(json.dumps(data).encode(), "application/json") == data
    form = urlencode({"payload": json.dumps(data)}).encode()
    assert webhooks.load_body(form, "application/x-www-form-urlencoded") == data
    with pytest.raises(InputError):
        webhooks.load_body(b"{not json", "application/json")
    with pytest.raises(InputError):
        webhooks.load_body(b"other=1", "application/x-www-form-urlencoded")


# -- deliveries ---------------------------------------------------------------------------------


def test_a_replayed_delivery_is_409(store: Store) -> None:
    push = Push("branch", "main", SHA, "https://git.example.org/a.git")
    record_delivery(store, "gitea", "d-1", "push", push)
    with pytest.raises(HookRefused) as exc:
        record_delivery(store, "gitea", "d-1", "push", push)
    assert "d-1" in refused(exc, 409, "replayed")
    record_delivery(store, "github", "d-1", "push", push)  # ids are per provider
    with store.session(write=False) as s:
        rows = list(s.scalars(select(WebhookDelivery)))
    assert {(r.provider, r.delivery_id, r.ref, r.commit_sha) for r in rows} == {
        ("gitea", "d-1", "main", SHA),
        ("github", "d-1", "main", SHA),
    }


def test_the_same_push_under_a_new_delivery_id_is_409_within_the_window(store: Store) -> None:
    before = "b" * 40
    push = Push("branch", "main", SHA, "https://git.example.org/a.git", before=before)
    record_delivery(store, "gitea", "d-1", "push", push, replay_window=3600)
    with pytest.raises(HookRefused) as exc:
        record_delivery(store, "gitea", "d-2", "push", push, replay_window=3600)
    message = refused(exc, 409, "replayed")
    assert "refs/heads/main" in message and "delivery d-1" in message
    # Another ref, another before, another provider: another push.
    record_delivery(
        store, "gitea", "d-3", "push", Push("tag", "main", SHA, push.repo, None, before)
    )
    record_delivery(store, "gitea", "d-4", "push", Push("branch", "main", SHA, push.repo))
    record_delivery(store, "github", "d-2", "push", push, replay_window=3600)
    with store.session(write=False) as s:
        ids = {
            r.delivery_id for r in s.scalars(select(WebhookDelivery).filter_by(provider="gitea"))
        }
    assert ids == {"d-1", "d-3", "d-4"}  # the refused one wrote nothing
    # Past the window the content key is forgotten and the push may run again.
    assert deliveries.forget_content_keys(store, 3600) == 0
    with store.session() as s:
        for row in s.scalars(select(WebhookDelivery)):
            row.received_at = row.received_at - timedelta(hours=2)
    record_delivery(store, "gitea", "d-5", "push", push, replay_window=3600)
    assert deliveries.forget_content_keys(store, 3600) == 3  # d-3, d-4 and github's d-2


def test_concurrent_deliveries_with_one_id_record_one(store: Store) -> None:
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def deliver() -> None:
        start.wait()
        try:
            record_delivery(store, "github", "same-id", "push")
            outcomes.append("recorded")
        except HookRefused as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["recorded"] + ["replayed"] * 7


# -- receive() up to the point where a push would fetch the repository -----------------------


@pytest.fixture
def pool(tmp_path: Path, secret: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pool]:
    monkeypatch.delenv("CI_POOL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hook-secret").write_text(secret + "\n")
    settings = load_settings(
        None,
        home=tmp_path / "home",
        webhook_secrets={"github": f"file:{tmp_path / 'hook-secret'}"},
    )
    p = Pool(settings)
    yield p
    p.store.close()


def signed(secret: str, body: bytes, event: str, delivery: str) -> dict[str, str]:
    return {
        "X-Hub-Signature-256": "sha256=" + sign(secret, body),
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "Content-Type": "application/json",
    }


def test_ping_is_pong_and_other_events_are_ignored(pool: Pool, secret: str) -> None:
    body = b'{"zen": "hi"}'
    pong = webhooks.receive(pool, "github", signed(secret, body, "ping", "p-1"), body)
    assert (pong.status, pong.message, pong.pipelines) == (200, "pong", [])
    other = webhooks.receive(pool, "github", signed(secret, body, "issues", "p-2"), body)
    assert other.status == 202 and "issues event is not handled" in other.message
    with pytest.raises(HookRefused) as exc:
        webhooks.receive(pool, "github", signed(secret, body, "ping", "p-1"), body)
    refused(exc, 409, "replayed")


def test_a_deleted_branch_starts_nothing(pool: Pool, secret: str) -> None:
    body = json.dumps(payload(after="0" * 40, deleted=True)).encode()
    res = webhooks.receive(pool, "github", signed(secret, body, "push", "del-1"), body)
    assert res.status == 202 and "was deleted" in res.message and res.pipelines == []


def test_a_provider_without_a_secret_refuses_everything(pool: Pool) -> None:
    with pytest.raises(HookRefused) as exc:
        webhooks.receive(pool, "gitea", {"X-Gitea-Signature": "0" * 64}, BODY)
    refused(exc, 403, "webhooks_disabled")


def test_an_unreadable_secret_is_503_without_details(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI_POOL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        None, home=tmp_path / "home", webhook_secrets={"gitea": "env:CI_POOL_TEST_NO_SUCH_VAR"}
    )
    with pytest.raises(HookRefused) as exc:
        webhooks.webhook_secret(settings, "gitea")
    assert "CI_POOL_TEST_NO_SUCH_VAR" not in refused(exc, 503, "webhooks_unavailable")


def test_the_delivery_id_is_required_and_checked_after_the_signature(
    pool: Pool, secret: str
) -> None:
    body = b"{}"
    for delivery in ("", "--x", "a" * 200, "a b"):
        with pytest.raises(InputError) as exc:
            webhooks.receive(pool, "github", signed(secret, body, "ping", delivery), body)
        assert exc.value.field == "x-github-delivery"


# -- path filters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("push", "changed", "runs"),
    [
        ({"paths": ["src/**"]}, {"src/a/b.c"}, True),
        ({"paths": ["src/**"]}, {"docs/x.md"}, False),
        ({"paths": ["src/*"]}, {"src/a/b.c"}, False),  # * stays within a segment
        ({"paths": ["src/**", "!src/gen/**"]}, {"src/gen/x.c"}, False),
        ({"paths": ["src/**", "!src/gen/**"]}, {"src/gen/x.c", "src/main.c"}, True),
        ({"paths-ignore": ["docs/**", "*.md"]}, {"docs/a.md", "README.md"}, False),
        ({"paths-ignore": ["docs/**"]}, {"docs/a.md", "src/x.c"}, True),
        ({"paths": ["src/**"]}, None, True),  # files unknown: runs
        ({"branches": ["main"], "paths": ["src/**"]}, {"docs/x"}, False),
    ],
)
def test_path_filters_follow_githubs_rules(
    push: dict[str, Any], changed: set[str] | None, runs: bool
) -> None:
    files = None if changed is None else frozenset(changed)
    why = push_trigger({"push": push}, "branch", "main", files)
    assert (why is None) == runs, why


def test_path_filters_do_not_apply_to_tag_pushes() -> None:
    on = {"push": {"paths": ["src/**"]}}
    assert push_trigger(on, "tag", "v1", frozenset({"docs/x"})) is None


def test_changed_files_come_from_the_commit_lists() -> None:
    commits = [
        {"added": ["a.txt"], "removed": [], "modified": ["src/x.c"]},
        {"added": [], "removed": ["old.c"], "modified": []},
    ]
    push = parse_push(payload(commits=commits), allow_local_repos=False)
    assert isinstance(push, Push)
    assert push.changed == frozenset({"a.txt", "src/x.c", "old.c"})
    # A new branch, a list cut short, or no list at all: unknown.
    new_ref = parse_push(payload(commits=commits, before="0" * 40), allow_local_repos=False)
    assert isinstance(new_ref, Push) and new_ref.changed is None
    cut = parse_push(payload(commits=commits, total_commits=30), allow_local_repos=False)
    assert isinstance(cut, Push) and cut.changed is None
    bare = parse_push(payload(), allow_local_repos=False)
    assert isinstance(bare, Push) and bare.changed is None
