"""What operators watch, on the shared pool: metrics after real jobs, the /metrics endpoint,
and Flower with auth on the pool's Redis, on loopback only."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ci_pool.embedded import RedisServer, free_port
from ci_pool.service.monitoring import FLOWER_AUTH_ENV, render_metrics
from tests.conftest import FAST_TIMINGS, GitServer, Harness, Worker, write_config

pytestmark = pytest.mark.integration

CREDENTIALS = "ops:flower-test-pw"

# The `metrics` and `flower` command functions in a bare typer app, with cli.main's handling of
# CIPoolError.
_RUNNER = """
import sys, typer
from ci_pool.cli import processes
from ci_pool.exceptions import CIPoolError
app = typer.Typer(pretty_exceptions_enable=False)
app.command()(processes.metrics)
app.command()(processes.flower)
try:
    app()
except CIPoolError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def command(*args: str) -> list[str]:
    from ci_pool.cli.main import app

    names = {c.name or getattr(c.callback, "__name__", "") for c in app.registered_commands}
    if {"metrics", "flower"} <= names:
        return [sys.executable, "-m", "ci_pool", *args]
    return [sys.executable, "-c", _RUNNER, *args]


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], family: str, sample: str | None = None, **labels: str) -> float:
    found = [
        s.value
        for s in fams[family].samples
        if s.name == (sample or family) and dict(s.labels) == labels
    ]
    assert len(found) == 1, (family, labels, fams[family].samples)
    return float(found[0])


def live_runners(fams: dict[str, Any], capability: str) -> float:
    return sum(
        value(fams, "ci_pool_runners", capability=capability, state=state)
        for state in ("online", "busy", "draining")
    )


