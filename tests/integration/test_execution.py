"""Job execution: step timeouts, continue-on-error, secrets masked everywhere, artifacts,
infrastructure errors retried and build failures not, on real Docker, git and Redis."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from ci_pool.core.specs import parse_job_spec
from tests.conftest import (
    SECRET_VALUE,
    GitServer,
    Harness,
    Worker,
    containers_left,
    workspaces_left,
)

pytestmark = pytest.mark.integration


def run_job(h: Harness, git: GitServer, **spec: Any) -> Any:
    pool = h.pool()
    job = pool.submit(
        parse_job_spec(
            {"repo": git.url(), "ref": "main", "capability": "linux", **spec},
            allow_local_repos=False,
        )
    )
    return pool.wait(job.id, timeout=120)


def test_step_timeout_ends_timed_out_and_later_steps_do_not_run(
    harness: Harness, git_server: GitServer, linux_worker: Worker, docker_client: Any
) -> None:
    job = run_job(
        harness,
        git_server,
        steps=[{"run": "echo one"}, {"run": "sleep 60", "timeout": 1}, {"run": "echo three"}],
    )
    assert job.state == "timed_out"
    assert job.reason == "step 2 timed out"
    log = harness.pool().store.read_log(job.id).splitlines()
    assert "one" in log and "three" not in log
    assert "##[step] 2 timed out after 1s" in log
    assert containers_left(docker_client, job.id) == []


def test_continue_on_error_steps_do_not_fail_the_job(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    job = run_job(
        harness,
        git_server,
        steps=[
            {"run": "exit 3", "continue_on_error": True},
            {"run": "sleep 60", "timeout": 1, "continue_on_error": True},
            {"run": "echo reached"},
        ],
    )
    assert (job.state, job.exit_code) == ("succeeded", 0)
    log = harness.pool().store.read_log(job.id)
    assert "reached" in log.splitlines()
    assert log.count("continue-on-error") == 2


def test_secret_is_masked_in_plain_base64_and_url_forms_and_never_stored(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    job = run_job(
        harness,
        git_server,
        secrets=["API_TOKEN"],
        steps=[
            {
                "run": (
                    'echo "plain=$API_TOKEN"; printf %s "$API_TOKEN" | base64; '
                    "url=$(printf %s \"$API_TOKEN\" | sed 's|/|%2F|g; s|+|%2B|g'); "
                    'echo "url=$url"; '
                    'printf %s "$API_TOKEN" | cut -c1-8; printf %s "$API_TOKEN" | cut -c9-; echo; '
                    'test -n "$API_TOKEN"'
                )
            }
        ],
    )
    assert job.state == "succeeded", job.reason
    log = harness.pool().store.read_log(job.id)
    assert "plain=***" in log and "url=***" in log
    forms = [
        SECRET_VALUE,
        base64.b64encode(SECRET_VALUE.encode()).decode(),
        quote(SECRET_VALUE, safe=""),
    ]
    for form in forms:
        assert form not in log
    # Nothing secret in the store file (rows, events, evidence) or the job's JSON.
    db = harness.settings().resolved_store_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    shown = harness.cli("show", job.id, "--json").stdout
    for form in forms:
        assert form not in dump
        assert form not in shown
    assert json.loads(shown)["state"] == "succeeded"


def test_secrets_of_another_capability_are_refused_at_submit(
    harness: Harness, git_server: GitServer
) -> None:
    res = harness.cli(
        "submit",
        "--repo",
        git_server.url(),
        "--ref",
        "main",
        "--capability",
        "linux",
        "--secret",
        "DEPLOY_KEY",
        "--run",
        "true",
    )
    assert res.returncode == 2
    assert "capability 'linux' has no secret(s) DEPLOY_KEY" in res.stderr
    assert "API_TOKEN" in res.stderr


def test_artifacts_are_collected_with_sha256_and_escapes_refused(
    harness: Harness, git_server: GitServer, linux_worker: Worker, tmp_path: Path
) -> None:
    job = run_job(
        harness,
        git_server,
        artifacts=["dist/**", "report.txt", "escape"],
        steps=[
            {
                "run": (
                    "mkdir -p dist/sub && echo app > dist/app.bin && echo deep > dist/sub/x.txt && "
                    "echo ok > report.txt && ln -s /etc/passwd escape && ln -s /etc dist/etc"
                )
            }
        ],
    )
    assert job.state == "succeeded", job.reason
    pool = harness.pool()
    index = {a.path: a for a in pool.store.artifacts(job.id)}
    assert set(index) == {"dist/app.bin", "dist/sub/x.txt", "report.txt"}
    assert index["dist/app.bin"].sha256 == hashlib.sha256(b"app\n").hexdigest()
    assert index["dist/app.bin"].size == 4
    log = pool.store.read_log(job.id)
    assert "escape: is a symbolic link, not a regular file; not collected" in log
    assert "dist/etc: is a symbolic link, not a regular file; not collected" in log
    res = harness.cli("artifacts", job.id, "--dest", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "dist" / "sub" / "x.txt").read_text() == "deep\n"
    shown = json.loads(harness.cli("show", job.id, "--json").stdout)
    assert {a["path"] for a in shown["artifacts"]} == set(index)


def test_artifact_glob_climbing_out_is_refused_at_submit(
    harness: Harness, git_server: GitServer
) -> None:
    res = harness.cli(
        "submit",
        "--repo",
        git_server.url(),
        "--ref",
        "main",
        "--capability",
        "linux",
        "--artifact",
        "../secrets",
        "--run",
        "true",
    )
    assert res.returncode == 2
    assert "artifacts" in res.stderr and "'..'" in res.stderr


def test_checkout_failure_is_an_error_and_retried_build_failure_is_not(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    missing = "0123456789abcdef0123456789abcdef01234567"
    job = run_job(harness, git_server, ref=missing, steps=[{"run": "true"}])
    assert job.state == "error"
    assert job.reason.startswith("checkout_failed: git fetch failed")
    assert job.attempt == job.max_attempts == 3
    events = [(e.from_state, e.to_state) for e in harness.pool().store.events(job.id)]
    assert events.count(("running", "error")) == 3
    assert events.count(("error", "queued")) == 2
    # Each attempt kept its own log.
    for attempt in (1, 2, 3):
        assert f"attempt {attempt}/3" in harness.pool().store.read_log(job.id, attempt)

    failed = run_job(harness, git_server, steps=[{"run": "exit 1"}])
    assert (failed.state, failed.attempt) == ("failed", 1)


def test_root_owned_unreadable_files_are_removed_with_the_workspace(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    job = run_job(
        harness,
        git_server,
        steps=[{"run": "mkdir -p build/deep && touch build/deep/f && chmod -R 000 build && id -u"}],
    )
    assert job.state == "succeeded"
    assert "0" in harness.pool().store.read_log(job.id).splitlines()  # made as root
    assert not workspaces_left(harness.root / "home" / "workspaces", job.id)
