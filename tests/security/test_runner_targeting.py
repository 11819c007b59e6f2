"""Client isolation by runner name, with real workers, Redis, store and Docker.

Two workers of one capability, ``client-a-1`` and ``client-b-1``. A job sent to
``client-a-*`` runs on ``client-a-1`` only: while that runner is busy the job waits, however
idle ``client-b-1`` is; a message put on ``client-b-1``'s own queue by hand is refused
there and goes on to ``client-a-1``. A job for ``client-c-*`` waits queued (``explain``
says why) until a runner of that name starts and the reaper sends it there. A second
worker under a name that is live elsewhere refuses to start."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ci_pool.broker.app import create_celery
from ci_pool.broker.targeting import runner_queue_of
from ci_pool.defaults import RUN_JOB_TASK
from tests.conftest import GitServer, Harness, Worker


@pytest.fixture
def clients(harness: Harness) -> Iterator[dict[str, Worker]]:
    started: dict[str, Worker] = {}
    try:
        for name in ("client-a-1", "client-b-1"):
            started[name] = harness.start_worker_args("linux", "--concurrency", "1", "--name", name)
        yield started
    finally:
        for w in harness.workers:
            if w.runner_id.startswith("client-"):
                w.stop()


def _state(h: Harness, job_id: str) -> dict[str, object]:
    res = h.cli("show", job_id, "--json")
    assert res.returncode == 0, res.stderr
    data: dict[str, object] = json.loads(res.stdout)
    return data


def _wait(h: Harness, job_id: str, state: str, timeout: float = 60) -> str | None:
    """Wait for a state; the runner that holds or held the job."""
    h.wait_state(job_id, state, timeout)
    return h.pool().get(job_id).runner_id


def _reap(h: Harness) -> None:
    """One reaper sweep (``ci-pool beat --once``) that re-sends queued jobs at once."""
    res = subprocess.run(
        [sys.executable, "-m", "ci_pool", "beat", "--once"],
        env={**h.env(), "CI_POOL_RESEND_AFTER": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr


@pytest.mark.timeout(300)
def test_a_job_for_client_a_runs_only_on_client_a(
    harness: Harness, git_server: GitServer, clients: dict[str, Worker]
) -> None:
    h = harness
    assert sorted(clients) == [clients["client-a-1"].runner_id, clients["client-b-1"].runner_id]

    # client-a-1 is busy; client-b-1 idle. The second job for client-a-* waits for a.
    busy = h.submit(git_server, "sleep 300", "--runner", "client-a-*")
    _wait(h, busy, "running")
    waiting = h.submit(git_server, "echo second", "--runner", "Client-A-*")
    time.sleep(2)  # time enough for an idle client-b-1 to take it, were it allowed to
    data = _state(h, waiting)  # show --json: the API's view, with the job's runner glob
    assert data["state"] == "queued" and data["runner"] == "client-a-*"
    why = h.cli("explain", waiting)
    assert why.returncode == 0, why.stderr
    assert "client-a-1 is busy with" in why.stdout and busy in why.stdout
    assert "client-b-1" not in why.stdout
    shown = h.cli("show", waiting)
    assert "runs on    runners matching 'client-a-*'" in shown.stdout

    # Its message put on client-b-1's own queue by hand: refused there, never run by b.
    app = create_celery(h.settings())
    queue = runner_queue_of("linux", "client-b-1")
    app.send_task(RUN_JOB_TASK, args=[waiting], queue=queue, routing_key=queue.routing_key)
    clients["client-b-1"].wait_log(f"job {waiting}: for runners 'client-a-*', not client-b-1")
    assert h.pool().get(waiting).state == "queued"

    assert h.cli("cancel", busy).returncode == 0  # client-a-1 frees up: the job runs there
    assert _wait(h, busy, "cancelled") == "client-a-1"
    assert _wait(h, waiting, "succeeded") == "client-a-1"
    claims = [e.runner_id for e in h.pool().store.events(waiting) if e.to_state == "running"]
    assert claims == ["client-a-1"]

    # No live runner matches client-c-*: it stays queued, explain says why.
    later = h.submit(git_server, "echo late", "--runner", "client-c-*")
    _reap(h)
    assert h.pool().get(later).state == "queued"
    why = h.cli("explain", later).stdout
    assert "no live runner matches 'client-c-*'; live linux runners: " in why
    assert "client-a-1" in why and "client-b-1" in why

    # A worker under a name live elsewhere refuses to start, with one line.
    twin = h.cli("worker", "--capability", "linux", "--name", "client-a-1", timeout=60)
    assert twin.returncode == 1
    assert twin.stderr.strip().count("\n") == 0, twin.stderr
    assert "runner name 'client-a-1' is already live on " in twin.stderr
    assert f"(pid {clients['client-a-1'].proc.pid})" in twin.stderr

    # A matching runner starts: the reaper's next sweep sends the job there.
    c = h.start_worker_args("linux", "--concurrency", "1", "--name", "client-c-1")
    assert c.runner_id == "client-c-1"
    _reap(h)
    assert _wait(h, later, "succeeded") == "client-c-1"
