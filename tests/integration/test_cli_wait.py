"""`ci-pool wait --timeout` on a job that does not end in time: exit 3, and it says it timed
out, after how long, the job's state and why the job waits."""

from __future__ import annotations

import json

import pytest

from tests.conftest import GitServer, Harness

pytestmark = pytest.mark.integration


def test_wait_timeout_says_it_timed_out_the_state_and_why(
    harness: Harness, git_server: GitServer
) -> None:
    # No worker serves deploy in the shared pool: the job stays queued.
    job_id = harness.submit(git_server, "true", capability="deploy")
    try:
        res = harness.cli("wait", job_id, "--timeout", "2s")
        assert res.returncode == 3, res.stderr
        said = " ".join(res.stderr.split())
        assert f"timed out after 2 s waiting for job {job_id}, still queued" in said
        assert "no worker is serving capability 'deploy'" in said
        assert "ci-pool worker --capability deploy" in said

        as_json = harness.cli("wait", job_id, "--timeout", "1", "--json")
        assert as_json.returncode == 3
        assert json.loads(as_json.stdout)["state"] == "queued"
        assert "timed out after 1 s" in as_json.stderr
    finally:
        harness.cli("cancel", job_id)
