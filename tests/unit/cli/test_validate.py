"""``ci-pool validate``: what it prints, verbatim, and its exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PAD = "# padding\n" * 95


def validate(tmp_path: Path, *files: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
    (tmp_path / "ci-pool.toml").touch()
    return subprocess.run(
        [sys.executable, "-m", "ci_pool", "validate", *files],
        env={**clean, "CI_POOL_CONFIG": str(tmp_path / "ci-pool.toml"), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def bad(tmp_path: Path) -> str:
    # The unknown label's value starts at line 100, column 21.
    (tmp_path / "wf.yml").write_text(
        PAD + "jobs:\n  build:\n    steps: [{run: make}]\n    env: {A: b}\n"
        "    runs-on:        [self-hosted, GPU]\n"
    )
    return "wf.yml"


def test_positions_and_file_text_are_printed_verbatim(tmp_path: Path, bad: str) -> None:
    (tmp_path / "two.yml").write_text(
        "jobs:\n  x:\n    runs-on: linux\n    steps:\n      - uses: '[red]:smile:@v1'\n"
    )
    res = validate(tmp_path, bad, "two.yml")
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr == (
        "wf.yml:100:21: jobs.build.runs-on: no capability has the label gpu; capabilities "
        "that exist: android, audit, deploy, flutter-web, iso, linux; to route it, map the "
        'label in ci-pool.toml: [capabilities.<name>] labels = ["gpu"] (labels add to the '
        "capability's own)\n"
        "two.yml:5:15: jobs.x.steps[0].uses: '[red]:smile:@v1' is not an action reference; "
        "give owner/repo@ref, owner/repo/path@ref, https://host/owner/repo@ref, "
        "./path/in/the/workspace or docker://image\n"
        "2 error(s) in 2 file(s)\n"
    )


def test_a_label_mapped_in_the_config_validates(tmp_path: Path, bad: str) -> None:
    res = validate(tmp_path, bad, CI_POOL_CAPABILITIES='{"linux": {"labels": ["gpu"]}}')
    assert (res.returncode, res.stderr) == (0, "1 file(s) valid\n")


def test_the_time_limit_is_checked_as_run_checks_it(tmp_path: Path) -> None:
    (tmp_path / "long.yml").write_text(
        "jobs:\n  release:\n    runs-on: [self-hosted, Linux]\n    timeout-minutes: 11\n"
        "    steps: [{run: make}]\n"
    )
    res = validate(tmp_path, "long.yml", CI_POOL_MAX_JOB_TIMEOUT="600")
    assert res.returncode == 1
    assert res.stderr == (
        "long.yml:4:22: jobs.release.timeout-minutes: 660 s (11 minutes) is above the pool's "
        "limit, max_job_timeout = 600 s (10 minutes); ask for less, or have an operator raise "
        "max_job_timeout in ci-pool.toml\n"
        "1 error(s) in 1 file(s)\n"
    )
    res = validate(tmp_path, "long.yml", CI_POOL_MAX_JOB_TIMEOUT="660")
    assert (res.returncode, res.stderr) == (0, "1 file(s) valid\n")


def test_default_capability_is_read_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "bare.yml").write_text(
        "jobs:\n  a:\n    runs-on: self-hosted\n    steps: [{run: x}]\n"
    )
    assert validate(tmp_path, "bare.yml").returncode == 1
    res = validate(tmp_path, "bare.yml", CI_POOL_DEFAULT_CAPABILITY="linux")
    assert (res.returncode, res.stderr) == (0, "1 file(s) valid\n")
