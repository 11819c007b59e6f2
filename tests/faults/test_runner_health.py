"""A runner stays healthy or says why: it takes no job while its Docker engine or its
capability image is missing, shows ``unhealthy: <reason>``, and resumes by itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci_pool.broker.logstream import follow_stream
from ci_pool.embedded import RedisServer, build_busybox_image
from tests.conftest import (
    FAST_TIMINGS,
    TEST_IMAGE,
    GitServer,
    Harness,
    need,
    submit_with,
    write_config,
)

pytestmark = pytest.mark.timeout(300)


def _runner_row(h: Harness, runner_id: str) -> dict[str, Any]:
    res = h.cli("runners", "--json")
    assert res.returncode == 0, res.stderr
    rows = [r for r in json.loads(res.stdout) if r["runner_id"] == runner_id]
    assert rows, res.stdout
    return rows[0]


def _wait_runner(h: Harness, runner_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (row := _runner_row(h, runner_id))["state"] != state:
        assert time.monotonic() < deadline, f"runner never became {state}: {row}"
        time.sleep(0.2)
    return row


@pytest.fixture
def own_pool(session_dir: Path, request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A pool with its own redis-server, so no other test's worker takes its jobs."""
    root = session_dir / f"health-{request.node.name}"
    redis = RedisServer.start(root / "redis")
    h = Harness(root, redis.url, dict(FAST_TIMINGS))
    yield h
    h.stop()
    redis.stop()


def test_missing_image_keeps_jobs_queued_until_it_is_built(
    own_pool: Harness, git_server: GitServer, docker_client: Any, busybox_image: str
) -> None:
    h = own_pool
    repo = f"ci-pool-test/missing-{uuid.uuid4().hex[:8]}"
    write_config(h.config, f"{repo}:latest")
    worker = h.start_worker("linux")
    row = _wait_runner(h, worker.runner_id, "unhealthy")
    assert row["unhealthy"] == (f"lacks image {repo}:latest: run `ci-pool images build linux`")
    shown = h.cli("runners")
    assert "unhealthy: lacks image" in shown.stdout, shown.stdout

    job_id = submit_with(h.cli, git_server, "echo built-at-last")
    time.sleep(3)  # several health checks: the runner must not take it meanwhile
    job = h.pool().get(job_id)
    assert (job.state, job.attempt) == ("queued", 0)
    why = h.cli("explain", job_id)
    assert f"runner {worker.runner_id} lacks image {repo}:latest" in why.stdout, why.stdout
    assert "ci-pool images build linux" in why.stdout

    docker_client.images.get(busybox_image).tag(repo, "latest")
    try:
        _wait_runner(h, worker.runner_id, "online")
        job = h.pool().wait(job_id, timeout=60)
        assert (job.state, job.attempt) == ("succeeded", 1), job.reason
        assert "built-at-last" in h.pool().store.read_log(job_id).splitlines()
    finally:
        docker_client.images.remove(f"{repo}:latest", noprune=True)


