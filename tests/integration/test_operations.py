"""What operators see: `status` per capability and `explain` for a waiting job."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import GitServer, Harness, Worker

pytestmark = pytest.mark.integration


def test_status_counts_queue_workers_and_recent_jobs(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    ok = harness.submit(git_server, "true", capability="linux")
    assert harness.cli("wait", ok, "--timeout", "90").returncode == 0
    waiting = harness.submit(git_server, "true", capability="deploy")
    time.sleep(0.3)
    res = harness.cli("status", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["capability"]: r for r in json.loads(res.stdout)}
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
    busy = harness.submit(git_server, "sleep 4", capability="android")
    pool = harness.pool()
    harness.wait_state(busy, "running")
    waiting = harness.submit(git_server, "true", capability="android")
    text = " ".join(harness.cli("explain", waiting).stdout.split())
    assert "all 1 worker(s) of 'android' are busy" in text
    assert busy in text and android_worker.runner_id in text
    assert pool.wait(waiting, timeout=90).state == "succeeded"
