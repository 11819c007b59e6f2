"""Job specs (refs, repo URLs, env, limits) and the job state transition table."""

from __future__ import annotations

from typing import Any

import pytest

from ci_pool.core.names import check_ref, check_repo_url, github_repository, is_sha, repository_name
from ci_pool.core.specs import (
    FINAL_STATES,
    TRANSITIONS,
    JobSpec,
    JobState,
    parse_job_spec,
    sources_of,
)
from ci_pool.exceptions import InputError

REPO = "https://git.example.com/org/app.git"
SHA1 = "0123456789abcdef0123456789abcdef01234567"
SHA256 = "0123456789abcdef" * 4


def spec(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"repo": REPO, "steps": [{"run": "make"}], "capability": "linux"}
    data.update(over)
    return data


def parse(allow_local_repos: bool = False, **over: Any) -> JobSpec:
    return parse_job_spec(spec(**over), allow_local_repos=allow_local_repos)


def input_error(allow_local_repos: bool = False, **over: Any) -> InputError:
    with pytest.raises(InputError) as info:
        parse(allow_local_repos, **over)
    return info.value


# -- minimal spec ----------------------------------------------------------------------


def test_minimal_spec_defaults() -> None:
    job = parse()
    assert job.repo == REPO
    assert job.ref == "HEAD"
    assert job.steps[0].run == "make"
    assert job.steps[0].name == "run"
    assert job.env == {}
    assert job.timeout is None
    assert job.labels == ()


def test_steps_are_required() -> None:
    assert input_error(steps=[]).field == "steps"
    err = input_error(steps=[{"run": ""}])
    assert err.field == "steps.0"
    assert "a step needs a non-empty script" in str(err)


def test_unknown_field_rejected() -> None:
    err = input_error(timout=10)
    assert err.field == "timout"


def test_unknown_step_field_rejected() -> None:
    err = input_error(steps=[{"run": "x", "uzes": "actions/checkout@v4"}])
    assert err.field == "steps.0.uzes"


def test_a_step_is_run_or_uses_not_both() -> None:
    err = input_error(steps=[{"run": "x", "uses": "actions/cache@v4"}])
    assert "one of run:, a checkout or uses:, not several" in str(err)
    err = input_error(steps=[{"run": "x", "inputs": {"a": "b"}}])
    assert "with: inputs belong to uses: steps" in str(err)
    err = input_error(steps=[{"uses": "../x@v1"}])
    assert err.field == "steps.0.uses"


def test_step_shell_is_bash_or_sh() -> None:
    assert parse(steps=[{"run": "x", "shell": "sh"}]).steps[0].shell == "sh"
    err = input_error(steps=[{"run": "x", "shell": "pwsh"}])
    assert err.field == "steps.0.shell" and "'bash' or 'sh'" in str(err)


def test_step_condition_and_env_are_checked() -> None:
    assert input_error(steps=[{"run": "x", "if_expr": "success( &&"}]).field == "steps.0.if_expr"
    assert input_error(steps=[{"run": "x", "env": {"CI_POOL_X": "1"}}]).field == "steps.0.env"


def test_checkout_ref_is_a_checked_ref() -> None:
    assert parse(checkout={"ref": "v1.2"}).checkout.ref == "v1.2"
    assert parse().checkout.ref is None
    err = input_error(checkout={"ref": "--upload-pack=evil"})
    assert err.field == "checkout.ref" and "git option" in str(err)


# -- refs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "-x",
        "--upload-pack=touch /tmp/pwned",
        "main..dev",
        "..",
        "feature branch",
        "main\tx",
        "main\nx",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[b",
        "a\\b",
        "a@{1}",
        "a//b",
        "a.lock",
        "a/",
        "a.",
        "/main",
        "",
        "a\x00b",
        "a\x7fb",
        "x" * 256,
    ],
)
def test_bad_refs_rejected_with_field_ref(ref: str) -> None:
    err = input_error(ref=ref)
    assert err.field == "ref"
    with pytest.raises(ValueError):
        check_ref(ref)


def test_ref_with_leading_dash_says_why() -> None:
    assert "git option" in str(input_error(ref="--output=/etc/passwd"))


@pytest.mark.parametrize(
    "ref",
    [
        "HEAD",
        "main",
        "release/1.2",
        "v1.2.3",
        "refs/heads/main",
        "refs/tags/v1.0",
        "refs/pull/12/head",
        "feature_x-y",
        SHA1,
        SHA256,
        "x" * 255,
    ],
)
def test_good_refs_accepted(ref: str) -> None:
    assert parse(ref=ref).ref == ref