class SecondEngine:
    """A dockerd of the test's own (own socket, data and exec roots) that can be killed."""

    def __init__(self) -> None:
        # Short: the engine's unix sockets live under it.
        self.root = Path(tempfile.mkdtemp(prefix="cpd", dir="/tmp"))
        self.socket = self.root / "d.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        with (self.root / "dockerd.log").open("ab") as log:
            self.proc = self._spawn(log)
        deadline = time.monotonic() + 60
        while (client := self.client_or_none()) is None:
            assert self.proc.poll() is None, (self.root / "dockerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the second dockerd never answered"
            time.sleep(0.2)
        client.close()

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                "dockerd",
                "--host",
                self.url,
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "x"),
                "--pidfile",
                str(self.root / "d.pid"),
                "--bridge=none",
                "--iptables=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def client_or_none(self) -> Any:
        import docker

        if not self.socket.exists():
            return None
        try:
            client = docker.DockerClient(base_url=self.url, version="1.41", timeout=30)
        except Exception:
            return None
        try:
            client.ping()
        except Exception:
            client.close()
            return None
        return client

    def kill(self) -> None:
        """SIGKILL the engine (and its containerd): what a crashed engine looks like."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        client = self.client_or_none()
        if client is not None:
            for c in client.containers.list(all=True):
                c.remove(force=True)
            client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        subprocess.run(["pkill", "-KILL", "-f", str(self.root)], check=False)
        subprocess.run(["umount", "-R", "-l", str(self.root)], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def engine(docker_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[SecondEngine]:
    need(shutil.which("dockerd") is not None, "dockerd is not installed")
    second = SecondEngine()
    try:
        second.start()
        client = second.client_or_none()
        build_busybox_image(client, TEST_IMAGE, shutil.which("busybox") or "/bin/busybox")
        client.close()
        monkeypatch.setenv("DOCKER_HOST", second.url)  # the workers started below use it
        yield second
    finally:
        second.stop()


def _containers(engine: SecondEngine, job_id: str) -> list[Any]:
    client = engine.client_or_none()
    assert client is not None
    try:
        return list(client.containers.list(all=True, filters={"label": f"ci-pool.job={job_id}"}))
    finally:
        client.close()


# docker-py may keep a pooled socket to the engine that was killed under it.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_engine_dying_mid_job_errors_at_once_and_the_runner_waits_for_it(
    own_pool: Harness, git_server: GitServer, engine: SecondEngine
) -> None:
    h = own_pool
    write_config(h.config, TEST_IMAGE)
    worker = h.start_worker("linux")
    _wait_runner(h, worker.runner_id, "online")
    pool = h.pool()
    job_id = submit_with(
        h.cli,
        git_server,
        'echo "attempt $CI_POOL_ATTEMPT"; if [ "$CI_POOL_ATTEMPT" = 1 ]; then sleep 300; fi',
    )
    deadline = time.monotonic() + 60
    while "attempt 1" not in [
        f.get("l") for _, f in follow_stream(pool.redis, "linux", job_id, block_ms=100)
    ]:
        assert time.monotonic() < deadline, "job never started"
    assert len(_containers(engine, job_id)) == 1

    engine.kill()
    killed = time.monotonic()
    # The worker ends the attempt itself, long before any lease would expire and no
    # reaper runs here: the job is back in the queue for a second attempt.
    deadline = killed + 30
    while not any(e.to_state == "error" for e in pool.store.events(job_id)):
        assert time.monotonic() < deadline, "the attempt never ended when the engine died"
        time.sleep(0.1)
    error = next(e for e in pool.store.events(job_id) if e.to_state == "error")
    assert error.attempt == 1 and "docker" in (error.reason or "").lower(), error.reason
    row = _wait_runner(h, worker.runner_id, "unhealthy")
    assert row["unhealthy"] == "cannot reach its Docker engine: start dockerd (or set DOCKER_HOST)"
    assert worker.proc.poll() is None, "the task's cleanup must never take the worker down"
    time.sleep(2)  # the retry backoff has passed: an unhealthy runner takes nothing
    job = pool.get(job_id)
    assert (job.state, job.attempt) == ("queued", 1)
    why = h.cli("explain", job_id)
    assert f"runner {worker.runner_id} cannot reach its Docker engine" in why.stdout, why.stdout

    engine.start()
    _wait_runner(h, worker.runner_id, "online")
    job = pool.wait(job_id, timeout=60)
    assert (job.state, job.attempt) == ("succeeded", 2), job.reason
    assert "attempt 2" in pool.store.read_log(job_id, attempt=2).splitlines()
    # The container the dead engine kept is swept once the engine is back.
    deadline = time.monotonic() + 30
    while _containers(engine, job_id):
        assert time.monotonic() < deadline, "the lost attempt's container was never swept"
        time.sleep(0.2)
    worker.wait_log(f"removed the container of ended attempt 1 of job {job_id}")
