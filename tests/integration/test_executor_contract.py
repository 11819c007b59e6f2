"""The executor contract, run against every executor: the same jobs on a Docker capability
(``linux`` on dockerd), the same capability on Podman (``container_runtime = "podman"``, a
pool of its own) and a host-mode one (``iso``) must behave the same way to their users:
steps in order, the first failure ends the job with its exit code, the job's environment,
per-step timeouts, cancel, and nothing left behind (containers, processes, workspaces)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ci_pool.core.specs import JobState, parse_job_spec
from tests.conftest import (
    TEST_IMAGE,
    GitServer,
    Harness,
    Worker,
    containers_left,
    containers_of,
    isolated_harness,
    workspaces_left,
)

pytestmark = pytest.mark.integration

#: The Podman pool's Redis db (module-scoped: no other pool uses it meanwhile).
PODMAN_DB = 4


@dataclass
class Lane:
    """One executor under test: its pool, the capability its jobs ask for, the engine
    client that sees its containers, and the mode its evidence records."""

    harness: Harness
    capability: str
    engine: Any
    mode: str
    #: The engine the evidence names (None in host mode).
    runtime: str | None


@pytest.fixture(scope="module")
def iso_worker(harness: Harness) -> Iterator[Worker]:
    worker = harness.start_worker("iso", concurrency=2)
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def podman_lane(session_dir: Path, redis_server: Any, podman_socket: str) -> Iterator[Lane]:
    """A pool whose linux runner talks to Podman's API service instead of dockerd."""
    import docker

    h = isolated_harness(
        session_dir / "podman-pool", redis_server, TEST_IMAGE, PODMAN_DB,
        container_runtime="podman", podman_host=podman_socket,
    )  # fmt: skip
    client = docker.DockerClient(base_url=podman_socket, timeout=60)
    try:
        h.start_worker("linux", concurrency=2)
        yield Lane(h, "linux", client, "docker", "podman")
    finally:
        h.stop()
        client.close()


@pytest.fixture(params=["docker", "podman", "host"])
def lane(request: pytest.FixtureRequest, harness: Harness, docker_client: Any) -> Lane:
    if request.param == "podman":
        return request.getfixturevalue("podman_lane")  # type: ignore[no-any-return]
    if request.param == "host":
        request.getfixturevalue("iso_worker")
        return Lane(harness, "iso", docker_client, "host", None)
    request.getfixturevalue("linux_worker")
    return Lane(harness, "linux", docker_client, "docker", "docker")


def submit(lane: Lane, git: GitServer, **spec: Any) -> str:
    job = lane.harness.pool().submit(
        parse_job_spec(
            {"repo": git.url(), "ref": "main", "capability": lane.capability, **spec},
            allow_local_repos=False,
        )
    )
    return job.id


def run(lane: Lane, git: GitServer, **spec: Any) -> Any:
    return lane.harness.pool().wait(submit(lane, git, **spec), timeout=120)


def log_lines(lane: Lane, job_id: str) -> list[str]:
    return lane.harness.pool().store.read_log(job_id).splitlines()


def assert_nothing_left(lane: Lane, job: Any, marker: str = "") -> None:
    workspaces = lane.harness.settings().resolved_workspace_root
    assert not workspaces_left(workspaces, job.id), "the job's workspace outlived it"
    assert containers_left(lane.engine, job.id) == []
    if marker:
        left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
        assert left.stdout == "", f"processes of the job outlived it: {left.stdout}"


def test_steps_run_in_order_on_the_checkout_and_the_first_failure_ends_the_job(
    lane: Lane, git_server: GitServer
) -> None:
    job = run(
        lane,
        git_server,
        steps=[
            {"run": "cat VERSION; echo first"},
            {"run": "echo second; exit 5"},
            {"run": "echo third"},
        ],
    )
    assert (job.state, job.exit_code) == ("failed", 5)
    lines = log_lines(lane, job.id)
    assert lines.index("first") < lines.index("second")
    assert "1.2.3" in lines and "third" not in lines
    assert (job.evidence.mode, job.evidence.engine) == (lane.mode, lane.runtime)
    if lane.runtime:  # the image the job ran is the one on that engine
        assert job.evidence.image_id == lane.engine.images.get(TEST_IMAGE).id
    assert_nothing_left(lane, job)


