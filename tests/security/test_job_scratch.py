"""Job scratch (``worker.scratch``): a host job's step scripts and step files on a
size-limited tmpfs of its runner process, tried as a job and as another local user would:
writing past the limit, and symlinks or open directories planted where the scratch goes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_pool import defaults
from ci_pool.worker import scratch
from tests.conftest import GitServer, Harness, Worker
from tests.security.test_job_boundary import run_job

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

WHERE = """\
d=$(dirname "$GITHUB_ENV"); echo "files=$d"; echo "scripts=$(dirname "$0")"
stat -f -c "fs=%T" "$d"; stat -c "mode=%a" "$d" "$(dirname "$d")"
case "$RUNNER_TEMP" in "$(dirname "$d")"*) echo "temp in scratch";; *) echo "temp on disk";; esac
echo "name=value" >> "$GITHUB_ENV"
"""


@pytest.fixture(scope="module")
def iso_worker(harness: Harness) -> Worker:
    """A host-mode worker (the iso capability runs steps on the runner itself)."""
    return harness.start_worker("iso")


@needs_root
def test_a_host_jobs_step_files_are_private_on_the_scratch_tmpfs_and_bounded(
    harness: Harness, git_server: GitServer, iso_worker: Worker
) -> None:
    job = run_job(
        harness,
        git_server,
        "iso",
        steps=[{"run": WHERE}, {"run": 'echo "next step sees name=$name"'}],
    )
    assert job.state == "succeeded", harness.pool().store.read_log(job.id)
    lines = harness.pool().store.read_log(job.id).splitlines()
    seen = dict(line.split("=", 1) for line in lines if line.startswith(("files=", "scripts=")))
    assert "fs=tmpfs" in lines, lines
    assert lines.count("mode=700") == 2, lines  # the files directory and the job's own
    assert "temp on disk" in lines  # RUNNER_TEMP can grow big: never in RAM
    assert "next step sees name=value" in lines
    scratch_root = harness.settings().resolved_workspace_root / defaults.SCRATCH_DIR
    assert Path(seen["files"]).is_relative_to(scratch_root), seen
    assert Path(seen["scripts"]).parent == Path(seen["files"]).parent
    # Removed with the job's steps, before its outcome was recorded.
    assert not Path(seen["files"]).parent.exists()

    # Writing past the scratch's size fails the step with the system's own error; the
    # runner lives on, and its next job has the whole scratch again.
    big = defaults.JOB_SCRATCH_BYTES + (8 << 20)
    job = run_job(
        harness,
        git_server,
        "iso",
        steps=[{"run": f'head -c {big} /dev/zero > "$GITHUB_OUTPUT"; echo wrote'}],
    )
    log = harness.pool().store.read_log(job.id)
    assert job.state == "failed", log
    assert "No space left on device" in log
    assert "wrote" not in log.splitlines()
    job = run_job(
        harness, git_server, "iso", steps=[{"run": 'head -c 1000000 /dev/zero > "$GITHUB_ENV"'}]
    )
    assert job.state == "failed"  # a million NULs is no valid $GITHUB_ENV, but it was written
    assert "No space left" not in harness.pool().store.read_log(job.id)
    job = run_job(harness, git_server, "iso", steps=[{"run": "echo fine"}])
    assert job.state == "succeeded"


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A workspace root; whatever scratch a test mounted in it is unmounted afterwards."""
    path = tmp_path / "workspaces"
    path.mkdir()
    yield path
    scratch.release(path)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.mkdir()
    (path / "keep").write_text("kept")
    (path / "999999999").mkdir()  # named as the scratch of a runner process that is gone
    return path


def _untouched(victim: Path) -> None:
    assert sorted(p.name for p in victim.iterdir()) == ["999999999", "keep"]
    assert not any(os.path.ismount(p) for p in (victim, *victim.iterdir()))


@needs_root
def test_a_symlink_planted_as_the_scratch_directory_is_not_followed(
    root: Path, victim: Path
) -> None:
    (root / defaults.SCRATCH_DIR).symlink_to(victim)
    assert scratch.runner_scratch(root, 1 << 20) is None  # the job's files stay on disk
    _untouched(victim)
    (victim / str(os.getpid())).mkdir()  # named as this process's own scratch
    scratch.release(root)  # the runner's stop, and its sweep, list nothing through the link
    assert scratch.sweep(root) == []
    assert (victim / str(os.getpid())).is_dir()
    (victim / str(os.getpid())).rmdir()
    _untouched(victim)


@needs_root
def test_a_symlink_planted_as_the_runners_mount_point_is_not_followed(
    root: Path, victim: Path
) -> None:
    (root / defaults.SCRATCH_DIR).mkdir(mode=0o700)
    (root / defaults.SCRATCH_DIR / str(os.getpid())).symlink_to(victim)
    assert scratch.runner_scratch(root, 1 << 20) is None
    _untouched(victim)


@needs_root
def test_a_scratch_directory_open_to_other_users_is_refused(root: Path) -> None:
    (root / defaults.SCRATCH_DIR).mkdir()
    (root / defaults.SCRATCH_DIR).chmod(0o777)
    assert scratch.runner_scratch(root, 1 << 20) is None
    assert not os.path.ismount(root / defaults.SCRATCH_DIR / str(os.getpid()))


@needs_root
def test_a_jobs_scratch_is_private_and_a_planted_name_is_replaced_not_followed(
    root: Path, victim: Path
) -> None:
    mounted = scratch.runner_scratch(root, 1 << 20)
    assert mounted is not None and os.path.ismount(mounted)
    assert (mounted.stat().st_mode & 0o777) == 0o700
    (mounted / "job-1").symlink_to(victim)
    job = scratch.job_dirs(mounted, "job-1")
    assert job is not None and job.is_dir() and not job.is_symlink()
    assert {p.name for p in job.iterdir()} == {"scripts", "files"}
    assert all((p.stat().st_mode & 0o777) == 0o700 for p in (job, *job.iterdir()))
    _untouched(victim)
    # The limit holds for what the runner writes too.
    with pytest.raises(OSError, match="No space left"):
        (job / "files" / "big").write_bytes(b"x" * (2 << 20))
    scratch.remove(job)
    assert not job.exists()
    scratch.release(root)
    assert not os.path.ismount(mounted) and not mounted.exists()