def test_is_sha() -> None:
    assert is_sha(SHA1)
    assert is_sha(SHA256)
    assert not is_sha(SHA1[:-1])
    assert not is_sha(SHA1.upper())
    assert not is_sha("main")


# -- repo URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/org/repo.git",
        "http://git.internal:8080/org/repo",
        "ssh://git@github.com/org/repo.git",
        "ssh://git@host:2222/org/repo.git",
        "git://git.internal/app.git",
        "git://127.0.0.1:9418/app.git",
        "git@github.com:org/repo.git",
        "deploy.bot@git.example.com:org/repo",
    ],
)
def test_remote_urls_accepted(url: str) -> None:
    assert parse(repo=url).repo == url
    assert check_repo_url(url, allow_local=False) == url


@pytest.mark.parametrize(
    "url",
    [
        "--upload-pack=x",
        "-oProxyCommand=x",
        "ext::sh -c x",
        "ext::sh",
        "fd::17",
        "EXT::sh",
        "https://",
        "ssh:///path",
        "ftp://host/repo",
        "org/repo",
        "host:org/repo",
        "",
        " https://github.com/org/repo.git",
        "https://github.com/org/repo.git\n",
        "https://github.com/org/my repo.git",
    ],
)
def test_bad_urls_rejected_even_when_local_allowed(url: str) -> None:
    for allow in (False, True):
        err = input_error(allow, repo=url)
        assert err.field == "repo"


@pytest.mark.parametrize(
    "url", ["file:///x", "file:///srv/git/app.git", "/local/path", "./repo", "../repo"]
)
def test_local_repos_rejected_by_default(url: str) -> None:
    err = input_error(repo=url)
    assert err.field == "repo"
    assert "CI_POOL_ALLOW_LOCAL_REPOS" in str(err)


@pytest.mark.parametrize(
    "url", ["file:///x", "file:///srv/git/app.git", "/local/path", "./repo", "../repo"]
)
def test_local_repos_accepted_when_allowed(url: str) -> None:
    assert parse(True, repo=url).repo == url


def test_dash_url_says_why() -> None:
    assert "git option" in str(input_error(repo="--upload-pack=x"))


def test_remote_helper_says_why() -> None:
    assert "remote helper" in str(input_error(True, repo="ext::sh"))


def test_ssh_host_starting_with_dash_rejected() -> None:
    err = input_error(repo="ssh://-oProxyCommand=touch%20pwned/repo.git")
    assert err.field == "repo"


# -- env -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["1X", "A-B", "A B", "", "A=B", "Ä", "X.Y"])
def test_bad_env_names_rejected(name: str) -> None:
    err = input_error(env={name: "v"})
    assert err.field == "env"
    assert repr(name) in str(err)


@pytest.mark.parametrize("name", ["CI_POOL_JOB_ID", "CI_POOL_", "CI_POOL_X"])
def test_ci_pool_prefix_reserved(name: str) -> None:
    err = input_error(env={name: "v"})
    assert err.field == "env"
    assert "reserved" in str(err)


@pytest.mark.parametrize("name", ["X", "_X", "lower_case", "CI", "CI_POOLX", "PATH2"])
def test_good_env_names(name: str) -> None:
    assert parse(env={name: "v"}).env == {name: "v"}


# -- timeout, labels, name -------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0, -1])
def test_timeout_must_be_positive(timeout: int) -> None:
    assert input_error(timeout=timeout).field == "timeout"


def test_timeout_positive_accepted() -> None:
    assert parse(timeout=1).timeout == 1


@pytest.mark.parametrize("label", ["", "-x", "a b", "a/b", "x" * 64])
def test_bad_labels(label: str) -> None:
    assert input_error(labels=[label]).field == "labels"


def test_good_labels() -> None:
    assert parse(labels=["self-hosted", "linux", "x64"]).labels == ("self-hosted", "linux", "x64")


def test_spec_is_frozen() -> None:
    job = parse()
    with pytest.raises(ValueError):
        job.ref = "main"  # type: ignore[misc]


# -- transitions -----------------------------------------------------------------------