def test_the_job_sees_its_environment(lane: Lane, git_server: GitServer) -> None:
    job = run(
        lane,
        git_server,
        env={"GREETING": "hello contract"},
        steps=[
            {
                "run": 'echo "ci=$CI id=$CI_POOL_JOB_ID cap=$CI_POOL_CAPABILITY"; '
                'echo "greeting=$GREETING"; echo "sha=$CI_POOL_COMMIT_SHA"'
            }
        ],
    )
    assert job.state == "succeeded", job.reason
    lines = log_lines(lane, job.id)
    assert f"ci=true id={job.id} cap={lane.capability}" in lines
    assert "greeting=hello contract" in lines
    assert f"sha={git_server.shas['app.git']}" in lines


def test_a_background_process_serves_the_later_steps_and_ends_with_the_job(
    lane: Lane, git_server: GitServer
) -> None:
    # As on GitHub: a server started in the background in one step answers the next; the
    # step ends with its shell, and nothing the steps started outlives the job.
    marker = f"ci-pool-contract-{uuid.uuid4().hex}"
    began = time.monotonic()
    job = run(
        lane,
        git_server,
        steps=[
            {
                "run": f"sh -c 'sleep 300; true' {marker} &\n"
                "(sleep 1; echo served > served.txt) &\n"
                "echo started"
            },
            {"run": "sleep 3; cat served.txt"},
        ],
    )
    assert job.state == "succeeded", job.reason
    lines = log_lines(lane, job.id)
    assert lines.index("started") < lines.index("served")
    assert time.monotonic() - began < 90, "a step waited for its background process"
    assert_nothing_left(lane, job, marker)


def test_a_background_process_writing_after_its_step_ended_runs_on(
    lane: Lane, git_server: GitServer, request: pytest.FixtureRequest
) -> None:
    if lane.runtime == "podman":
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="Podman closes an exec's output when its shell exits: a background "
                "process that writes to it afterwards dies of SIGPIPE",
            )
        )
    # More than a pipe holds, written after the step ended: it neither blocks nor dies.
    job = run(
        lane,
        git_server,
        steps=[
            {"run": "(sleep 1; head -c 300000 /dev/zero; echo drained > drained.txt) &"},
            {"run": "sleep 3; cat drained.txt"},
        ],
    )
    assert job.state == "succeeded", job.reason
    assert "drained" in log_lines(lane, job.id)


def test_a_step_timeout_ends_the_job_timed_out(lane: Lane, git_server: GitServer) -> None:
    marker = f"ci-pool-contract-{uuid.uuid4().hex}"
    job = run(
        lane,
        git_server,
        steps=[
            {"run": "echo one"},
            {"run": f"sh -c 'sleep 60; true' {marker}", "timeout": 1},
            {"run": "echo three"},
        ],
    )
    assert (job.state, job.reason) == ("timed_out", "step 2 timed out")
    lines = log_lines(lane, job.id)
    assert "one" in lines and "three" not in lines
    assert_nothing_left(lane, job, marker)


def test_cancel_stops_a_running_job_and_leaves_nothing_behind(
    lane: Lane, git_server: GitServer
) -> None:
    marker = f"ci-pool-contract-{uuid.uuid4().hex}"
    job_id = submit(
        lane,
        git_server,
        steps=[{"run": f"echo started; sh -c 'sleep 120; true' {marker}"}],
    )
    pool = lane.harness.pool()
    deadline = time.monotonic() + 90
    while "started" not in pool.store.read_log(job_id).splitlines():
        assert time.monotonic() < deadline, "the step never started"
        assert pool.get(job_id).state in ("queued", "running")
        time.sleep(0.1)
    if lane.runtime:  # the job's container is on the lane's engine while it runs
        assert containers_of(lane.engine, job_id), f"no container of the job on {lane.runtime}"
    pool.cancel(job_id)
    job = pool.wait(job_id, timeout=60)
    assert job.state == JobState.CANCELLED.value
    assert_nothing_left(lane, job, marker)
