"""Same-commit workspaces as overlays over the runner's pristine cached tree: one mount
whatever the tree's size, each job's writes in its own layer, the cached tree untouched,
everything unmounted when the job ends (or by the runner's sweep when it could not)."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ci_pool import overlay
from ci_pool.defaults import SCRATCH_DIR
from ci_pool.embedded import GitDaemon, make_repo
from ci_pool.git import CheckoutRequest, checkout
from ci_pool.settings import load_settings
from ci_pool.worker.workspace import sweep_overlays
from tests.conftest import GitServer, Harness, Worker, need

pytestmark = pytest.mark.integration

FILES = {"f.txt": "v0\n", "keep.txt": "keep\n", "run.sh": "#!/bin/sh\necho hi\n", "d/g.txt": "g\n"}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under ``root`` (but .git) with its mode and content or link target."""
    found: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                body = "-> " + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                body = path.read_text()
            else:
                body = ""
            found[str(path.relative_to(root))] = (st.st_mode, body)
    return found


@pytest.fixture
def mountable(tmp_path: Path) -> None:
    reason = overlay.available(tmp_path)
    need(reason is None, f"overlay workspaces unavailable: {reason}")


def test_same_commit_workspaces_are_separate_overlays_and_the_cache_stays_pristine(
    tmp_path: Path, mountable: None
) -> None:
    base = tmp_path / "srv"
    base.mkdir()
    shas = [make_repo(base / "r.git", {**FILES, "f.txt": f"v{i}\n"}) for i in range(3)]
    daemon = GitDaemon.start(base)
    settings = load_settings(
        None, home=tmp_path / "home", tree_cache_size=1, tree_overlay_min_bytes=0
    )
    url = daemon.url("r.git")
    w1, w2 = tmp_path / "job1" / "src", tmp_path / "job2" / "src"
    try:
        first = checkout(CheckoutRequest(url, shas[2], w1, layers=w1.parent / "l"), settings)
        # The job's own checkout went into the cache, and the job works on an overlay of it.
        assert first.via == "network" and os.path.ismount(w1)
        (cached,) = [p / "tree" for p in settings.resolved_tree_root.iterdir() if p.is_dir()]
        pristine = snapshot(cached)
        assert pristine["f.txt"][1] == "v2\n"

        # The first job writes, deletes, chmods, adds, and swaps a file for a symlink that
        # it then writes through.
        (w1 / "f.txt").write_text("dirtied\n")
        (w1 / "d" / "g.txt").unlink()
        os.chmod(w1 / "run.sh", 0o777)
        (w1 / "build-output").write_text("x")
        (w1 / "keep.txt").unlink()
        (w1 / "keep.txt").symlink_to(w1 / "f.txt")
        (w1 / "keep.txt").write_text("through the link\n")

        started = time.monotonic()
        second = checkout(CheckoutRequest(url, shas[2], w2, layers=w2.parent / "l"), settings)
        took = time.monotonic() - started
        assert (second.sha, second.via) == (shas[2], "cache")
        assert took < 5  # sanity bound only; bench/checkout.py measures it
        assert os.path.ismount(w2)
        # Neither the second job nor the cache sees any of it.
        assert snapshot(w2) == pristine
        assert snapshot(cached) == pristine
        assert git("-C", str(w2), "status", "--porcelain").strip() == ""
        assert (w1 / "f.txt").read_text() == "through the link\n"

        # A tree some job still works on is not evicted, even past the cache's size...
        w3 = tmp_path / "job3" / "src"
        checkout(CheckoutRequest(url, shas[0], w3, layers=w3.parent / "l"), settings)
        assert cached.is_dir()
        # ...and once its jobs have unmounted, it is.
        for w in (w1, w2, w3):
            assert overlay.unmount_under(w.parent) == []
            assert not os.path.ismount(w)
        checkout(CheckoutRequest(url, shas[1], tmp_path / "w4"), settings)
        assert not cached.exists()
        # Under the operator's threshold a tree is copied.
        small = load_settings(
            None, home=tmp_path / "home", tree_cache_size=1, tree_overlay_min_bytes=1 << 20
        )
        w5 = tmp_path / "job5" / "src"
        hit = checkout(CheckoutRequest(url, shas[1], w5, layers=w5.parent / "l"), small)
        assert hit.via == "cache" and not os.path.ismount(w5)
        assert (w5 / "f.txt").read_text() == "v1\n"
    finally:
        for job in tmp_path.glob("job*"):
            overlay.unmount_under(job)
        daemon.stop()


def test_the_sweep_unmounts_workspaces_of_ended_attempts_only(
    tmp_path: Path, mountable: None
) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    (lower / "f").write_text("x")
    root = tmp_path / "workspaces"
    ended, running = root / "jobended-1", root / "jobrunning-2"
    for attempt in (ended, running):
        overlay.mount(lower, attempt / "layers", attempt / "src")
    try:
        swept = sweep_overlays(root, lambda job_id, attempt: job_id == "jobrunning")
        assert swept == ["jobended-1"]
        assert not ended.exists()
        assert os.path.ismount(running / "src")
        assert (lower / "f").read_text() == "x"
    finally:
        overlay.unmount_under(root)


