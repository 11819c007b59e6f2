"""Checkout against a real git daemon: exact commit, shallow and partial over the network,
and the runner's mirror cache (fetched, pruned, safe under concurrent jobs)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from ci_pool.embedded import GitDaemon, make_repo
from ci_pool.exceptions import CheckoutError
from ci_pool.git import CheckoutRequest, checkout, mirror_path
from ci_pool.settings import load_settings

pytestmark = pytest.mark.integration


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def served(tmp_path: Path) -> tuple[GitDaemon, Path, list[str]]:
    base = tmp_path / "srv"
    base.mkdir()
    shas = [
        make_repo(
            base / "r.git", {"f.txt": f"v{i}\n", f"big{i}.bin": "x" * 50_000}, message=f"c{i}"
        )
        for i in range(5)
    ]
    daemon = GitDaemon.start(base)
    yield daemon, base, shas
    daemon.stop()


def test_network_checkout_is_shallow_partial_and_exact(
    served: tuple[GitDaemon, Path, list[str]], tmp_path: Path
) -> None:
    daemon, _base, shas = served
    settings = load_settings(None, home=tmp_path / "home")
    res = checkout(CheckoutRequest(daemon.url("r.git"), shas[2], tmp_path / "w"), settings)
    assert (res.sha, res.via) == (shas[2], "network")
    assert (tmp_path / "w" / "f.txt").read_text() == "v2\n"
    assert git("-C", str(tmp_path / "w"), "rev-list", "--count", "HEAD").strip() == "1"
    assert (tmp_path / "w" / ".git" / "shallow").exists()
    assert "partialclonefilter" in git("-C", str(tmp_path / "w"), "config", "--list")


def test_fetch_depth_zero_gets_the_whole_history(
    served: tuple[GitDaemon, Path, list[str]], tmp_path: Path
) -> None:
    daemon, _base, shas = served
    settings = load_settings(None, home=tmp_path / "home")
    checkout(CheckoutRequest(daemon.url("r.git"), shas[4], tmp_path / "w", fetch_depth=0), settings)
    assert git("-C", str(tmp_path / "w"), "rev-list", "--count", "HEAD").strip() == "5"


def test_unknown_commit_is_a_checkout_error(
    served: tuple[GitDaemon, Path, list[str]], tmp_path: Path
) -> None:
    daemon, _base, _shas = served
    settings = load_settings(None, home=tmp_path / "home")
    with pytest.raises(CheckoutError, match="git fetch failed"):
        checkout(CheckoutRequest(daemon.url("r.git"), "f" * 40, tmp_path / "w"), settings)


def test_mirror_cache_follows_new_commits_and_serves_concurrent_jobs(
    served: tuple[GitDaemon, Path, list[str]], tmp_path: Path
) -> None:
    daemon, base, shas = served
    settings = load_settings(None, home=tmp_path / "home", mirror_cache=True)
    url = daemon.url("r.git")
    first = checkout(CheckoutRequest(url, shas[1], tmp_path / "w1"), settings)
    assert (first.sha, first.via) == (shas[1], "mirror")
    mirror = mirror_path(settings.resolved_mirror_root, url)
    assert (mirror / "HEAD").exists()
    # A new commit on the server: the mirror fetches it; the workspace borrows its objects.
    new = make_repo(base / "r.git", {"f.txt": "v-new\n"}, message="new")
    second = checkout(CheckoutRequest(url, new, tmp_path / "w2"), settings)
    assert second.sha == new and (tmp_path / "w2" / "f.txt").read_text() == "v-new\n"
    alternates = (tmp_path / "w2" / ".git" / "objects" / "info" / "alternates").read_text()
    assert str(mirror / "objects") in alternates
    # Eight jobs at once on one runner, at two different commits.
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            sha = shas[i % 5] if i % 2 else new
            res = checkout(CheckoutRequest(url, sha, tmp_path / f"c{i}"), settings)
            assert res.sha == sha
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list(settings.resolved_mirror_root.glob("*.git"))) == 1


def test_second_job_at_a_commit_gets_a_pristine_copy_of_the_cached_tree(
    served: tuple[GitDaemon, Path, list[str]], tmp_path: Path
) -> None:
    daemon, _base, shas = served
    settings = load_settings(None, home=tmp_path / "home", tree_cache_size=2)
    url = daemon.url("r.git")
    first = checkout(CheckoutRequest(url, shas[3], tmp_path / "w1"), settings)
    assert first.via == "network"
    (tmp_path / "w1" / "f.txt").write_text("dirtied by the first job\n")
    (tmp_path / "w1" / "build-output").write_text("x")
    started = time.monotonic()
    second = checkout(CheckoutRequest(url, shas[3], tmp_path / "w2"), settings)
    took = time.monotonic() - started
    assert (second.sha, second.via) == (shas[3], "cache")
    assert took < 5  # sanity bound only; bench/checkout.py measures it
    assert (tmp_path / "w2" / "f.txt").read_text() == "v3\n"
    assert not (tmp_path / "w2" / "build-output").exists()
    assert git("-C", str(tmp_path / "w2"), "status", "--porcelain").strip() == ""
    assert git("-C", str(tmp_path / "w2"), "rev-parse", "HEAD").strip() == shas[3]
    # Another flavour of checkout (full history) is not served from the depth-1 tree.
    full = checkout(CheckoutRequest(url, shas[3], tmp_path / "w3", fetch_depth=0), settings)
    assert full.via == "network"
    # Only the two most recently used trees are kept.
    checkout(CheckoutRequest(url, shas[1], tmp_path / "w4"), settings)
    assert len([p for p in settings.resolved_tree_root.iterdir() if p.is_dir()]) == 2