def submit(harness: Harness, git_server: GitServer, capability: str) -> str:
    res = harness.cli(
        "submit",
        "--repo",
        git_server.url(),
        "--ref",
        "main",
        "--capability",
        capability,
        "--run",
        "true",
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def get(url: str, auth: str | None = None, timeout: float = 10) -> tuple[int, str]:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        ) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} before answering:\n{log.read_text()}")
        try:
            get(url, timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {timeout:.0f}s:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tcp_endpoints(pid: int) -> list[tuple[str, str, str]]:
    """(local, remote, state) of every TCP socket the process holds, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[9] in inodes:
                found.append((_address(cols[1]), _address(cols[2]), cols[3]))
    return found


def _address(hex_endpoint: str) -> str:
    host, _, port = hex_endpoint.partition(":")
    raw = bytes.fromhex(host)
    # /proc writes each 32-bit word in host (little-endian) order.
    ordered = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return f"{ipaddress.ip_address(ordered)}:{int(port, 16)}"


def is_loopback(endpoint: str) -> bool:
    ip = ipaddress.ip_address(endpoint.rsplit(":", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_metrics_after_real_jobs(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    done = [submit(harness, git_server, "linux") for _ in range(2)]
    pool = harness.pool()
    for job_id in done:
        assert pool.wait(job_id, timeout=90).state == "succeeded"
    waiting = submit(harness, git_server, "deploy")  # no deploy worker in the shared pool
    try:
        time.sleep(0.2)
        fams = families(render_metrics(pool))
        assert value(fams, "ci_pool_queue_depth", capability="deploy") >= 1
        assert value(fams, "ci_pool_oldest_wait_seconds", capability="deploy") >= 0.2
        assert value(fams, "ci_pool_jobs", state="succeeded") >= 2
        assert value(fams, "ci_pool_jobs", state="queued") >= 1
        assert live_runners(fams, "linux") >= 1
        assert value(fams, "ci_pool_runner_slots", capability="linux") >= 2
        assert live_runners(fams, "deploy") == 0
        assert value(fams, "ci_pool_broker_up") == 1
        for family in ("ci_pool_job_duration_seconds", "ci_pool_dispatch_latency_seconds"):
            assert value(fams, family, f"{family}_count", capability="linux") >= 2
            inf = value(fams, family, f"{family}_bucket", capability="linux", le="+Inf")
            assert inf == value(fams, family, f"{family}_count", capability="linux")

        res = subprocess.run(
            command("metrics"), env=harness.env(), capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0, res.stderr
        printed = families(res.stdout)
        assert value(printed, "ci_pool_queue_depth", capability="deploy") >= 1
        assert live_runners(printed, "linux") >= 1
    finally:
        harness.cli("cancel", waiting)


def test_metrics_serve_answers_on_loopback(
    harness: Harness, linux_worker: Worker, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "metrics.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command("metrics", "--serve", str(port)),
            env=harness.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_http(url, proc, log)
        status, body = get(url)
        assert status == 200
        fams = families(body)
        assert value(fams, "ci_pool_broker_up") == 1
        assert live_runners(fams, "linux") >= 1
        assert get(f"http://127.0.0.1:{port}/other")[0] == 404
        listening = [loc for loc, _, st in tcp_endpoints(proc.pid) if st == "0A"]
        assert listening == [f"127.0.0.1:{port}"]
    finally:
        stop(proc)


def test_flower_refuses_to_start_without_credentials(harness: Harness) -> None:
    env = {k: v for k, v in harness.env().items() if k != FLOWER_AUTH_ENV}
    res = subprocess.run(
        command("flower", "--port", str(free_port())),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert FLOWER_AUTH_ENV in res.stderr and "auth" in res.stderr


@contextmanager
def flower_on(h: Harness, log: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``ci-pool flower`` on the pool ``h`` until the block ends: (port, process)."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command("flower", "--port", str(port)),
            env={**h.env(), FLOWER_AUTH_ENV: CREDENTIALS},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc, log)
        yield port, proc
    finally:
        stop(proc)


@pytest.fixture
def flower(harness: Harness, tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    with flower_on(harness, tmp_path / "flower.log") as running:
        yield running


def test_flower_with_auth_lists_the_linux_worker(
    flower: tuple[int, subprocess.Popen[bytes]], linux_worker: Worker
) -> None:
    port, proc = flower
    base = f"http://127.0.0.1:{port}"
    assert get(base + "/")[0] == 401
    assert get(base + "/api/workers")[0] == 401
    assert get(base + "/", auth="ops:wrong")[0] == 401
    assert get(base + "/", auth=CREDENTIALS)[0] == 200
    # Workers seen through Celery events (heartbeats), name -> alive.
    deadline = time.monotonic() + 60
    while True:
        status, body = get(base + "/api/workers?status=true", auth=CREDENTIALS)
        assert status == 200, body
        # Flower names a worker by its Celery node, "<runner name>@<host>-<hex>".
        seen = json.loads(body)
        if any(
            alive and node.split("@")[0] == linux_worker.runner_id for node, alive in seen.items()
        ):
            break
        assert time.monotonic() < deadline, f"Flower never saw {linux_worker.runner_id}: {body}"
        time.sleep(0.5)
    # Flower listens on loopback only and talks to nothing but loopback (the harness Redis).
    sockets = tcp_endpoints(proc.pid)
    assert [loc for loc, _, st in sockets if st == "0A"] == [f"127.0.0.1:{port}"]
    connected = [(loc, rem) for loc, rem, st in sockets if st != "0A"]
    assert connected and all(is_loopback(a) and is_loopback(b) for a, b in connected), sockets


def test_flower_shows_jobs_with_task_events_off(
    tmp_path: Path, busybox_image: str, git_server: GitServer
) -> None:
    """``task_events = false``: no task-sent event from the submitter, and the worker sends
    task events only once Flower asks for them, so Flower still shows every job it runs."""
    redis_server = RedisServer.start(tmp_path / "redis")
    h = Harness(tmp_path / "pool", redis_server.url, {**FAST_TIMINGS, "task_events": False})
    h.root.mkdir()
    write_config(h.config, busybox_image)
    try:
        worker = h.start_worker("linux")
        with flower_on(h, tmp_path / "flower.log") as (port, _proc):
            # Flower's periodic enable_events reaches the worker (its first within seconds).
            worker.wait_log("Events of group {task} enabled by remote", timeout=60)
            job_id = h.submit(git_server, "true")
            h.wait_state(job_id, "succeeded", timeout=120)
            deadline = time.monotonic() + 30
            while True:
                status, body = get(f"http://127.0.0.1:{port}/api/tasks", auth=CREDENTIALS)
                assert status == 200, body
                mine = [t for t in json.loads(body).values() if job_id in str(t.get("args"))]
                if mine and mine[0]["state"] == "SUCCESS":
                    break
                assert time.monotonic() < deadline, f"Flower never showed {job_id}: {body}"
                time.sleep(0.5)
        (task,) = mine
        assert task["received"] and task["started"] and task["succeeded"]
        assert task["sent"] is None  # the submitter sent no task-sent event
    finally:
        h.stop()
        redis_server.stop()
