"""The runner's cache of fetched actions: one directory per commit (``<root>/<sha>/``, the
repository's tree at that commit), shared by the jobs of every worker process on the host.

A commit's content never changes, so a cached commit is never fetched again. The first job
that needs one fetches it under an exclusive lock on ``<root>/<sha>.lock`` into a temporary
directory and renames it into place: a directory named by a commit is always complete, and
a job that waits on the lock finds it there.

The cache is bounded (``actions_cache_max_bytes``, ``actions_cache_max_count``): after a
fetch the least recently used commits are evicted. A job uses an entry only while it copies
it into its own scripts directory (``use``), under a shared lock on the entry's lock file;
eviction takes that lock exclusively without waiting and skips an entry it cannot take, so
an entry a job is fetching or copying is never removed."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ci_pool import defaults
from ci_pool.core.names import is_sha
from ci_pool.exceptions import ActionError
from ci_pool.git import GitRunner, git_error


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing; never removed, so two
    processes can never lock different files of the same name)."""
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def tree_size(root: Path, limit: int) -> int:
    """Bytes of the regular files below ``root`` (links not followed); stops past ``limit``."""
    total = 0
    for top, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(top, name))
            total += st.st_size
            if total > limit:
                return total
    return total


@contextmanager
def shared(path: Path) -> Iterator[None]:
    """Hold a shared lock on ``path`` (readers of a cache entry)."""
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class ActionCache:
    """Fetched actions by commit under ``root``; none larger than ``max_bytes``, at most
    ``keep_bytes`` and ``keep_count`` of them all (least recently used evicted)."""

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        timeout: float = defaults.ACTION_FETCH_TIMEOUT,
        *,
        keep_bytes: int = defaults.ACTIONS_CACHE_MAX_BYTES,
        keep_count: int = defaults.ACTIONS_CACHE_MAX_COUNT,
    ):
        self.root = root
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.keep_bytes = keep_bytes
        self.keep_count = keep_count

    @contextmanager
    def use(self, git: GitRunner, url: str, sha: str, label: str) -> Iterator[tuple[Path, bool]]:
        """``get``, then hold the entry (a shared lock: not evicted) while the caller
        copies it; its use time is recorded for eviction, and the cache is trimmed after."""
        fetched = False
        for _ in range(3):
            entry, now_fetched = self.get(git, url, sha, label)
            fetched = fetched or now_fetched
            with shared(self.root / f"{sha}.lock"):
                if not entry.is_dir():
                    continue  # evicted between the fetch and the lock: fetch it again
                now = time.time_ns()  # finer than the file system's own clock
                os.utime(entry, ns=(now, now))
                yield entry, fetched
                break
        else:
            raise ActionError(f"action {label}: its cache entry {sha} keeps being evicted")
        if fetched:
            self.evict(keep=sha)

    def evict(self, keep: str = "") -> list[str]:
        """Remove the least recently used entries past the bounds (never ``keep``, nor an
        entry being fetched or copied); the commits removed."""
        entries = sorted(
            (e for e in self.root.iterdir() if e.is_dir() and is_sha(e.name)),
            key=lambda e: e.stat().st_mtime,
            reverse=True,
        )
        count, total, removed = 0, 0, []
        for entry in entries:
            size = _entry_bytes(entry)
            if entry.name == keep or (count < self.keep_count and total + size <= self.keep_bytes):
                count, total = count + 1, total + size
                continue
            if self._remove(entry):
                removed.append(entry.name)
            else:
                count, total = count + 1, total + size
        return removed

    def _remove(self, entry: Path) -> bool:
        """Remove ``entry`` unless a job holds it (the lock file stays)."""
        with open(self.root / f"{entry.name}.lock", "a+b") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            try:
                shutil.rmtree(entry, ignore_errors=True)
                (self.root / f"{entry.name}.bytes").unlink(missing_ok=True)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return True

    def entry(self, sha: str) -> Path:
        if not is_sha(sha):
            raise ActionError(f"{sha!r} is not a commit id")
        return self.root / sha

    def get(self, git: GitRunner, url: str, sha: str, label: str) -> tuple[Path, bool]:
        """The tree of ``url`` at ``sha``, and whether this call fetched it (False: it was
        cached). ``label`` names the action in errors."""
        entry = self.entry(sha)
        if entry.is_dir():
            return entry, False
        self.root.mkdir(parents=True, exist_ok=True)
        with locked(self.root / f"{sha}.lock"):
            if entry.is_dir():  # fetched by another job while this one waited
                return entry, False
            # Under the lock, a temporary directory of this commit is a dead fetch's.
            for stale in self.root.glob(f".fetch-{sha[:12]}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".fetch-{sha[:12]}-", dir=self.root))
            try:
                tree = self._fetch(git, url, sha, tmp, label)
                size = tree_size(tree, self.max_bytes)
                (self.root / f"{sha}.bytes").write_text(str(size))
                os.rename(tree, entry)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return entry, True

    def _fetch(self, git: GitRunner, url: str, sha: str, tmp: Path, label: str) -> Path:
        """``sha`` checked out under ``tmp`` (without its .git); ActionError when it fails
        or is larger than ``max_bytes``."""
        work = tmp / "tree"
        where = str(work)
        try:
            git.run("init", "-q", "--template=", where)
            git.run(
                "-C", where, "fetch", "-q", "--no-tags", "--depth=1",
                "--end-of-options", url, sha, timeout=self.timeout,
            )  # fmt: skip
            self._bound(work / ".git" / "objects", label, "its git objects")
            git.run(
                "-C", where, "-c", "advice.detachedHead=false",
                "checkout", "-q", "--detach", "FETCH_HEAD",
            )  # fmt: skip
            head = git.run("-C", where, "rev-parse", "HEAD").stdout.strip()
        except ActionError:
            raise
        except Exception as exc:  # CheckoutError: git failed or timed out
            raise ActionError(f"action {label}: fetching {sha} failed: {exc}") from None
        if head != sha:
            raise ActionError(f"action {label}: the server sent {head}, not {sha}")
        shutil.rmtree(work / ".git")
        self._bound(work, label, "its files")
        return work

    def _bound(self, path: Path, label: str, what: str) -> None:
        size = tree_size(path, self.max_bytes)
        if size > self.max_bytes:
            raise ActionError(
                f"action {label}: {what} take over {self.max_bytes} bytes (action_max_bytes); "
                "use a smaller action or ask the operator to raise the limit"
            )


def _entry_bytes(entry: Path) -> int:
    """Bytes of a cache entry, as recorded when it was fetched (else counted now)."""
    try:
        return int((entry.parent / f"{entry.name}.bytes").read_text())
    except (OSError, ValueError):
        return tree_size(entry, 1 << 62)


def copy_tree(src: Path, dest: Path) -> None:
    """Copy a cached action where a job reads it (copy-on-write where the filesystem can);
    the job never writes the cache itself."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["cp", "-a", "--reflink=auto", "--", f"{src}/.", str(tmp)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ActionError(f"copying the action {src.name} failed: {git_error(proc.stderr)}")
    os.rename(tmp, dest)
