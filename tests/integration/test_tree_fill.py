"""The tree cache filled off the job's path: with the runner's mirror, a job at a commit not
in the cache gets its tree straight from the mirror, the pristine tree is filled in the
background (once, however many jobs miss at once), and a filler that dies leaves nothing a
later job would use. Against a real git daemon, and end to end on a real worker."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_pool import defaults, overlay, trees
from ci_pool.embedded import GitDaemon, RedisServer, make_repo
from ci_pool.git import CheckoutRequest, CheckoutResult, checkout
from ci_pool.settings import Settings, load_settings
from tests.conftest import FAST_TIMINGS, GitServer, Harness
from tests.waiting import until

pytestmark = pytest.mark.integration

CAP = "treefill"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def entries(settings: Settings, commit: str) -> list[Path]:
    """The complete cached trees of ``commit``."""
    root = settings.resolved_tree_root
    if not root.exists():
        return []
    return [
        p
        for p in root.iterdir()
        if "." not in p.name and p.name.endswith(commit) and (p / "complete").exists()
    ]


def leftovers(settings: Settings) -> list[Path]:
    """Directories background fills write into before renaming them into place."""
    return list(settings.resolved_tree_root.glob("*" + defaults.TREE_FILL_SUFFIX))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    base = tmp_path / "srv"
    base.mkdir()
    shas = [
        make_repo(base / "r.git", {"f.txt": f"v{i}\n", "d/g.txt": "g\n", "big.bin": "x" * 40_000})
        for i in range(4)
    ]
    daemon = GitDaemon.start(base)
    yield daemon.url("r.git"), shas
    daemon.stop()


def job_checkout(url: str, sha: str, dest: Path, settings: Settings) -> CheckoutResult:
    """A checkout as a job makes it (layers beside the workspace), plain directory on a miss."""
    return checkout(CheckoutRequest(url, sha, dest, layers=dest.with_name("layers")), settings)


def test_a_miss_gets_its_tree_at_once_and_the_cache_is_filled_once_in_the_background(
    served: tuple[str, list[str]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, shas = served
    settings = load_settings(
        None, home=tmp_path / "home", mirror_cache=True, tree_cache_size=2, tree_overlay_min_bytes=0
    )
    caplog.set_level(logging.INFO, logger="ci_pool.trees")
    w1 = tmp_path / "job1" / "src"
    lines: list[str] = []
    try:
        first = checkout(
            CheckoutRequest(url, shas[3], w1, layers=w1.with_name("layers")), settings, lines.append
        )
        # A miss: the job's own tree, from the mirror, with the right commit.
        assert (first.sha, first.via) == (shas[3], "mirror")
        assert (w1 / "f.txt").read_text() == "v3\n"
        assert not os.path.ismount(w1)
        assert any("filled in the background" in line for line in lines)
        # The job writes at once, while the cache may still be filling.
        (w1 / "f.txt").write_text("dirtied by the first job\n")
        (w1 / "d" / "g.txt").unlink()
        (w1 / "build-output").write_text("x")
        assert trees.settle(60)
        (entry,) = entries(settings, shas[3])
        assert (entry / "tree" / "f.txt").read_text() == "v3\n"
        assert (entry / "tree" / "d" / "g.txt").read_text() == "g\n"
        assert not (entry / "tree" / "build-output").exists()
        assert leftovers(settings) == []

        # The next job at the commit is a hit, on a pristine tree.
        w2 = tmp_path / "job2" / "src"
        second = job_checkout(url, shas[3], w2, settings)
        assert (second.sha, second.via) == (shas[3], "cache")
        assert (w2 / "f.txt").read_text() == "v3\n"
        assert (w2 / "d" / "g.txt").exists() and not (w2 / "build-output").exists()
        assert git("-C", str(w2), "status", "--porcelain").strip() == ""
        assert git("-C", str(w2), "rev-parse", "HEAD").strip() == shas[3]
        assert (w1 / "f.txt").read_text() == "dirtied by the first job\n"

        # Three jobs miss one commit at once: each gets its tree, the cache is filled once.
        caplog.clear()
        results: dict[int, CheckoutResult] = {}
        errors: list[BaseException] = []

        def one(i: int) -> None:
            try:
                results[i] = job_checkout(url, shas[1], tmp_path / f"c{i}" / "src", settings)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert trees.settle(60)
        assert {r.sha for r in results.values()} == {shas[1]}
        for i in range(3):
            assert (tmp_path / f"c{i}" / "src" / "f.txt").read_text() == "v1\n"
        fills = [r for r in caplog.records if "tree cache: filled" in r.getMessage()]
        assert len(fills) == 1, [r.getMessage() for r in fills]
        assert len(entries(settings, shas[1])) == 1

        # The size bound holds with fills in the background: once no job works on it, the
        # least recently used tree goes.
        assert overlay.unmount_under(w2.parent) == []
        job_checkout(url, shas[0], tmp_path / "job3" / "src", settings)
        assert trees.settle(60)
        kept = [p for p in settings.resolved_tree_root.iterdir() if p.is_dir()]
        assert len(kept) == 2, kept
        assert entries(settings, shas[0]) and entries(settings, shas[1])
        assert entries(settings, shas[3]) == []
    finally:
        trees.settle(60)
        for job in tmp_path.glob("job*"):
            overlay.unmount_under(job)


STALLED_FILLER = """
import sys, time
from pathlib import Path
from ci_pool import trees
from ci_pool.git import CheckoutRequest, fill_tree
from ci_pool.settings import load_settings