def test_jobs_at_one_commit_never_see_each_others_writes_and_leave_no_mount(
    harness: Harness, linux_worker: Worker, git_server: GitServer
) -> None:
    """Two container jobs at the same commit at once: the writer's changes reach neither
    the reader nor the cached tree, and both workspaces are unmounted at the end."""
    reason = overlay.available(harness.settings().resolved_workspace_root.parent)
    need(reason is None, f"overlay workspaces unavailable: {reason}")
    harness.cli("wait", harness.submit(git_server, "cat VERSION"), "--timeout", "90")
    writer = harness.submit(
        git_server,
        "echo 9.9.9 > VERSION && rm README.md && chmod 600 build.sh && "
        "ln -sf VERSION link && sleep 2 && cat VERSION",
    )
    reader = harness.submit(
        git_server,
        "cat VERSION; ls -l build.sh; test -f README.md && test ! -e link && echo pristine",
    )
    for job_id in (writer, reader):
        assert harness.cli("wait", job_id, "--timeout", "90").returncode == 0
    pool = harness.pool()
    writer_log = pool.store.read_log(writer).splitlines()
    reader_log = pool.store.read_log(reader)
    assert "9.9.9" in writer_log
    assert "1.2.3" in reader_log and "pristine" in reader_log and "rwxr-xr-x" in reader_log
    assert "overlay" in reader_log
    for job_id in (writer, reader):
        evidence = pool.get(job_id).evidence
        assert evidence is not None and evidence.checkout_via == "cache"
    settings = harness.settings()
    # The cached tree of the jobs' commit (the shared pool caches other tests' trees too).
    commit = pool.get(reader).evidence.commit_sha  # type: ignore[union-attr]
    trees = [
        p / "tree"
        for p in settings.resolved_tree_root.iterdir()
        if (p / "complete").exists() and commit and p.name.endswith(commit)
    ]
    assert trees, f"no cached tree of {commit}"
    assert all((t / "VERSION").read_text() == "1.2.3\n" for t in trees)
    assert all((t / "README.md").exists() and not (t / "link").exists() for t in trees)
    # No job's workspace stays mounted; the runners' own job scratch (one tmpfs per live
    # pool process of the session's host-mode workers, worker/scratch.py) is not a job's.
    root = settings.resolved_workspace_root
    left = [p for p in overlay.mounted_under(root) if p.relative_to(root).parts[0] != SCRATCH_DIR]
    assert left == []


def test_the_mounts_under_a_directory_are_found_whatever_its_name_and_only_those(
    tmp_path: Path, mountable: None
) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    (lower / "f").write_text("x")
    # mountinfo writes a space, a tab and a backslash as octal escapes.
    odd, plain = tmp_path / "ws with space\tand\\slash" / "job-1", tmp_path / "ws" / "job-1"
    prefix = tmp_path / "ws with"  # a prefix of the odd name: not a parent of its mounts
    for i, root in enumerate((odd, plain)):
        # The layers' own paths cannot hold a backslash (overlayfs options): kept apart.
        overlay.mount(lower, tmp_path / f"layers-{i}", root / "src")
    try:
        assert overlay.mounted_under(odd) == [odd / "src"]
        assert overlay.mounted_under(plain.parent) == [plain / "src"]
        assert overlay.mounted_under(prefix) == []
        assert overlay.unmount_under(odd) == []
        assert not os.path.ismount(odd / "src") and os.path.ismount(plain / "src")
    finally:
        overlay.unmount_under(tmp_path)
    assert overlay.mounted_under(tmp_path) == []


def test_a_tree_cache_removed_while_the_runner_runs_is_made_again_at_the_next_checkout(
    tmp_path: Path, mountable: None
) -> None:
    # The cache's directories are made when first missing, not at every checkout: one an
    # operator removes under a running runner comes back at the next job's checkout.
    base = tmp_path / "srv"
    base.mkdir()
    sha = make_repo(base / "r.git", FILES)
    daemon = GitDaemon.start(base)
    settings = load_settings(
        None, home=tmp_path / "home", tree_cache_size=1, tree_overlay_min_bytes=0
    )
    url = daemon.url("r.git")
    jobs = [tmp_path / f"job{i}" for i in range(3)]
    try:
        for i, job in enumerate(jobs):
            w = job / "src"
            checkout(CheckoutRequest(url, sha, w, layers=job), settings)
            assert (w / "f.txt").read_text() == "v0\n"
            assert os.path.ismount(w), f"checkout {i} is not an overlay"
            assert overlay.unmount_under(job) == []
            if i == 1:  # then the whole cache goes
                subprocess.run(["rm", "-rf", str(settings.resolved_tree_root)], check=True)
        assert settings.resolved_tree_root.is_dir()
    finally:
        for job in jobs:
            overlay.unmount_under(job)
        daemon.stop()
