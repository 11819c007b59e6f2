"""Overlay workspaces: a job's workspace as an overlayfs whose lower layer is a pristine
cached tree and whose upper layer is the job's own, so a second job at the same commit gets
its workspace in one mount, whatever the tree's size.

Writes, deletions, chmods and symlinks a job makes land in its upper layer only; the lower
layer is never written. Mounting needs root (CAP_SYS_ADMIN) and a kernel with overlayfs;
``available()`` finds out once per directory, and callers fall back to a copy without it."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_MNT_DETACH = 2
_MOUNTINFO = "/proc/self/mountinfo"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_probed: dict[Path, str | None] = {}
_probe_lock = threading.Lock()


def libc() -> ctypes.CDLL:
    """The C library, with errno kept (for mount and umount2)."""
    return _libc


class OverlayError(OSError):
    """A mount or unmount the kernel refused."""


def _mount(lower: Path, upper: Path, work: Path, merged: Path) -> None:
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    for path in (lower, upper, work):
        if any(c in str(path) for c in ",:\\"):
            raise OverlayError(errno.EINVAL, f"overlay: unusable path {path}")
    rc = _libc.mount(b"overlay", os.fsencode(merged), b"overlay", 0, options.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise OverlayError(err, f"mount overlay on {merged}: {os.strerror(err)}")


def mount(lower: Path, layers: Path, merged: Path) -> None:
    """Mount ``lower`` read-only under a fresh upper layer in ``layers`` at ``merged``."""
    upper, work = layers / "upper", layers / "work"
    # Plain os calls, one each where the parent exists (the job's directory): pathlib's
    # and os.makedirs' stat of the parent cost more CPU than the mount itself.
    try:
        os.mkdir(upper)
    except FileNotFoundError:
        os.makedirs(upper)
    os.mkdir(work)
    try:
        os.mkdir(merged)
    except (FileExistsError, FileNotFoundError):
        os.makedirs(merged, exist_ok=True)  # raises as before when it is not a directory
    _mount(lower, upper, work, merged)


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 4 <= len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _escape(path: str) -> str:
    """``path`` as mountinfo writes it."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


def mounts(containing: str = "") -> list[tuple[str, str, str]]:
    """(mount point, filesystem type, super options) of every mount this process sees
    (with ``containing``: of the lines holding that text as mountinfo writes it, the
    others not even parsed)."""
    found = []
    needle = _escape(containing)
    try:
        with open(_MOUNTINFO, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if needle not in line:
                    continue
                left, _, right = line.partition(" - ")
                fields, tail = left.split(), right.split()
                if len(fields) < 5 or len(tail) < 3:
                    continue
                found.append((_unescape(fields[4]), tail[0], _unescape(tail[2])))
    except OSError:
        return []
    return found


def lowers_in_use() -> set[Path]:
    """The lower layers of the overlays mounted now."""
    used: set[Path] = set()
    for _point, fstype, options in mounts():
        if fstype != "overlay":
            continue
        for opt in options.split(","):
            if opt.startswith("lowerdir="):
                used.update(Path(p) for p in opt[len("lowerdir=") :].split(":"))
    return used


def mounted_under(root: Path) -> list[Path]:
    """Mount points at or below ``root``, deepest first."""
    base = str(root)
    points = [
        Path(point)
        for point, _fstype, _opts in mounts(containing=base)
        if point == base or point.startswith(base.rstrip("/") + "/")
    ]
    return sorted(points, key=lambda p: len(p.parts), reverse=True)


def unmount_under(root: Path) -> list[Path]:
    """Unmount everything mounted at or below ``root`` (a job's directory): deepest first,
    lazily where a process still holds it. Returns what could not be unmounted."""
    left: list[Path] = []
    for point in mounted_under(root):
        if _libc.umount2(os.fsencode(point), 0) == 0:
            continue
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            continue  # no longer mounted
        if _libc.umount2(os.fsencode(point), _MNT_DETACH) != 0:
            left.append(point)
    return left


def available(scratch: Path) -> str | None:
    """None when an overlay can be mounted in ``scratch`` (probed once per directory,
    which is made then if missing), else why not."""
    if scratch in _probed:  # asked before under this very path: no resolve() again
        return _probed[scratch]
    with _probe_lock:
        if scratch in _probed:
            return _probed[scratch]
        try:
            os.makedirs(scratch, exist_ok=True)  # made here, on the first question only
        except OSError as exc:
            return f"{scratch}: {exc.strerror or exc}"
        asked, scratch = scratch, scratch.resolve()
        if scratch in _probed:
            _probed[asked] = _probed[scratch]
            return _probed[scratch]
        reason = _probe(scratch)
        _probed[scratch] = _probed[asked] = reason
    if reason is not None:
        log.warning("overlay workspaces unavailable (%s); cached trees are copied", reason)
    return reason


def _probe(scratch: Path) -> str | None:
    if os.geteuid() != 0:
        return "the runner is not root"
    probe = scratch / f".overlay-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        shutil.rmtree(probe, ignore_errors=True)
        (probe / "lower").mkdir(parents=True)
        (probe / "lower" / "f").write_text("x")
        mount(probe / "lower", probe / "layers", probe / "merged")
        try:
            (probe / "merged" / "f").write_text("y")
            if (probe / "lower" / "f").read_text() != "x":
                return "overlayfs wrote through to its lower layer"
        finally:
            unmount_under(probe / "merged")
        return None
    except OSError as exc:
        return f"overlayfs: {exc.strerror or exc}"
    finally:
        shutil.rmtree(probe, ignore_errors=True)
