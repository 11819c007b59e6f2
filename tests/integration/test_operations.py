"""What operators see: `status` per capability and `explain` for a waiting job."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ci_pool.embedded import RedisServer, free_port
from tests.conftest import GitServer, Harness, Worker, isolated_harness
from tests.waiting import until

pytestmark = pytest.mark.integration


def test_status_counts_queue_workers_and_recent_jobs(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    ok = harness.submit(git_server, "true", capability="linux")
    assert harness.cli("wait", ok, "--timeout", "90").returncode == 0
    waiting = harness.submit(git_server, "true", capability="deploy")

    def status() -> dict[str, dict[str, Any]] | None:
        res = harness.cli("status", "--json")
        assert res.returncode == 0, res.stderr
        rows = {r["capability"]: r for r in json.loads(res.stdout)}
        return rows if (rows["deploy"]["oldest_wait_s"] or 0) >= 0.3 else None

    rows = until(status, "deploy's oldest wait counted in status", timeout=30, interval=0.1)
    assert rows["linux"]["workers"] >= 1 and rows["linux"]["slots"] >= 2
    assert rows["linux"]["finished_1h"] >= 1 and rows["linux"]["p50_s"] is not None
    assert rows["deploy"]["queued"] >= 1 and rows["deploy"]["workers"] == 0
    assert rows["deploy"]["oldest_wait_s"] >= 0.3
    human = harness.cli("status").stdout
    assert "deploy" in human and "linux" in human
    explained = harness.cli("explain", waiting).stdout
    assert "no worker is serving capability 'deploy'" in explained
    assert "ci-pool worker --capability deploy" in explained
    harness.cli("cancel", waiting)
    assert "ended cancelled" in harness.cli("explain", waiting).stdout


def test_explain_all_workers_busy_names_what_holds_them(
    harness: Harness, git_server: GitServer, android_worker: Worker
) -> None:
    # Busy for longer than two CLI calls take on a loaded machine.
    busy = harness.submit(git_server, "sleep 12", capability="android")
    pool = harness.pool()
    harness.wait_state(busy, "running")
    waiting = harness.submit(git_server, "true", capability="android")
    text = " ".join(harness.cli("explain", waiting).stdout.split())
    assert "all 1 worker(s) of 'android' are busy" in text
    assert busy in text and android_worker.runner_id in text
    assert pool.wait(waiting, timeout=90).state == "succeeded"


def test_explain_a_job_waiting_out_its_retry_backoff(
    session_dir: Path, redis_server: RedisServer, busybox_image: str, git_server: GitServer
) -> None:
    h = isolated_harness(session_dir / "backoff", redis_server, busybox_image, 15, retry_backoff=30)
    try:
        h.start_worker("linux")
        missing = "0123456789abcdef0123456789abcdef01234567"  # checkout fails: infra error
        job_id = h.submit(git_server, "true", "--ref", missing)
        pool = h.pool()
        deadline = time.monotonic() + 60
        while pool.get(job_id).attempt < 1 or pool.get(job_id).state != "queued":
            assert time.monotonic() < deadline, pool.get(job_id).state
            time.sleep(0.1)
        text = " ".join(h.cli("explain", job_id).stdout.split())
        assert "attempt 1 ended in error (checkout_failed" in text
        assert "waiting out the retry backoff before attempt 2" in text
    finally:
        h.stop()


def test_status_says_so_and_exits_3_when_the_broker_is_down(harness: Harness) -> None:
    env = {**harness.env(), "CI_POOL_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    res = subprocess.run(
        [sys.executable, "-m", "ci_pool", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert "linux" in res.stdout  # the store's side of the table is still shown
    assert "the broker did not answer" in res.stderr and "Traceback" not in res.stderr
