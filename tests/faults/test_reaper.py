"""The reaper, against real failures: a worker SIGKILLed with no broker redelivery in
sight, and a broker that lost its queued messages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from ci_pool.core.specs import JobState
from ci_pool.embedded import RedisServer
from tests.conftest import GitServer, Harness, containers_left, containers_of, isolated_harness

pytestmark = pytest.mark.faults


@pytest.fixture
def lost_harness(
    session_dir: Path, redis_server: RedisServer, busybox_image: str
) -> Iterator[Harness]:
    # The default visibility timeout (hours): only the reaper can save the job.
    h = isolated_harness(
        session_dir / "reaper-lost", redis_server, busybox_image, 2, lease_ttl=2, resend_after=0
    )
    yield h
    h.stop()


@pytest.fixture
def flush_harness(
    session_dir: Path, redis_server: RedisServer, busybox_image: str
) -> Iterator[Harness]:
    h = isolated_harness(
        session_dir / "reaper-flush", redis_server, busybox_image, 3, resend_after=0
    )
    yield h
    h.stop()


def test_reaper_requeues_the_job_of_a_killed_worker(
    lost_harness: Harness, git_server: GitServer, docker_client: Any
) -> None:
    h = lost_harness
    first = h.start_worker("linux")
    pool = h.pool()
    job_id = h.submit(git_server, "echo attempt $CI_POOL_ATTEMPT; sleep 3; echo finished")
    h.wait_state(job_id, JobState.RUNNING.value)
    deadline = time.monotonic() + 30
    while not containers_of(docker_client, job_id):  # the step is under way in its container
        assert time.monotonic() < deadline, "the job's container never appeared"
        time.sleep(0.05)
    first.kill()
    killed_at = time.monotonic()
    assert len(containers_of(docker_client, job_id)) == 1  # orphaned, still running
    second = h.start_worker("linux")
    lost_after = None
    while time.monotonic() - killed_at < 60:
        res = h.cli("beat", "--once")
        assert res.returncode == 0, res.stderr
        if job_id in res.stderr:
            lost_after = time.monotonic() - killed_at
            break
        time.sleep(0.5)
    assert lost_after is not None, "the reaper never found the lost job"
    assert lost_after < 2 + 10  # lease TTL plus generous sweep slack
    job = pool.wait(job_id, timeout=120)
    assert (job.state, job.attempt, job.runner_id) == ("succeeded", 2, second.runner_id)
    events = [(e.from_state, e.to_state, e.runner_id) for e in pool.store.events(job_id)]
    assert ("running", "error", "reaper") in events
    assert ("error", "queued", "reaper") in events
    lost = next(e for e in pool.store.events(job_id) if e.to_state == "error")
    assert lost.reason.startswith("runner_lost")
    assert containers_left(docker_client, job_id) == []
    assert "finished" in pool.store.read_log(job_id, attempt=2).splitlines()


def test_queued_jobs_survive_a_flushed_broker(
    flush_harness: Harness, git_server: GitServer
) -> None:
    h = flush_harness
    pool = h.pool()
    ids = [h.submit(git_server, f"echo job {i}") for i in range(3)]
    redis.Redis.from_url(h.redis_url).flushdb()  # the broker forgets every message
    res = h.cli("beat", "--once")
    assert res.returncode == 0
    assert all(job_id in res.stderr for job_id in ids), res.stderr
    # A second sweep finds the messages in place and sends nothing more.
    again = h.cli("beat", "--once")
    assert "0 re-sent" in again.stderr, again.stderr
    h.start_worker("linux")
    for job_id in ids:
        job = pool.wait(job_id, timeout=120)
        assert (job.state, job.attempt) == ("succeeded", 1)
        assert [e.to_state for e in pool.store.events(job_id)] == ["queued", "running", "succeeded"]
