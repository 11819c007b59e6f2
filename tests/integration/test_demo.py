"""``make demo`` / ``ci-pool demo`` end to end from a directory of its own: embedded Redis, a
git daemon, a worker, one job of the example app, and the job's status as the exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_the_example_job_from_any_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
    res = subprocess.run(
        [sys.executable, "-m", "ci_pool", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert "demo-app 0.1.0" in res.stdout
    assert "succeeded exit 0" in res.stdout