home, url, sha = sys.argv[1:4]
settings = load_settings(None, home=Path(home), mirror_cache=True)
req = CheckoutRequest(url, sha, Path(home) / "unused")
real = trees.record_bytes

def stalled(entry):
    # The whole tree is written; the filler is killed before it renames it into place.
    real(entry)
    print("written", flush=True)
    time.sleep(120)

trees.record_bytes = stalled
root = settings.resolved_tree_root
trees.fill(root, trees.entry(root, req, True), lambda d: fill_tree(req, settings, d), 8)
"""


def test_a_filler_killed_half_way_leaves_no_entry_a_later_job_uses(
    served: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, shas = served
    home = tmp_path / "home"
    settings = load_settings(None, home=home, mirror_cache=True, tree_overlay_min_bytes=0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen(
        [sys.executable, "-c", STALLED_FILLER, str(home), url, shas[2]],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as filler:
        try:
            assert filler.stdout is not None
            assert filler.stdout.readline().strip() == "written"
            os.kill(filler.pid, signal.SIGKILL)
        finally:
            if filler.poll() is None:
                filler.kill()
    assert filler.wait(10) == -signal.SIGKILL
    # What it wrote is there, but not as an entry.
    (half,) = leftovers(settings)
    assert (half / "tree" / "f.txt").read_text() == "v2\n"
    assert entries(settings, shas[2]) == []

    w1 = tmp_path / "job1" / "src"
    try:
        first = job_checkout(url, shas[2], w1, settings)
        assert (first.sha, first.via) == (shas[2], "mirror")  # not served from the half tree
        assert (w1 / "f.txt").read_text() == "v2\n"
        assert trees.settle(60)
        assert leftovers(settings) == []  # the next filler took the dead one's place
        w2 = tmp_path / "job2" / "src"
        second = job_checkout(url, shas[2], w2, settings)
        assert (second.sha, second.via) == (shas[2], "cache")
        assert (w2 / "f.txt").read_text() == "v2\n"
    finally:
        for job in tmp_path.glob("job*"):
            overlay.unmount_under(job)


@pytest.fixture
def mirror_pool(
    session_dir: Path, redis_server: RedisServer, busybox_image: str
) -> Iterator[Harness]:
    """A pool of its own whose runner keeps a mirror (the shared one checks out over the
    network); its capability and queue are its own, so it shares Redis db 0 harmlessly."""
    root = session_dir / "treefill-pool"
    root.mkdir()
    h = Harness(root, redis_server.url, {**FAST_TIMINGS, "mirror_cache": "true"})
    h.config.write_text(f'[capabilities.{CAP}]\nimage = "{busybox_image}"\nqueue = "{CAP}"\n')
    yield h
    h.stop()


def test_a_job_that_misses_runs_at_once_and_the_next_one_gets_the_filled_tree(
    mirror_pool: Harness, git_server: GitServer
) -> None:
    h = mirror_pool
    h.start_worker(CAP)
    pool = h.pool()
    first = h.submit(
        git_server,
        "cat VERSION; echo 9.9.9 > VERSION; rm README.md; touch junk; exit 3",
        capability=CAP,
    )
    h.wait_state(first, "failed", timeout=90)
    job = pool.get(first)
    assert job.evidence is not None
    assert (job.evidence.exit_code, job.evidence.checkout_via) == (3, "mirror")
    log = pool.store.read_log(first)
    assert "1.2.3" in log.splitlines()
    assert "the cached tree is filled in the background" in log
    commit = job.evidence.commit_sha
    assert commit
    settings = h.settings()
    (entry,) = until(lambda: entries(settings, commit), "the cached tree was filled", 60)
    assert (entry / "tree" / "VERSION").read_text() == "1.2.3\n"

    second = h.submit(
        git_server,
        "cat VERSION; test -f README.md && test ! -e junk && echo pristine",
        capability=CAP,
    )
    h.wait_state(second, "succeeded", timeout=90)
    job = pool.get(second)
    assert job.evidence is not None
    assert (job.evidence.exit_code, job.evidence.checkout_via) == (0, "cache")
    lines = pool.store.read_log(second).splitlines()
    assert "1.2.3" in lines and "pristine" in lines
    assert (entry / "tree" / "VERSION").read_text() == "1.2.3\n"
    assert not (entry / "tree" / "junk").exists()
    assert leftovers(settings) == []
