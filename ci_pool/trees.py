"""The runner's cache of pristine trees: one per commit (and checkout flavour) it checked
out, served to later jobs at the same commit as an overlay or a copy, the least recently
used evicted. An entry is filled by the job's own checkout, or off the job's path by a
background ``fill`` that renames a complete tree into place."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ci_pool import defaults, overlay
from ci_pool.exceptions import CheckoutError

if TYPE_CHECKING:
    from ci_pool.git import CheckoutRequest
    from ci_pool.settings import Settings

log = logging.getLogger(__name__)

#: The background fills this process started and that have not ended yet.
_fills: set[threading.Thread] = set()
_fills_lock = threading.Lock()


def serve(entry: Path, dest: Path, layers: Path | None, min_bytes: int = 0) -> str:
    """The cached tree at ``dest``: an overlay with its upper layer in ``layers``, or a copy
    (no ``layers``, or a tree under ``min_bytes``, which copies faster than an overlay
    unmounts). Returns "overlay" or "copy"."""
    if layers is not None and min_bytes and tree_bytes(entry) < min_bytes:
        layers = None
    if layers is None:
        dest.mkdir(parents=True, exist_ok=True)
        copy_tree(entry / "tree", dest)
        return "copy"
    if dest.exists() and any(dest.iterdir()):
        raise CheckoutError(f"the checkout's directory {dest} is not empty")
    try:
        overlay.mount(entry / "tree", layers, dest)
    except OSError as exc:
        raise CheckoutError(f"mounting the workspace overlay failed: {exc}") from None
    return "overlay"


def record_bytes(entry: Path) -> None:
    """Note the size of the entry's tree (its files' bytes), read by ``tree_bytes``."""
    total = 0
    for dirpath, _dirs, files in os.walk(entry / "tree"):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    (entry / "bytes").write_text(str(total))


def tree_bytes(entry: Path) -> int:
    """The recorded size of the entry's tree; unknown counts as big."""
    try:
        return int((entry / "bytes").read_text())
    except (OSError, ValueError):
        return 1 << 62


def entry(root: Path, req: CheckoutRequest, mirror: bool) -> Path:
    # Trees checked out from a mirror carry alternates pointing at it: not interchangeable.
    flavour = (
        f"{req.repo}|{req.fetch_depth}|{req.submodules}|{req.lfs}|{mirror}|{req.filter}|"
        f"{req.cone}|{chr(0).join(req.sparse)}"
    )
    return root / f"{hashlib.sha256(flavour.encode()).hexdigest()[:16]}-{req.commit}"


def copy_tree(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["cp", "-a", "--reflink=auto", f"{src}/.", str(dest)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise CheckoutError(f"copying the cached tree failed: {proc.stderr.strip()[-1000:]}")


def evict(root: Path, keep: int) -> None:
    """Keep the ``keep`` most recently used trees; an entry in use holds a shared lock."""
    _sweep_fills(root)
    entries = sorted(
        (e for e in root.iterdir() if "." not in e.name and (e / "complete").exists()),
        key=lambda e: (e / "complete").stat().st_mtime,
        reverse=True,
    )
    # Half-written entries of a crashed runner are old and have no "complete" marker.
    stale = [
        e
        for e in root.iterdir()
        if "." not in e.name
        and e.is_dir()
        and not (e / "complete").exists()
        and time.time() - e.stat().st_mtime > 3600
    ]
    for entry in [*entries[keep:], *stale]:
        lock = entry.with_suffix(".lock")
        with open(lock, "a+b") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a job is copying it right now
            # Read under the lock: a job mounts its overlay while holding a shared one.
            if entry / "tree" in overlay.lowers_in_use():
                fcntl.flock(fh, fcntl.LOCK_UN)
                continue  # the lower layer of a running job's workspace
            # The lock file stays: unlinking it could let two processes lock different files.
            shutil.rmtree(entry, ignore_errors=True)
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fill_dir(entry: Path) -> Path:
    return entry.with_name(entry.name + defaults.TREE_FILL_SUFFIX)


def _fill_lock(entry: Path) -> Path:
    return entry.with_name(entry.name + defaults.TREE_FILL_SUFFIX + ".lock")


def fill(root: Path, entry: Path, write: Callable[[Path], None], keep: int) -> bool:
    """Make ``entry`` with ``write`` (which writes a pristine tree into the directory it is
    given): in a directory beside it, renamed into place once complete, so a filler that dies
    leaves nothing a job would use. One filler per entry at a time (a lock the kernel drops
    with its process); False when another one holds it or the entry exists already."""
    root.mkdir(parents=True, exist_ok=True)
    with open(_fill_lock(entry), "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # filling now, elsewhere
        try:
            if (entry / "complete").exists():
                return False
            made = _fill_locked(entry, write)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    evict(root, keep)
    return made


def _fill_locked(entry: Path, write: Callable[[Path], None]) -> bool:
    scratch = _fill_dir(entry)
    shutil.rmtree(scratch, ignore_errors=True)  # what a filler that died left
    scratch.mkdir()
    try:
        write(scratch / "tree")
        record_bytes(scratch)
        (scratch / "complete").touch()
        with open(entry.with_suffix(".lock"), "a+b") as fh:
            # Exclusive: no job is reading the entry's directory (a crashed runner's
            # half-written one, without a "complete" marker) while it is replaced.
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                if (entry / "complete").exists():
                    return False
                shutil.rmtree(entry, ignore_errors=True)
                os.rename(scratch, entry)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return True
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def fill_later(root: Path, entry: Path, write: Callable[[Path], None], keep: int) -> None:
    """``fill`` in a thread of its own, off the job's path; its failure is logged only (the
    next job at the commit checks out again and fills again)."""

    def run() -> None:
        started = time.monotonic()
        try:
            if fill(root, entry, write, keep):
                log.info("tree cache: filled %s in %.2fs", entry.name, time.monotonic() - started)
        except Exception as exc:
            log.warning("tree cache: filling %s failed: %s", entry.name, exc)
        finally:
            with _fills_lock:
                _fills.discard(thread)

    thread = threading.Thread(target=run, name=f"tree-fill-{entry.name[:24]}", daemon=True)
    with _fills_lock:
        _fills.add(thread)
    thread.start()


def settle(timeout: float | None = None) -> bool:
    """Wait for this process's background fills (shutdown, benchmarks); True when none is left."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _fills_lock:
            pending = next(iter(_fills), None)
        if pending is None:
            return True
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        pending.join(left)


def _sweep_fills(root: Path) -> None:
    """Remove what fillers that died left (their lock is free)."""
    for scratch in root.glob("*" + defaults.TREE_FILL_SUFFIX):
        entry = scratch.with_name(scratch.name.removesuffix(defaults.TREE_FILL_SUFFIX))
        with open(_fill_lock(entry), "a+b") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(scratch, ignore_errors=True)
            fcntl.flock(fh, fcntl.LOCK_UN)


#: The tree cache's root, resolved, by the path the settings name: resolved once per
#: process (``resolve()`` lstat()s every component of the path on each call), as
#: ``overlay.available`` probes a directory once.
_ROOTS: dict[Path, Path] = {}


def root(settings: Settings) -> Path:
    """``settings.resolved_tree_root``, resolved on its first use in this process."""
    asked = settings.tree_root or settings.home / "trees"
    found = _ROOTS.get(asked)
    if found is None:
        found = settings.resolved_tree_root
        if asked.is_absolute():  # a relative one depends on the working directory
            _ROOTS[asked] = found
    return found
