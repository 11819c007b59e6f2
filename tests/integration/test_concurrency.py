"""Concurrency groups end to end on real Redis, Celery workers, Docker and git: a second run
of a group waits for the first, a third supersedes the waiting one, cancel-in-progress stops
the running one (no container left), and a job-level group holds one job at a time.

The linux worker has two slots, so without the group the runs would overlap."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ci_pool.core.specs import FINAL_STATES, JobState
from ci_pool.defaults import CONTAINER_WORKSPACE
from ci_pool.service.pool import Pool
from tests.conftest import GitServer, Harness, Worker, containers_left, containers_of
from tests.integration.test_api import assert_error, auth, client, make_token

pytestmark = pytest.mark.integration
__all__ = ["client"]

#: A step that runs until the test lets it end (``release``), however loaded the machine
#: (two minutes at most, so a failing test does not hold a worker slot for long).
HOLD = "'i=0; until [ -e go ] || [ $i -ge 600 ]; do sleep 0.2; i=$((i+1)); done; echo released'"


def workflow(group: str, run: str, *, cancel: bool = False, job_level: bool = False) -> str:
    conc = (
        f"concurrency:\n  group: {group}\n  cancel-in-progress: {str(cancel).lower()}\n"
        if not job_level
        else ""
    )
    job_conc = f"    concurrency: {group}\n" if job_level else ""
    return (
        f"name: deploy\non: push\n{conc}jobs:\n  ship:\n    runs-on: linux\n{job_conc}"
        f"    steps:\n      - run: {run}\n"
    )


def submit(pool: Pool, git: GitServer, text: str) -> tuple[str, str]:
    """Submit in-process (through the real broker); (pipeline id, its one job's id)."""
    row = pool.submit_pipeline(text, "deploy.yml", git.url(), "main")
    (job,) = pool.store.pipeline_jobs(row.id)
    return row.id, job.id


def wait_job(pool: Pool, job_id: str, states: set[str], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while (job := pool.get(job_id)).state not in states:
        assert time.monotonic() < deadline, f"job {job_id} is {job.state}, never {states}"
        time.sleep(0.1)
    return job


def wait_final(pool: Pool, job_id: str, timeout: float = 120) -> Any:
    return wait_job(pool, job_id, {s.value for s in FINAL_STATES}, timeout)


def release(docker_client: Any, job_id: str) -> None:
    """Let a ``HOLD`` step end: touch the file it waits for inside its container."""
    deadline = time.monotonic() + 60
    while not (found := containers_of(docker_client, job_id)):
        assert time.monotonic() < deadline, f"job {job_id} never got a container"
        time.sleep(0.1)
    code, out = found[0].exec_run(["touch", "go"], workdir=CONTAINER_WORKSPACE)
    assert code == 0, out


def show(h: Harness, pipeline_id: str) -> dict[str, Any]:
    res = h.cli("pipeline", "show", pipeline_id, "--json")
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def test_a_second_run_of_a_group_waits_and_starts_after_the_first(
    harness: Harness, git_server: GitServer, linux_worker: Worker, docker_client: Any
) -> None:
    pool = harness.pool()
    first, a = submit(pool, git_server, workflow("two-${{ github.ref }}", HOLD))
    wait_job(pool, a, {"running"})
    second, b = submit(pool, git_server, workflow("two-${{ github.ref }}", "echo second"))

    explained = harness.cli("explain", b)
    assert explained.returncode == 0, explained.stderr
    assert explained.stdout.strip() == (
        f"job {b} is blocked: waiting for concurrency group two-refs/heads/main "
        f"(held by pipeline {first})"
    )
    view = show(harness, second)
    assert view["state"] == "running"
    assert view["concurrency"] == {"name": "two-refs/heads/main", "cancel_in_progress": False}
    assert view["jobs"][0]["state"] == "blocked"
    table = harness.cli("pipeline", "show", second)
    assert f"pipeline {second} deploy [running] concurrency group two-refs/heads/main" in (
        table.stdout
    )
    assert f"waiting for concurrency group two-refs/heads/main (held by pipeline {first})" in (
        table.stdout
    )
    assert pool.get(b).state == "blocked"

    release(docker_client, a)
    done_a, done_b = wait_final(pool, a), wait_final(pool, b)
    assert (done_a.state, done_b.state) == (JobState.SUCCEEDED, JobState.SUCCEEDED)
    assert done_b.started_at >= done_a.finished_at
    assert "released" in pool.store.read_log(a).splitlines()
    assert "second" in pool.store.read_log(b)
    assert show(harness, second)["state"] == "succeeded"


def test_a_third_run_cancels_the_waiting_one_and_runs_after_the_first(
    harness: Harness, git_server: GitServer, linux_worker: Worker, docker_client: Any
) -> None:
    pool = harness.pool()
    first, a = submit(pool, git_server, workflow("three", HOLD))
    wait_job(pool, a, {"running"})
    second, b = submit(pool, git_server, workflow("three", "echo second"))
    third, c = submit(pool, git_server, workflow("three", "echo third"))

    superseded = pool.get(b)
    assert superseded.state == "cancelled"
    assert superseded.reason == f"superseded by pipeline {third} in concurrency group three"
    assert show(harness, second)["state"] == "cancelled"
    explained = harness.cli("explain", c).stdout.strip()
    assert explained == (
        f"job {c} is blocked: waiting for concurrency group three (held by pipeline {first})"
    )
    assert harness.cli("explain", b).stdout.strip() == (
        f"job {b} ended cancelled: superseded by pipeline {third} in concurrency group three"
    )
    assert pool.get(c).state == "blocked"

    release(docker_client, a)
    done_a, done_c = wait_final(pool, a), wait_final(pool, c)
    assert (done_a.state, done_c.state) == (JobState.SUCCEEDED, JobState.SUCCEEDED)
    assert done_c.started_at >= done_a.finished_at
    assert pool.get(b).started_at is None  # it never ran
    assert show(harness, first)["state"] == show(harness, third)["state"] == "succeeded"


def test_cancel_in_progress_stops_the_running_one_and_leaves_no_container(
    harness: Harness, git_server: GitServer, linux_worker: Worker, docker_client: Any
) -> None:
    pool = harness.pool()
    first, a = submit(pool, git_server, workflow("cip", "sleep 300", cancel=True))
    wait_job(pool, a, {"running"})
    deadline = time.monotonic() + 30
    while not containers_of(docker_client, a):
        assert time.monotonic() < deadline, "the first job's container never appeared"
        time.sleep(0.1)
    second, b = submit(pool, git_server, workflow("cip", "echo newer", cancel=True))

    stopped = wait_final(pool, a, timeout=60)
    assert stopped.state == "cancelled"
    assert stopped.reason == (
        f"cancelled by pipeline {second} in concurrency group cip (cancel-in-progress)"
    )
    assert show(harness, first)["state"] == "cancelled"
    assert containers_left(docker_client, a) == []
    newer = wait_final(pool, b)
    assert newer.state == "succeeded"
    assert newer.started_at >= stopped.finished_at
    assert "newer" in pool.store.read_log(b)


def test_a_job_level_group_holds_one_job_at_a_time(
    harness: Harness, git_server: GitServer, linux_worker: Worker, docker_client: Any
) -> None:
    pool = harness.pool()
    group = "ship-${{ github.ref_name }}"
    first, a = submit(pool, git_server, workflow(group, HOLD, job_level=True))
    wait_job(pool, a, {"running"})
    second, b = submit(pool, git_server, workflow(group, "echo second", job_level=True))

    assert harness.cli("explain", b).stdout.strip() == (
        f"job {b} is blocked: waiting for concurrency group ship-main "
        f"(held by job ship ({a}) of pipeline {first})"
    )
    assert show(harness, second)["jobs"][0]["concurrency"]["name"] == "ship-main"
    assert pool.get(b).state == "blocked"
    release(docker_client, a)
    done_a, done_b = wait_final(pool, a), wait_final(pool, b)
    assert (done_a.state, done_b.state) == (JobState.SUCCEEDED, JobState.SUCCEEDED)
    assert done_b.started_at >= done_a.finished_at


def test_the_api_shows_the_group_and_refuses_one_that_is_empty_for_the_run(
    harness: Harness, git_server: GitServer, linux_worker: Worker, client: TestClient
) -> None:
    token = make_token(harness, "submit", "read")
    pool = harness.pool()
    before = len(pool.store.running_pipelines())
    body = {
        "workflow": workflow("${{ github.head_ref }}", "echo never"),
        "file": "deploy.yml",
        "repo": git_server.url(),
        "ref": "main",
    }
    res = client.post("/v1/pipelines", json=body, headers=auth(token))
    assert_error(res, 422, "invalid_input", "concurrency")
    assert "is empty for this run" in res.json()["error"]["message"]
    assert len(pool.store.running_pipelines()) == before

    body["workflow"] = workflow("api-${{ github.ref_name }}", "echo api")
    res = client.post("/v1/pipelines", json=body, headers=auth(token))
    assert res.status_code == 201, res.text
    view = res.json()
    assert view["concurrency"] == {"name": "api-main", "cancel_in_progress": False}
    assert wait_final(pool, view["jobs"][0]["id"]).state == "succeeded"
