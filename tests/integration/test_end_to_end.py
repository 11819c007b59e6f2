"""submit -> per-capability queue -> worker -> clean checkout -> Docker -> result, on real
redis-server, Celery workers, git daemon and dockerd."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ci_pool.broker.app import send_run_job
from ci_pool.core.specs import JobState
from tests.conftest import (
    GitServer,
    Harness,
    Worker,
    containers_left,
    workspaces_left,
)

pytestmark = pytest.mark.integration


def submit(h: Harness, git: GitServer, *args: str) -> str:
    res = h.cli("submit", "--repo", git.url(), "--ref", "main", *args)
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip()
    assert len(job_id) == 16, res.stdout
    return job_id


def show(h: Harness, job_id: str) -> dict[str, Any]:
    res = h.cli("show", job_id, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_success_runs_exact_commit_in_clean_container(
    harness: Harness, git_server: GitServer, linux_worker: Worker, docker_client: Any
) -> None:
    job_id = submit(
        harness,
        git_server,
        "--capability",
        "linux",
        "--run",
        "./build.sh",
        "--run",
        "echo second step; test ! -e /ci-pool-was-here",
        "--env",
        "GREETING=hi there",
    )
    waited = harness.cli("wait", job_id, "--timeout", "90")
    assert waited.returncode == 0, waited.stderr
    log = harness.cli("logs", job_id).stdout
    sha = git_server.shas["app.git"]
    assert f"building {job_id} at {sha}" in log
    assert "1.2.3" in log.splitlines()
    assert "second step" in log.splitlines()
    job = show(harness, job_id)
    assert job["state"] == "succeeded"
    assert job["exit_code"] == 0
    assert job["commit_sha"] == sha
    assert job["runner_id"] == linux_worker.runner_id
    assert job["queued_at"] <= job["started_at"] <= job["finished_at"]
    assert job["evidence"]["mode"] == "docker"
    assert job["evidence"]["image"] == "ci-pool-test/busybox:latest"
    assert [(e["from"], e["to"]) for e in job["events"]] == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "succeeded"),
    ]
    # The container is gone and so is the workspace.
    assert containers_left(docker_client, job_id) == []
    assert not workspaces_left(harness.root / "home" / "workspaces", job_id)


def test_failure_exit_code_and_log_lines_come_back_exactly(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    job_id = submit(
        harness,
        git_server,
        "--capability",
        "linux",
        "--run",
        "echo to-stdout; echo to-stderr >&2; printf 'no newline'; exit 7",
    )
    waited = harness.cli("wait", job_id, "--timeout", "90")
    assert waited.returncode == 7
    assert "failed" in waited.stderr
    lines = harness.cli("logs", job_id).stdout.splitlines()
    assert "to-stdout" in lines
    assert "to-stderr" in lines
    assert any(line.startswith("no newline") for line in lines)
    job = show(harness, job_id)
    assert (job["state"], job["exit_code"], job["attempt"]) == ("failed", 7, 1)


def test_network_is_off_in_the_job_container(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    job_id = submit(
        harness,
        git_server,
        "--capability",
        "linux",
        "--run",
        "ip -o link | cut -d: -f2 | tr -d ' ' | sort | tr '\\n' ,",
    )
    assert harness.cli("wait", job_id, "--timeout", "90").returncode == 0
    assert "lo," in harness.cli("logs", job_id).stdout.splitlines()


def test_routing_each_capability_runs_only_on_its_own_worker(
    harness: Harness, git_server: GitServer, linux_worker: Worker, android_worker: Worker
) -> None:
    ids = {
        cap: [
            submit(
                harness, git_server, "--capability", cap, "--run", "echo cap=$CI_POOL_CAPABILITY"
            )
            for _ in range(3)
        ]
        for cap in ("linux", "android")
    }
    pool = harness.pool()
    for cap, worker in (("linux", linux_worker), ("android", android_worker)):
        for job_id in ids[cap]:
            job = pool.wait(job_id, timeout=90)
            assert job.state == "succeeded", job.reason
            assert job.runner_id == worker.runner_id
            assert f"cap={cap}" in pool.store.read_log(job_id)


def test_label_routes_to_the_capability(
    harness: Harness, git_server: GitServer, android_worker: Worker
) -> None:
    job_id = submit(harness, git_server, "--label", "android", "--run", "true")
    job = harness.pool().wait(job_id, timeout=90)
    assert (job.capability, job.state, job.runner_id) == (
        "android",
        "succeeded",
        android_worker.runner_id,
    )


def test_duplicate_delivery_runs_once(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    pool = harness.pool()
    job_id = submit(harness, git_server, "--capability", "linux", "--run", "sleep 1; echo ran")
    # The same message again, while the first is in flight (the worker has two slots).
    send_run_job(pool.celery, pool.settings.capabilities["linux"], job_id)
    job = pool.wait(job_id, timeout=90)
    assert job.state == "succeeded"
    nothing = f"job {job_id}: nothing to claim"
    linux_worker.wait_log(nothing)  # the duplicate reached the worker and found nothing
    events = pool.store.events(job_id)
    assert [e.to_state for e in events] == ["queued", "running", "succeeded"]
    assert pool.get(job_id).attempt == 1
    assert pool.store.read_log(job_id).splitlines().count("ran") == 1
    # A late duplicate (after the job ended) changes nothing either.
    send_run_job(pool.celery, pool.settings.capabilities["linux"], job_id)
    linux_worker.wait_log(nothing, count=2)
    assert [e.to_state for e in pool.store.events(job_id)] == ["queued", "running", "succeeded"]


def test_capability_without_worker_stays_queued_and_show_says_why(
    harness: Harness, git_server: GitServer
) -> None:
    job_id = submit(harness, git_server, "--capability", "deploy", "--run", "true")
    time.sleep(0.5)  # a window in which no worker may take it: it must stay queued
    job = show(harness, job_id)
    assert job["state"] == "queued"
    assert "no worker is serving capability 'deploy'" in job["waiting"]
    human = harness.cli("show", job_id).stdout
    assert "no worker is serving capability 'deploy'" in " ".join(human.split())
    assert harness.cli("cancel", job_id).returncode == 0
    assert show(harness, job_id)["state"] == "cancelled"


@pytest.mark.parametrize(
    ("args", "field", "hint"),
    [
        (["--capability", "gpu"], "capability", "android, audit, deploy, flutter-web, iso, linux"),
        (["--repo", "not a url"], "repo", "URL"),
        (["--repo", "--upload-pack=touch /tmp/pwned"], "repo", "git option"),
        (["--repo", "file:///etc"], "repo", "local repositories are refused"),
        (["--ref", "-oops"], "ref", "must not start with '-'"),
        (["--ref", "no-such-branch"], "ref", "is not a branch, tag or ref"),
        (["--env", "NOEQUALS"], "--env", "KEY=VALUE"),
        (["--timeout", "soon"], "--timeout", "seconds"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error_and_nothing_written(
    harness: Harness, git_server: GitServer, args: list[str], field: str, hint: str
) -> None:
    pool = harness.pool()
    before = len(pool.store.list_jobs(limit=10_000))
    base = {"--repo": git_server.url(), "--ref": "main", "--capability": "linux"}
    extra: list[str] = []
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in base:
            base[flag] = value
        else:
            extra.append(f"{flag}={value}")
    argv = [f"{k}={v}" for k, v in base.items()] + extra
    res = harness.cli("submit", *argv, "--run", "true")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert field in res.stderr and hint in res.stderr
    assert len(pool.store.list_jobs(limit=10_000)) == before


def test_timeout_ends_timed_out_and_leaves_no_container(
    harness: Harness, git_server: GitServer, linux_worker: Worker, docker_client: Any
) -> None:
    job_id = submit(
        harness,
        git_server,
        "--capability",
        "linux",
        "--timeout",
        "2",
        "--run",
        "echo started; sleep 60; echo never",
    )
    res = harness.cli("wait", job_id, "--timeout", "90")
    assert res.returncode == 124
    job = show(harness, job_id)
    assert job["state"] == "timed_out"
    log = harness.cli("logs", job_id).stdout
    assert "started" in log and "never" not in log
    assert containers_left(docker_client, job_id) == []


def test_cancel_running_job_stops_its_container(
    harness: Harness, git_server: GitServer, linux_worker: Worker, docker_client: Any
) -> None:
    pool = harness.pool()
    job_id = submit(
        harness, git_server, "--capability", "linux", "--run", "echo started; sleep 60; echo never"
    )
    deadline = time.monotonic() + 60
    while pool.get(job_id).state != JobState.RUNNING.value and time.monotonic() < deadline:
        time.sleep(0.1)
    assert harness.cli("cancel", job_id).returncode == 0
    res = harness.cli("wait", job_id, "--timeout", "90")
    assert res.returncode == 130
    assert containers_left(docker_client, job_id) == []
    assert "never" not in pool.store.read_log(job_id)
