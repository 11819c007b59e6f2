"""Worker lifecycle on real Celery workers: graceful SIGTERM, drain, ephemeral limits,
and scaling a queue's concurrency through Celery's remote control."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from ci_pool.core.specs import JobState
from ci_pool.embedded import RedisServer
from tests.conftest import GitServer, Harness, Worker, isolated_harness

pytestmark = pytest.mark.faults


_DBS = iter(range(4, 11))  # 1-3, 12-15 belong to other modules


@pytest.fixture
def life(
    session_dir: Path, redis_server: RedisServer, busybox_image: str, request: pytest.FixtureRequest
) -> Iterator[Harness]:
    """A fresh pool per test (its own Redis db and store): workers here exit on purpose."""
    h = isolated_harness(
        session_dir / f"life-{request.node.name}", redis_server, busybox_image, next(_DBS)
    )
    yield h
    h.stop()


def exits(worker: Worker, timeout: float = 60) -> int:
    return worker.proc.wait(timeout=timeout)


def test_sigterm_lets_the_running_job_finish(life: Harness, git_server: GitServer) -> None:
    worker = life.start_worker("linux")
    job_id = life.submit(git_server, "sleep 2; echo done")
    life.wait_state(job_id, "running")
    worker.proc.send_signal(signal.SIGTERM)  # the main process: Celery's warm shutdown
    assert exits(worker) == 0
    job = life.pool().get(job_id)
    assert job.state == "succeeded"
    assert "done" in life.pool().store.read_log(job_id).splitlines()
    assert life.pool().runners("linux") == []


def test_drain_finishes_the_running_job_takes_no_new_one_then_exits(
    life: Harness, git_server: GitServer
) -> None:
    worker = life.start_worker("linux")
    # Long enough for the drain command to arrive first, even on a loaded machine.
    first = life.submit(git_server, "sleep 8; echo first")
    life.wait_state(first, "running")
    second = life.submit(git_server, "echo second")
    res = life.cli("drain", worker.runner_id)
    assert res.returncode == 0 and "draining" in res.stdout
    assert exits(worker) == 0
    pool = life.pool()
    assert pool.get(first).state == "succeeded"
    assert pool.get(second).state == JobState.QUEUED.value  # never taken by the drained one
    other = life.start_worker("linux")
    assert pool.wait(second, timeout=60).runner_id == other.runner_id


def test_undrain_before_the_job_ends_keeps_the_worker(life: Harness, git_server: GitServer) -> None:
    worker = life.start_worker("linux")
    first = life.submit(git_server, "sleep 8")
    life.wait_state(first, "running")
    assert life.cli("drain", worker.runner_id).returncode == 0
    assert life.cli("undrain", worker.runner_id).returncode == 0
    assert life.pool().wait(first, timeout=60).state == "succeeded"
    second = life.submit(git_server, "echo again")
    assert life.pool().wait(second, timeout=60).runner_id == worker.runner_id
    assert worker.proc.poll() is None


def test_max_jobs_runs_exactly_n_then_exits(life: Harness, git_server: GitServer) -> None:
    ids = [life.submit(git_server, f"echo {i}") for i in range(3)]
    worker = life.start_worker_args("linux", "--max-jobs", "2")
    assert exits(worker, timeout=90) == 0
    pool = life.pool()
    states = sorted(pool.get(i).state for i in ids)
    assert states == ["queued", "succeeded", "succeeded"]
    assert pool.store.count_claims(worker.runner_id) == 2


def test_idle_timeout_exits_when_nothing_comes(life: Harness) -> None:
    worker = life.start_worker_args("linux", "--idle-timeout", "1")
    started = time.monotonic()
    assert exits(worker, timeout=60) == 0
    assert time.monotonic() - started < 30


def test_scale_changes_how_many_jobs_a_queue_runs_at_once(
    life: Harness, git_server: GitServer
) -> None:
    worker = life.start_worker("linux", concurrency=1)

    def overlapped(n: int) -> bool:
        """Whether the n jobs ran at the same time (each started before any ended)."""
        ids = [life.submit(git_server, "sleep 3") for _ in range(n)]
        jobs = [life.pool().wait(i, timeout=120) for i in ids]
        assert all(j.state == "succeeded" for j in jobs)
        return max(j.started_at for j in jobs) < min(j.finished_at for j in jobs)

    assert not overlapped(2)  # one slot: one after the other
    res = life.cli("scale", "linux", "2")
    assert res.returncode == 0, res.stderr
    assert f"{worker.runner_id}: 1 -> 2 ok" in res.stdout
    deadline = time.monotonic() + 30
    while life.pool().runners("linux")[0].concurrency != 2:
        assert time.monotonic() < deadline, "the registry never showed 2 slots"
        time.sleep(0.2)
    assert overlapped(2)  # two slots: side by side


def test_runners_lists_jobs_and_shows_a_killed_runner_as_lost(
    life: Harness, git_server: GitServer
) -> None:
    worker = life.start_worker("linux")
    job_id = life.submit(git_server, "sleep 3")
    life.wait_state(job_id, "running")
    rows = {r["runner_id"]: r for r in json.loads(life.cli("runners", "--json").stdout)}
    assert rows[worker.runner_id]["state"] == "busy"
    assert rows[worker.runner_id]["jobs"] == [job_id]
    # The runner reports which build of its capability's image it runs.
    extra = rows[worker.runner_id]["extra"]
    image = life.settings().capabilities["linux"].image
    assert extra["image"] == image
    with contextlib.closing(docker.from_env(timeout=30)) as client:
        assert extra["image_id"] == client.images.get(image).id
    worker.kill()
    deadline = time.monotonic() + 30  # runner_ttl is 5 s in the tests
    while True:
        rows = {r["runner_id"]: r for r in json.loads(life.cli("runners", "--json").stdout)}
        if rows[worker.runner_id]["state"] == "lost":
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.5)
    assert "lost" in life.cli("runners").stdout
