"""``validate`` and ``run`` admit the same workflows: what validate passes, run accepts, and
what run refuses for the pool's rules (time limit, image override), validate refuses too,
with the same words."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GitServer, Harness

pytestmark = pytest.mark.integration


def cli(h: Harness, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ci_pool", *args],
        env={**h.env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run(h: Harness, git: GitServer, wf: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return cli(h, "run", str(wf), "--repo", git.url(), "--ref", "main", "--detach", **env)


def job_count(h: Harness) -> int:
    return len(h.pool().store.list_jobs(limit=100_000))


def test_timeout_minutes_over_the_limit_is_refused_by_validate_and_run(
    harness: Harness, git_server: GitServer, tmp_path: Path
) -> None:
    wf = tmp_path / "release.yml"
    wf.write_text(
        "name: release\non: push\njobs:\n  build:\n    runs-on: [self-hosted, Linux]\n"
        "    timeout-minutes: 11\n    steps:\n      - run: 'true'\n"
    )
    why = (
        f"{wf}:6:22: jobs.build.timeout-minutes: 660 s (11 minutes) is above the pool's limit, "
        "max_job_timeout = 600 s (10 minutes); ask for less, or have an operator raise "
        "max_job_timeout in ci-pool.toml"
    )
    before = job_count(harness)
    val = cli(harness, "validate", str(wf), CI_POOL_MAX_JOB_TIMEOUT="600")
    assert (val.returncode, val.stderr) == (1, f"{why}\n1 error(s) in 1 file(s)\n")
    res = run(harness, git_server, wf, CI_POOL_MAX_JOB_TIMEOUT="600")
    assert (res.returncode, res.stdout, res.stderr) == (2, "", f"error: {why}\n")
    assert job_count(harness) == before  # nothing written, never a silent clamp

    # At the limit, both accept it, and the job keeps the time it asked for.
    assert cli(harness, "validate", str(wf), CI_POOL_MAX_JOB_TIMEOUT="660").returncode == 0
    res = run(harness, git_server, wf, CI_POOL_MAX_JOB_TIMEOUT="660")
    assert res.returncode == 0, res.stderr
    pipeline_id = res.stdout.strip()
    try:
        [job] = harness.pool().pipeline(pipeline_id)[1]
        assert (job.capability, job.timeout_s) == ("linux", 660)
    finally:
        assert harness.cli("pipeline", "cancel", pipeline_id).returncode == 0


def test_validate_passes_exactly_the_image_overrides_run_accepts(
    harness: Harness, git_server: GitServer, busybox_image: str, tmp_path: Path
) -> None:
    wf = tmp_path / "lint.yml"
    wf.write_text(
        "name: lint\non: push\njobs:\n  lint:\n    runs-on: linux\n"
        f"    container:\n      image: {busybox_image}-other\n    steps:\n      - run: 'true'\n"
    )
    before = job_count(harness)
    val = cli(harness, "validate", str(wf))
    assert val.returncode == 1
    [why, total] = val.stderr.splitlines()
    assert why.startswith(f"{wf}:7:7: jobs.lint.container: capability 'linux' runs only its own")
    assert total == "1 error(s) in 1 file(s)"
    res = run(harness, git_server, wf)
    assert (res.returncode, res.stderr) == (2, f"error: {why}\n")
    assert job_count(harness) == before

    # A capability that allows overrides: validate passes it and run accepts it.
    allowing = json.dumps({"linux": {"image": busybox_image, "allow_container_override": True}})
    val = cli(harness, "validate", str(wf), CI_POOL_CAPABILITIES=allowing)
    assert (val.returncode, val.stderr) == (0, "1 file(s) valid\n")
    res = run(harness, git_server, wf, CI_POOL_CAPABILITIES=allowing)
    assert res.returncode == 0, res.stderr
    assert harness.cli("pipeline", "cancel", res.stdout.strip()).returncode == 0
