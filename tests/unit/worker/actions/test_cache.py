"""The runner's action cache: one directory per commit, fetched once under a lock even by
concurrent jobs, never half-written, bounded in size; a cached commit is never fetched
again (real git, a repository on this machine)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from ci_pool.embedded import make_repo
from ci_pool.exceptions import ActionError
from ci_pool.git import GitRunner
from ci_pool.worker.actions.cache import ActionCache

FILES = {
    "action.yml": "runs:\n  using: composite\n  steps:\n    - run: true\n",
    "big.txt": "x" * 4096,
}


@pytest.fixture
def repo(tmp_path: Path) -> tuple[str, str]:
    sha = make_repo(tmp_path / "forge" / "setup.git", FILES)
    return f"file://{tmp_path / 'forge' / 'setup.git'}", sha


def test_concurrent_jobs_fetch_a_commit_once_and_share_it(
    tmp_path: Path, repo: tuple[str, str]
) -> None:
    url, sha = repo
    cache = ActionCache(tmp_path / "cache", 1024**2)
    # What a fetch that died half-way left behind is cleared by the next one.
    (tmp_path / "cache" / f".fetch-{sha[:12]}-dead" / "tree").mkdir(parents=True)
    results: list[tuple[Path, bool]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def job() -> None:
        start.wait()
        try:
            results.append(cache.get(GitRunner({}, {}), url, sha, "someorg/setup@v1"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(fetched for _, fetched in results) == [False, False, False, True]
    assert {path for path, _ in results} == {tmp_path / "cache" / sha}
    entry = tmp_path / "cache" / sha
    assert (entry / "action.yml").read_text() == FILES["action.yml"]
    assert not (entry / ".git").exists()
    # Nothing half-written is left: only the entry, its size and its lock file.
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        sha,
        f"{sha}.bytes",
        f"{sha}.lock",
    ]

    # Cached: taken again without the server (the repository is gone).
    shutil.rmtree(tmp_path / "forge")
    assert cache.get(GitRunner({}, {}), url, sha, "someorg/setup@v1") == (entry, False)


def test_an_action_over_the_size_limit_is_refused_and_nothing_is_kept(
    tmp_path: Path, repo: tuple[str, str]
) -> None:
    url, sha = repo
    cache = ActionCache(tmp_path / "cache", 2048)
    with pytest.raises(ActionError) as err:
        cache.get(GitRunner({}, {}), url, sha, "someorg/setup@v1")
    assert "action someorg/setup@v1: its files take over 2048 bytes (action_max_bytes)" in str(
        err.value
    )
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{sha}.lock"]


def test_a_commit_the_server_does_not_have_is_a_clear_error(
    tmp_path: Path, repo: tuple[str, str]
) -> None:
    url, _sha = repo
    missing = "0123456789abcdef0123456789abcdef01234567"
    cache = ActionCache(tmp_path / "cache", 1024**2)
    with pytest.raises(ActionError) as err:
        cache.get(GitRunner({}, {}), url, missing, "someorg/setup@" + missing)
    assert f"action someorg/setup@{missing}: fetching {missing} failed: git fetch failed" in str(
        err.value
    )
    with pytest.raises(ActionError, match="is not a commit id"):
        cache.get(GitRunner({}, {}), url, "../../etc", "x")


def actions(tmp_path: Path, n: int) -> list[tuple[str, str]]:
    """``n`` action repositories with one commit each (about 4 KiB of files)."""
    out = []
    for i in range(n):
        sha = make_repo(tmp_path / "forge" / f"a{i}.git", {**FILES, "n.txt": f"{i}\n"})
        out.append((f"file://{tmp_path / 'forge' / f'a{i}.git'}", sha))
    return out


def test_the_least_recently_used_commits_are_evicted_past_the_count(tmp_path: Path) -> None:
    a, b, c, d = actions(tmp_path, 4)
    cache = ActionCache(tmp_path / "cache", 1024**2, keep_count=2)
    git = GitRunner({}, {})
    for url, sha in (a, b):
        with cache.use(git, url, sha, "x") as (_, fetched):
            assert fetched
    with cache.use(git, *a, "x") as (_, fetched):  # a used again: b is now the oldest
        assert not fetched
    with cache.use(git, *c, "x"):
        pass
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()) == sorted(
        [a[1], c[1]]
    )
    with cache.use(git, *b, "x") as (_, fetched):  # fetched again, a goes
        assert fetched
    assert not (tmp_path / "cache" / a[1]).exists()
    # an entry a job is copying is never evicted, even the least recently used
    held = threading.Event()
    done = threading.Event()

    def job() -> None:
        with cache.use(git, *c, "x"):
            held.set()
            done.wait(30)

    t = threading.Thread(target=job)
    t.start()
    assert held.wait(30)
    os.utime(tmp_path / "cache" / c[1], (1, 1))  # the oldest of all
    with cache.use(git, *d, "x"):
        pass
    assert (tmp_path / "cache" / c[1] / "action.yml").is_file()  # over the count for now
    done.set()
    t.join(30)
    with cache.use(git, *a, "x"):  # the next fetch trims it: c and b were the oldest
        pass
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()) == sorted(
        [a[1], d[1]]
    )


def test_the_cache_is_kept_under_its_bytes_bound(tmp_path: Path) -> None:
    a, b, c = actions(tmp_path, 3)
    cache = ActionCache(tmp_path / "cache", 1024**2, keep_bytes=10_000)  # two fit, not three
    git = GitRunner({}, {})
    for url, sha in (a, b, c):
        with cache.use(git, url, sha, "x"):
            pass
    kept = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir())
    assert kept == sorted([b[1], c[1]])
    assert sum(int((tmp_path / "cache" / f"{s}.bytes").read_text()) for s in kept) <= 10_000
