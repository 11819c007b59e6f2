"""Attack: whoever can publish on the broker's control channel (every runner's Redis user
can: Celery needs it) sends ``runner exec`` to a worker of the pool. The worker runs only a
command the pool stored for it, taken once by its token, never the message's own argv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ci_pool import defaults
from ci_pool.store.diagnostics import create_exec_request
from tests.conftest import Harness, Worker

pytestmark = pytest.mark.integration


def _send(harness: Harness, node: str, arguments: dict[str, Any]) -> dict[str, Any]:
    replies = harness.pool().celery.control.broadcast(
        defaults.RUNNER_EXEC_COMMAND,
        arguments=arguments,
        destination=[node],
        reply=True,
        timeout=20,
        limit=1,
    )
    (answer,) = [r[node] for r in replies or [] if node in r]
    return dict(answer)


def test_a_forged_runner_exec_runs_nothing(
    harness: Harness, linux_worker: Worker, tmp_path: Path
) -> None:
    pool = harness.pool()
    (runner,) = [r for r in pool.runners() if r.runner_id == linux_worker.runner_id]
    node = str(runner.extra.get("node") or runner.runner_id)
    log_start = linux_worker.log.stat().st_size  # the worker is shared: read only this test's part
    marker = tmp_path / "forged"
    script = ["sh", "-c", f"echo forged > {marker}"]

    # The message's own command (what a forger would send) is never run.
    answer = _send(harness, node, {"argv": script, "timeout": 5.0})
    assert "no such exec request" in answer.get("error", ""), answer
    # A made-up request, and one the pool made for another runner, are refused.
    answer = _send(harness, node, {"request": "made-up-token"})
    assert "no such exec request" in answer.get("error", ""), answer
    elsewhere = create_exec_request(pool.store, "other-host-linux-9", script, 5.0, 60)
    answer = _send(harness, node, {"request": elsewhere})
    assert "no such exec request" in answer.get("error", ""), answer
    assert not marker.exists()

    # A request made for this runner runs once; replaying its token runs nothing more.
    token = create_exec_request(pool.store, runner.runner_id, ["echo", "ran-once"], 5.0, 60)
    answer = _send(harness, node, {"request": token})
    assert answer["ok"]["exit_code"] == 0 and answer["ok"]["output"] == "ran-once\n", answer
    answer = _send(harness, node, {"request": token})
    assert "taken already" in answer.get("error", ""), answer
    # An expired one too.
    stale = create_exec_request(pool.store, runner.runner_id, script, 5.0, -1)
    answer = _send(harness, node, {"request": stale})
    assert "no such exec request" in answer.get("error", ""), answer
    assert not marker.exists()
    with linux_worker.log.open("rb") as log:
        log.seek(log_start)
        text = log.read().decode(errors="replace")
    assert "refused an exec request the pool did not make for it" in text
    assert "Traceback" not in text
