"""Warm containers on a real worker and Docker engine: a job runs in a container made
before it was claimed, each container serves one job, the runner replaces what a job took,
``runners`` shows the count, drain and shutdown remove them, orphans are swept."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from ci_pool import defaults
from ci_pool.embedded import RedisServer
from tests.conftest import FAST_TIMINGS, GitServer, Harness
from tests.waiting import until

CAP = "warm"


@pytest.fixture
def warm_pool(
    session_dir: Path, redis_server: RedisServer, busybox_image: str, docker_client: Any
) -> Iterator[Harness]:
    """A pool of its own (store, home, config) whose capability keeps one warm container;
    its queue and capability names are its own, so it shares Redis db 0 harmlessly."""
    root = session_dir / "warm-pool"
    root.mkdir()
    h = Harness(root, redis_server.url, dict(FAST_TIMINGS))
    h.config.write_text(
        f'[capabilities.{CAP}]\nimage = "{busybox_image}"\nqueue = "{CAP}"\nwarm_containers = 1\n'
    )
    yield h
    h.stop()
    for c in docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": defaults.LABEL_WARM}
    ):
        if str(c.labels.get(defaults.LABEL_WARM_SLOT, "")).startswith(str(root)):
            c.remove(force=True)


def idle_warm(client: Any, runner_id: str) -> list[Any]:
    found = client.containers.list(
        ignore_removed=True,
        all=True,
        filters={"label": [defaults.LABEL_WARM, f"{defaults.LABEL_RUNNER}={runner_id}"]},
    )
    return [c for c in found if c.name.startswith(f"ci-pool-warm-{CAP}-")]


def gone(client: Any, container_id: str) -> bool:
    try:
        client.containers.get(container_id)
    except docker.errors.NotFound:
        return True
    return False


def test_warm_containers_serve_one_job_each_and_leave_with_the_runner(
    warm_pool: Harness, git_server: GitServer, docker_client: Any, busybox_image: str
) -> None:
    h = warm_pool
    slots = h.settings().resolved_workspace_root / defaults.WARM_DIR
    # An idle warm container of a runner of this pool that is gone (killed, host lost).
    orphan_slot = slots / "gone-runner" / "abc"
    orphan_slot.mkdir(parents=True)
    orphan = docker_client.containers.run(
        busybox_image,
        ["sleep", "300"],
        detach=True,
        network_mode="none",
        name=f"ci-pool-warm-{CAP}-orphan{time.time_ns()}",
        labels={
            defaults.LABEL_WARM: CAP,
            defaults.LABEL_RUNNER: "gone-runner",
            defaults.LABEL_WARM_SLOT: str(orphan_slot),
        },
    )
    worker = h.start_worker(CAP)
    rid = worker.runner_id
    until(lambda: gone(docker_client, orphan.id), "the orphan warm container was swept")
    assert not orphan_slot.exists()

    def started() -> list[Any]:
        # A warm container is listed from its creation; it is ready once started.
        return [c for c in idle_warm(docker_client, rid) if c.status == "running"]

    (first,) = until(started, "a warm container is ready")
    first.reload()
    assert first.status == "running"
    assert first.labels[defaults.LABEL_WARM] == CAP
    assert first.attrs["HostConfig"]["PidsLimit"] == 4096  # the capability's limits
    assert first.attrs["HostConfig"]["NetworkMode"] == "none"
    assert defaults.CONTAINER_WORKSPACE in {m["Destination"] for m in first.attrs["Mounts"]}

    def warm_count() -> Any:
        res = h.cli("runners", "--json")
        assert res.returncode == 0, res.stderr
        rows = [r for r in json.loads(res.stdout) if r["runner_id"] == rid]
        return rows and rows[0]["extra"].get("warm") == 1

    until(warm_count, "`runners` shows 1 warm container")
    table = h.cli("runners").stdout
    assert "warm" in table

    pool = h.pool()
    one = h.submit(git_server, "echo one > leak.txt; echo one > /leak; cat VERSION", capability=CAP)
    h.wait_state(one, "succeeded")
    job = pool.get(one)
    assert job.evidence is not None and job.evidence.warm_container is True
    assert job.evidence.container_id == first.id
    assert "1.2.3" in pool.store.read_log(one).splitlines()  # the checkout reached the mount

    # The runner replaced the container the job took; the next job gets the new one.
    (second,) = until(
        lambda: [c for c in idle_warm(docker_client, rid) if c.id != first.id],
        "a new warm container replaced the one taken",
    )
    two = h.submit(
        git_server, "test ! -e leak.txt && test ! -e /leak && echo clean", capability=CAP
    )
    h.wait_state(two, "succeeded")
    job = pool.get(two)
    assert job.evidence is not None and job.evidence.warm_container is True
    assert job.evidence.container_id == second.id != first.id
    assert "clean" in pool.store.read_log(two).splitlines()  # nothing of job one is here
    until(lambda: gone(docker_client, first.id), "a used warm container was removed")

    # Drain: the idle warm container goes with the runner.
    until(lambda: idle_warm(docker_client, rid), "a third warm container is ready")
    assert h.cli("drain", rid).returncode == 0
    assert worker.proc.wait(timeout=60) == 0
    assert idle_warm(docker_client, rid) == []

    # Shutdown (SIGTERM): the same.
    worker = h.start_worker(CAP)
    until(lambda: idle_warm(docker_client, worker.runner_id), "a warm container is ready")
    worker.stop()
    assert idle_warm(docker_client, worker.runner_id) == []
    assert not any(p.name for p in (slots / rid).glob("*") if not p.name.startswith("."))
