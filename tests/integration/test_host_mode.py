"""Host mode (the `iso` capability's default): steps run on the runner itself, in their own
process group, and nothing they started outlives the job."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from tests.conftest import GitServer, Harness

pytestmark = pytest.mark.integration


def test_host_job_exit_code_log_and_no_leftover_processes(
    harness: Harness, git_server: GitServer
) -> None:
    harness.start_worker("iso")
    marker = f"ci-pool-marker-{uuid.uuid4().hex}"
    res = harness.cli(
        "submit",
        "--repo",
        git_server.url(),
        "--ref",
        "main",
        "--capability",
        "iso",
        "--run",
        f"cat VERSION; (exec -a {marker} sleep 300) & echo spawned; exit 4",
    )
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip()
    assert harness.cli("wait", job_id, "--timeout", "90").returncode == 4
    job = harness.pool().get(job_id)
    assert job.state == "failed"
    assert job.evidence is not None and job.evidence.mode == "host"
    lines = harness.pool().store.read_log(job_id).splitlines()
    assert "1.2.3" in lines and "spawned" in lines
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
    assert left.stdout == "", f"processes of the job outlived it: {left.stdout}"
