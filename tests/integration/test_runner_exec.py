"""``ci-pool runner exec NAME -- cmd``: a diagnostic command on one live worker, through the
broker's remote-control channel (no SSH), from the local CLI and the API; admin only,
refused on strict lanes, bounded in time and output, and audited."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from ci_pool.broker.runners import RunnerInfo, RunnerRegistry
from ci_pool.store import tokens
from tests.conftest import Harness, Worker

pytestmark = pytest.mark.integration


def test_runner_exec_local_and_api(harness: Harness, linux_worker: Worker, api_url: str) -> None:
    rid = linux_worker.runner_id
    script = "echo to-stdout; echo to-stderr >&2; pwd; echo home=$HOME; exit 7"
    res = harness.cli("runner", "exec", rid, "--", "sh", "-c", script)
    assert res.returncode == 7, res.stderr
    lines = res.stdout.splitlines()
    assert lines[:2] == ["to-stdout", "to-stderr"]
    assert "ci-pool-exec-" in lines[2] and lines[3] == f"home={lines[2]}"  # a temp dir

    # Output is bounded and says so; the JSON form carries the exit code.
    res = harness.cli(
        "runner", "exec", "--json", rid, "--", "sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x"
    )
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)
    assert body["exit_code"] == 0 and body["truncated"] is True
    assert len(body["output"]) == harness.settings().runner_exec_max_output

    # A command past its timeout is killed, with a clear error.
    started = time.monotonic()
    res = harness.cli("runner", "exec", "--timeout", "1", rid, "--", "sh", "-c", "echo a; sleep 60")
    assert time.monotonic() - started < 30
    assert res.returncode == 3 and res.stdout.strip() == "a"
    assert f"did not finish within 1s on {rid}; it was killed" in res.stderr

    # No such program: it says so.
    res = harness.cli("runner", "exec", rid, "--", "no-such-program-here")
    assert res.returncode == 3 and "cannot run 'no-such-program-here'" in res.stderr

    # Unknown or offline runner: a clear error before anything is sent.
    res = harness.cli("runner", "exec", "linux@gone-000000", "--", "true")
    assert res.returncode == 2 and "no live runner 'linux@gone-000000'" in res.stderr
    assert "Traceback" not in res.stderr

    # A strict lane (iso: privileged, host mode, allowlisted) is refused by the pool.
    pool = harness.pool()
    registry = RunnerRegistry(pool.redis, 120)  # live for the whole check
    iso = RunnerInfo("iso@exec-test-1", "iso", "iso", "exec-test", 1, 1, "test", time.time())
    registry.heartbeat(iso)
    try:
        res = harness.cli("runner", "exec", iso.runner_id, "--", "id")
        assert res.returncode == 2 and "strict lane 'iso'" in res.stderr
        assert "runner_exec_strict" in res.stderr
    finally:
        registry.unregister(iso.runner_id)

    # The API: admin runs it, a read token gets 403, an unknown runner 404.
    admin, _ = tokens.create_token(pool.store, f"exec-admin-{time.time_ns()}", ["admin"])
    reader, _ = tokens.create_token(pool.store, f"exec-read-{time.time_ns()}", ["read"])
    url = f"{api_url}/v1/runners/{rid}/exec"
    with httpx.Client(timeout=60) as http:
        ok = http.post(
            url,
            json={"argv": ["sh", "-c", "echo via-api; exit 3"]},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["exit_code"] == 3 and ok.json()["output"] == "via-api\n"
        denied = http.post(
            url, json={"argv": ["id"]}, headers={"Authorization": f"Bearer {reader}"}
        )
        assert denied.status_code == 403 and "admin" in denied.text
        gone = http.post(
            f"{api_url}/v1/runners/nobody/exec",
            json={"argv": ["id"]},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert gone.status_code == 404 and "no live runner 'nobody'" in gone.text
        bad = http.post(url, json={"argv": []}, headers={"Authorization": f"Bearer {admin}"})
        assert bad.status_code == 422
        log = http.get(
            f"{api_url}/v1/runner-execs",
            params={"runner": rid},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert log.status_code == 200
        assert (
            http.get(
                f"{api_url}/v1/runner-execs", headers={"Authorization": f"Bearer {reader}"}
            ).status_code
            == 403
        )

    # The audit: who, which runner, what command, when, how it ended.
    rows = log.json()["data"]
    assert rows[0]["by"].startswith("api token exec-admin-")
    assert rows[0]["argv"] == ["sh", "-c", "echo via-api; exit 3"]
    assert rows[0]["outcome"] == "exited" and rows[0]["exit_code"] == 3
    res = harness.cli("runner", "exec-log", "--json", "--limit", "1000")
    assert res.returncode == 0, res.stderr
    mine = [r for r in json.loads(res.stdout) if r["by"].startswith("local ")]
    by_outcome = {(r["runner_id"], r["outcome"], r["exit_code"]) for r in mine}
    assert (rid, "exited", 7) in by_outcome
    assert (rid, "timed_out", None) in by_outcome
    assert (rid, "not_started", None) in by_outcome
    assert ("linux@gone-000000", "no_answer", None) in by_outcome
    assert (iso.runner_id, "refused", None) in by_outcome
    assert all(r["at"] for r in mine)
    text = harness.cli("runner", "exec-log", rid)
    assert "exited (exit 7)  sh -c echo to-stdout" in text.stdout
