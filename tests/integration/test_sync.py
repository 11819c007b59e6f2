"""``submit/run --sync``: uncommitted work run on real workers (git daemon, Redis, Celery,
dockerd), through the local store and through the API."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GitServer, Harness, Worker
from tests.integration.test_api import make_token

pytestmark = pytest.mark.integration


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True
    ).stdout


def dirty_clone(git_server: GitServer, dest: Path) -> Path:
    """A clone of app.git with a changed tracked file, a deleted one, an untracked text
    file, an untracked binary file and an ignored file."""
    subprocess.run(["git", "clone", "-q", git_server.url(), str(dest)], check=True)
    git(dest, "config", "user.email", "dev@example.invalid")
    git(dest, "config", "user.name", "dev")
    (dest / "VERSION").write_text("9.9.9-dirty\n")
    (dest / "README.md").unlink()
    (dest / "notes.txt").write_text("untracked note\n")
    (dest / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (dest / ".gitignore").write_text("*.log\n")
    (dest / "debug.log").write_text("must not travel\n")
    return dest


CLI = [sys.executable, "-m", "ci_pool"]
CHECK = (
    "cat VERSION; cat notes.txt; test ! -e README.md && echo readme-gone; "
    "test ! -e debug.log && echo no-log; md5sum blob.bin"
)


def show(cli: Any, job_id: str) -> dict[str, Any]:
    res = cli("show", job_id, "--json")
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def test_patch_runs_the_dirty_worktree_on_the_pushed_base(
    harness: Harness, git_server: GitServer, linux_worker: Worker, tmp_path: Path
) -> None:
    work = dirty_clone(git_server, tmp_path / "work")
    status_before = git(work, "status", "--porcelain")
    blob_md5 = hashlib.md5((work / "blob.bin").read_bytes()).hexdigest()
    res = harness.cli("submit", "--repo", git_server.url(), "--capability", "linux",
                      "--sync", "patch", "--worktree", str(work), "--run", CHECK)  # fmt: skip
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip()
    waited = harness.cli("wait", job_id, "--timeout", "90")
    assert waited.returncode == 0, waited.stderr + harness.cli("logs", job_id).stdout
    lines = harness.cli("logs", job_id).stdout.splitlines()
    for want in ("9.9.9-dirty", "untracked note", "readme-gone", "no-log", f"{blob_md5}  blob.bin"):
        assert want in lines, (want, lines)
    job = show(harness.cli, job_id)
    base = git(work, "rev-parse", "HEAD").strip()
    assert job["commit_sha"] == base == git_server.shas["app.git"]
    evidence = job["evidence"]
    assert evidence["sync_mode"] == "patch"
    stored = harness.pool().store.sync_payload(evidence["sync_sha256"])
    assert stored is not None and hashlib.sha256(stored).hexdigest() == evidence["sync_sha256"]
    assert b"GIT binary patch" in stored and b"debug.log" not in stored
    assert any(f"applied patch {evidence['sync_sha256'][:12]}" in line for line in lines)
    text = harness.cli("show", job_id).stdout
    assert f"sync       patch sha256 {evidence['sync_sha256']}" in text
    # The submitter's worktree and index are as they were.
    assert git(work, "status", "--porcelain") == status_before


def test_unpushed_base_is_refused_then_runs_as_a_snapshot_through_the_api(
    harness: Harness,
    git_server: GitServer,
    linux_worker: Worker,
    api_url: str,
    tmp_path: Path,
) -> None:
    work = dirty_clone(git_server, tmp_path / "work")
    (work / "committed.txt").write_text("local commit only\n")
    git(work, "add", "committed.txt")
    git(work, "commit", "-q", "-m", "not pushed")
    os.symlink("VERSION", work / "version-link")
    base = git(work, "rev-parse", "HEAD").strip()
    res = harness.cli("submit", "--repo", git_server.url(), "--capability", "linux",
                      "--sync", "patch", "--worktree", str(work), "--run", "true")  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert f"commit {base[:12]}" in res.stderr and f"is not on {git_server.url()}" in res.stderr
    assert "git push" in res.stderr and "--sync snapshot" in res.stderr
    assert "Traceback" not in res.stderr

    # The same worktree as a snapshot, through the API, as a workflow run.
    workflow = tmp_path / "ci.yml"
    workflow.write_text(
        "on: push\njobs:\n  build:\n    runs-on: [linux]\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        f"      - run: cat committed.txt; cat version-link; test ! -e .git && echo no-git; "
        f"{CHECK}\n"
    )
    env = {
        "CI_POOL_API_URL": api_url,
        "CI_POOL_API_TOKEN": make_token(harness, "submit", "read"),
    }
    run = subprocess.run(
        [*CLI, "run", str(workflow), "--repo", git_server.url(),
         "--sync", "snapshot", "--worktree", str(work)],
        env={**harness.env(), **env}, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    pool = harness.pool()
    pipeline_id = run.stderr.split()[1].rstrip(":")
    (job,) = pool.pipeline(pipeline_id)[1]
    log = harness.cli("logs", job.id).stdout.splitlines()
    for want in ("local commit only", "9.9.9-dirty", "no-git", "untracked note", "no-log"):
        assert want in log, (want, log)
    assert log.count("9.9.9-dirty") == 2  # the symlink came as a symlink
    assert job.commit_sha == base
    assert job.evidence is not None and job.evidence.sync_mode == "snapshot"


def test_sync_is_refused_for_signed_capabilities_and_over_the_cap(
    harness: Harness, git_server: GitServer, tmp_path: Path
) -> None:
    work = dirty_clone(git_server, tmp_path / "work")
    config = tmp_path / "ci-pool.toml"
    config.write_text(harness.config.read_text().replace("require_signature = false", ""))
    env = {**harness.env(), "CI_POOL_CONFIG": str(config), "CI_POOL_HOME": str(tmp_path / "h")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], env=env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip

    for cap in ("iso", "deploy"):
        res = cli("submit", "--repo", git_server.url(), "--capability", cap,
                  "--sync", "patch", "--worktree", str(work), "--run", "true")  # fmt: skip
        assert res.returncode == 2, res.stderr
        assert f"capability {cap!r} runs only signed submissions" in res.stderr
        assert "without --sync" in res.stderr and "Traceback" not in res.stderr
    (work / "large.bin").write_bytes(os.urandom(64 * 1024))
    res = subprocess.run(
        [*CLI, "submit", "--repo", git_server.url(), "--capability", "linux",
         "--sync", "snapshot", "--worktree", str(work), "--run", "true"],
        env={**env, "CI_POOL_SYNC_MAX_BYTES": "4096"}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "over the limit of 4096 (setting sync_max_bytes)" in res.stderr
