"""The executor contract, run against both executors: the same jobs on a Docker capability
(``linux``) and a host-mode one (``iso``) must behave the same way to their users: steps in
order, the first failure ends the job with its exit code, the job's environment, per-step
timeouts, cancel, and nothing left behind (containers, processes, workspaces)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ci_pool.core.specs import JobState, parse_job_spec
from tests.conftest import (
    GitServer,
    Harness,
    Worker,
    containers_left,
    workspaces_left,
)

pytestmark = pytest.mark.integration

CAPABILITIES = ["linux", "iso"]


@pytest.fixture(scope="module")
def iso_worker(harness: Harness) -> Iterator[Worker]:
    worker = harness.start_worker("iso", concurrency=2)
    yield worker
    worker.stop()


@pytest.fixture(params=CAPABILITIES)
def capability(request: pytest.FixtureRequest, linux_worker: Worker, iso_worker: Worker) -> str:
    return str(request.param)


def submit(h: Harness, git: GitServer, capability: str, **spec: Any) -> str:
    job = h.pool().submit(
        parse_job_spec(
            {"repo": git.url(), "ref": "main", "capability": capability, **spec},
            allow_local_repos=False,
        )
    )
    return job.id


def run(h: Harness, git: GitServer, capability: str, **spec: Any) -> Any:
    return h.pool().wait(submit(h, git, capability, **spec), timeout=120)


def log_lines(h: Harness, job_id: str) -> list[str]:
    return h.pool().store.read_log(job_id).splitlines()


def assert_nothing_left(h: Harness, job: Any, docker_client: Any, marker: str = "") -> None:
    workspaces = h.settings().resolved_workspace_root
    assert not workspaces_left(workspaces, job.id), "the job's workspace outlived it"
    assert containers_left(docker_client, job.id) == []
    if marker:
        left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
        assert left.stdout == "", f"processes of the job outlived it: {left.stdout}"


def test_steps_run_in_order_on_the_checkout_and_the_first_failure_ends_the_job(
    harness: Harness, git_server: GitServer, capability: str, docker_client: Any
) -> None:
    job = run(
        harness,
        git_server,
        capability,
        steps=[
            {"run": "cat VERSION; echo first"},
            {"run": "echo second; exit 5"},
            {"run": "echo third"},
        ],
    )
    assert (job.state, job.exit_code) == ("failed", 5)
    lines = log_lines(harness, job.id)
    assert lines.index("first") < lines.index("second")
    assert "1.2.3" in lines and "third" not in lines
    assert job.evidence.mode == ("docker" if capability == "linux" else "host")
    assert_nothing_left(harness, job, docker_client)


def test_the_job_sees_its_environment(
    harness: Harness, git_server: GitServer, capability: str
) -> None:
    job = run(
        harness,
        git_server,
        capability,
        env={"GREETING": "hello contract"},
        steps=[
            {
                "run": 'echo "ci=$CI id=$CI_POOL_JOB_ID cap=$CI_POOL_CAPABILITY"; '
                'echo "greeting=$GREETING"; echo "sha=$CI_POOL_COMMIT_SHA"'
            }
        ],
    )
    assert job.state == "succeeded", job.reason
    lines = log_lines(harness, job.id)
    assert f"ci=true id={job.id} cap={capability}" in lines
    assert "greeting=hello contract" in lines
    assert f"sha={git_server.shas['app.git']}" in lines


def test_a_step_timeout_ends_the_job_timed_out(
    harness: Harness, git_server: GitServer, capability: str, docker_client: Any
) -> None:
    marker = f"ci-pool-contract-{uuid.uuid4().hex}"
    job = run(
        harness,
        git_server,
        capability,
        steps=[
            {"run": "echo one"},
            {"run": f"sh -c 'sleep 60; true' {marker}", "timeout": 1},
            {"run": "echo three"},
        ],
    )
    assert (job.state, job.reason) == ("timed_out", "step 2 timed out")
    lines = log_lines(harness, job.id)
    assert "one" in lines and "three" not in lines
    assert_nothing_left(harness, job, docker_client, marker)


def test_cancel_stops_a_running_job_and_leaves_nothing_behind(
    harness: Harness, git_server: GitServer, capability: str, docker_client: Any
) -> None:
    marker = f"ci-pool-contract-{uuid.uuid4().hex}"
    job_id = submit(
        harness,
        git_server,
        capability,
        steps=[{"run": f"echo started; sh -c 'sleep 120; true' {marker}"}],
    )
    pool = harness.pool()
    deadline = time.monotonic() + 90
    while "started" not in pool.store.read_log(job_id).splitlines():
        assert time.monotonic() < deadline, "the step never started"
        assert pool.get(job_id).state in ("queued", "running")
        time.sleep(0.1)
    pool.cancel(job_id)
    job = pool.wait(job_id, timeout=60)
    assert job.state == JobState.CANCELLED.value
    assert_nothing_left(harness, job, docker_client, marker)
