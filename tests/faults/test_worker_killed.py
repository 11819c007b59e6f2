"""A worker killed with SIGKILL mid-job: the broker redelivers the message to another
worker, which takes over the expired lease; the job ends once, both attempts recorded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci_pool.broker.logstream import follow_stream
from ci_pool.core.specs import JobState
from ci_pool.embedded import RedisServer
from tests.conftest import GitServer, Harness, containers_left, isolated_harness

pytestmark = pytest.mark.faults


@pytest.fixture
def kill_harness(
    session_dir: Path, redis_server: RedisServer, busybox_image: str, git_server: GitServer
) -> Iterator[Harness]:
    """Its own Redis db, so its short visibility timeout cannot touch other tests' messages."""
    h = isolated_harness(
        session_dir / "kill",
        redis_server,
        busybox_image,
        1,
        lease_ttl=2,
        max_job_timeout=20,
        visibility_timeout=21,
        restore_interval=1,
    )
    yield h
    h.stop()


def test_sigkill_mid_job_is_redelivered_and_finishes_once(
    kill_harness: Harness, git_server: GitServer, docker_client: Any
) -> None:
    h = kill_harness
    first = h.start_worker("linux")
    pool = h.pool()
    res = h.cli(
        "submit",
        "--repo",
        git_server.url(),
        "--ref",
        "main",
        "--capability",
        "linux",
        "--run",
        "echo attempt $CI_POOL_ATTEMPT; sleep 3; echo finished",
    )
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip()
    # Kill once the job's first line is live and flushed to the store: a crash may lose at
    # most the last second of log, never what was flushed before it.
    deadline = time.monotonic() + 60
    while "attempt 1" not in [
        f.get("l") for _, f in follow_stream(pool.redis, "linux", job_id, block_ms=100)
    ]:
        assert time.monotonic() < deadline, "job never started"
    while "attempt 1" not in pool.store.read_log(job_id, attempt=1).splitlines():
        assert time.monotonic() < deadline, "the first line never reached the store"
        time.sleep(0.05)
    assert pool.get(job_id).state == JobState.RUNNING.value
    assert pool.get(job_id).runner_id == first.runner_id
    first.kill()  # SIGKILL to the worker and its pool children: no cleanup runs
    second = h.start_worker("linux")

    job = pool.wait(job_id, timeout=120)
    assert job.state == "succeeded", job.reason
    assert job.attempt == 2
    assert job.runner_id == second.runner_id
    transitions = [
        (e.attempt, e.from_state, e.to_state, e.reason) for e in pool.store.events(job_id)
    ]
    assert transitions[:3] == [
        (0, None, "queued", None),
        (1, "queued", "running", None),
        (
            1,
            "running",
            "error",
            f"runner_lost: no heartbeat from {first.runner_id} since the lease ended",
        ),
    ]
    assert [t[2] for t in transitions[3:]] == ["queued", "running", "succeeded"]
    assert [t[0] for t in transitions[4:]] == [2, 2]
    assert pool.store.read_log(job_id, attempt=1).splitlines().count("attempt 1") == 1
    log2 = pool.store.read_log(job_id, attempt=2)
    assert "attempt 2" in log2.splitlines() and "finished" in log2.splitlines()
    assert "taking over" in log2
    # The container of the lost attempt was removed along with the new one.
    assert containers_left(docker_client, job_id) == []
    # Exactly one run reached the end.
    finished_runs = sum(
        pool.store.read_log(job_id, attempt=a).splitlines().count("finished") for a in (1, 2)
    )
    assert finished_runs == 1
