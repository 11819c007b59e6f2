"""The runner's cache of pristine trees: one per commit (and checkout flavour) it checked
out, served to later jobs at the same commit as an overlay or a copy, the least recently
used evicted."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ci_pool import overlay
from ci_pool.exceptions import CheckoutError

if TYPE_CHECKING:
    from ci_pool.git import CheckoutRequest


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
    entries = sorted(
        (e for e in root.iterdir() if (e / "complete").exists()),
        key=lambda e: (e / "complete").stat().st_mtime,
        reverse=True,
    )
    # Half-written entries of a crashed runner are old and have no "complete" marker.
    stale = [
        e
        for e in root.iterdir()
        if e.is_dir() and not (e / "complete").exists() and time.time() - e.stat().st_mtime > 3600
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