S = JobState
#: What each state's comment in ci_pool/core/specs.py says may follow it.
DOCUMENTED: dict[JobState, set[JobState]] = {
    S.BLOCKED: {S.QUEUED, S.SKIPPED, S.CANCELLED},
    S.QUEUED: {S.RUNNING, S.REJECTED, S.CANCELLED},
    S.RUNNING: {S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.ERROR},
    S.ERROR: {S.QUEUED},
    S.SUCCEEDED: set(),
    S.FAILED: set(),
    S.TIMED_OUT: set(),
    S.CANCELLED: set(),
    S.REJECTED: set(),
    S.SKIPPED: set(),
}
INITIAL = {S.BLOCKED, S.QUEUED}


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(JobState)


def test_documented_transitions_are_in_the_table() -> None:
    for state, successors in DOCUMENTED.items():
        assert successors <= TRANSITIONS[state], state


def test_queued_to_error_allowed_for_broker_failure_at_submit() -> None:
    # Pool.submit records a job it could not publish as error/broker_unavailable.
    assert S.ERROR in TRANSITIONS[S.QUEUED]


@pytest.mark.parametrize("state", sorted(set(JobState) - INITIAL, key=str))
def test_every_state_reachable_from_a_documented_predecessor(state: JobState) -> None:
    documented_sources = {s for s, nxt in DOCUMENTED.items() if state in nxt}
    assert documented_sources
    assert documented_sources <= sources_of(state)


def test_every_state_reachable_from_an_initial_state() -> None:
    seen, todo = set(INITIAL), list(INITIAL)
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(JobState)


def test_final_states() -> None:
    assert FINAL_STATES == {
        S.SUCCEEDED,
        S.FAILED,
        S.TIMED_OUT,
        S.CANCELLED,
        S.ERROR,
        S.REJECTED,
        S.SKIPPED,
    }
    for state in FINAL_STATES:
        assert state.is_final
        if state is S.ERROR:
            assert TRANSITIONS[state] == {S.QUEUED, S.CANCELLED}
        else:
            assert TRANSITIONS[state] == frozenset()
    for state in set(JobState) - FINAL_STATES:
        assert not state.is_final
        assert TRANSITIONS[state]


def test_no_state_goes_back_to_blocked_or_to_itself() -> None:
    assert sources_of(S.BLOCKED) == frozenset()
    for state, successors in TRANSITIONS.items():
        assert state not in successors


def test_sources_of() -> None:
    assert sources_of(S.RUNNING) == {S.QUEUED}
    assert sources_of(S.QUEUED) == {S.BLOCKED, S.ERROR}
    assert sources_of(S.CANCELLED) == {S.BLOCKED, S.QUEUED, S.RUNNING, S.ERROR}
    assert sources_of(S.ERROR) == {S.QUEUED, S.RUNNING}
    assert sources_of(S.SKIPPED) == {S.BLOCKED}
    assert sources_of(S.REJECTED) == {S.QUEUED}
    for final in (S.SUCCEEDED, S.TIMED_OUT):
        assert sources_of(final) == {S.RUNNING}
    # A job whose matrix, computed at run time, is not a matrix fails without running.
    assert sources_of(S.FAILED) == {S.RUNNING, S.BLOCKED}
    for target in JobState:
        assert sources_of(target) == {s for s in JobState if target in TRANSITIONS[s]}


def test_state_str_is_its_value() -> None:
    assert str(S.TIMED_OUT) == "timed_out"
    assert S("running") is S.RUNNING


# -- credentials and github.repository ----------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pw@github.com/org/repo.git",
        "https://ghp_token@github.com/org/repo.git",
        "http://ci:x@git.internal/org/repo",
        "git://u:p@git.internal/app.git",
        "ssh://git:pw@github.com/org/repo.git",
    ],
)
def test_credentials_in_urls_are_refused(url: str) -> None:
    err = input_error(repo=url)
    assert err.field == "repo" and "git_credentials" in str(err)
    assert "pw" not in str(err) and "token" not in str(err).replace("token@", "")


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://github.com/org/repo.git", "org/repo"),
        ("git@github.com:org/repo.git", "org/repo"),
        ("ssh://git@host:2222/group/sub/app.git", "group/sub/app"),
        ("git://127.0.0.1:9418/app.git", "app"),
    ],
)
def test_repository_name_is_the_path(url: str, name: str) -> None:
    assert repository_name(url) == name
    assert github_repository(url) == name


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/org/$(id).git",
        "git@github.com:org/`id`.git",
        "https://github.com/org/a;b",
        "https://github.com/org/..",
        "https://github.com/",
    ],
)
def test_repository_paths_with_other_characters_are_refused(url: str) -> None:
    err = input_error(repo=url)
    assert err.field == "repo" and "github.repository" in str(err)
    assert github_repository(url) == ""
