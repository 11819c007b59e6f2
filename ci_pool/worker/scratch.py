"""Job scratch: the small per-job files of a host job (its step scripts, the event file, the
step files $GITHUB_ENV & co.) on a size-limited tmpfs the runner mounts itself, instead of
the workspace's disk, where every new file and directory costs far more CPU.

Each runner process mounts its own tmpfs (``size=job_scratch_bytes``, mode 0700, nosuid,
nodev) at ``<workspace root>/.scratch/<pid>`` the first time a job needs it, and sweeps the
mounts of processes that have gone. A job gets ``<job>-<attempt>/{scripts,files}`` in it,
0700, removed when the job's steps end. Since a process runs one job at a time, the size
limit bounds what one job can write there: a step writing past it gets "No space left on
device" and fails; the runner and its next job are unaffected.

Nothing a job or another local user could plant is followed: ``.scratch`` and each mount
point are opened with ``O_NOFOLLOW`` and must be real directories of the runner's user with
no access for others, and the tmpfs is mounted through the opened directory's fd. Where no
tmpfs can be mounted (the runner is not root, or the kernel refuses), jobs keep their files
under their attempt's directory, as before."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import stat
import threading
from pathlib import Path

from ci_pool import defaults, overlay
from ci_pool.home import pid_alive

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MS_NOSUID, _MS_NODEV = 2, 4

_lock = threading.Lock()
#: This process's scratch mount, or why there is none (by workspace root and pid).
_mounted: dict[tuple[Path, int], Path | str] = {}


def _own_private_dir(parent_fd: int, name: str) -> int:
    """An fd of the directory ``name`` in ``parent_fd``, made 0700 if missing; refused
    (OSError) if it is a symlink, not a directory, not the runner's own or open to others."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        pass
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.close(fd)
        raise OSError(errno.EPERM, f"{name} is not a private directory of the runner")
    return fd


def _mount_tmpfs(fd: int, size: int) -> None:
    libc = overlay.libc()
    target = f"/proc/self/fd/{fd}".encode()
    options = f"size={size},mode=0700,uid={os.geteuid()},gid={os.getegid()}".encode()
    if libc.mount(b"ci-pool-scratch", target, b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs: {os.strerror(err)}")


def sweep(workspace_root: Path, keep: int | None = None, mine: bool = False) -> list[str]:
    """Unmount and remove the scratch mounts of runner processes that have gone (all but
    ``keep``'s; with ``mine``, this process's too); the pids swept."""
    base = workspace_root / defaults.SCRATCH_DIR
    swept: list[str] = []
    try:
        fd = os.open(base, _DIR_FLAGS)  # a symlink planted as ``.scratch`` is not listed
    except OSError:
        return swept
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return swept
        for name in os.listdir(fd):
            if not name.isdigit() or int(name) == keep:
                continue
            if pid_alive(int(name)) and not (mine and int(name) == os.getpid()):
                continue
            if overlay.unmount_under(base / name):
                continue
            shutil.rmtree(name, ignore_errors=True, dir_fd=fd)
            swept.append(name)
    finally:
        os.close(fd)
    return swept


def release(workspace_root: Path) -> None:
    """At the runner's stop: unmount this process's scratch and those of its pool processes,
    which have ended by then."""
    _mounted.pop((workspace_root, os.getpid()), None)
    sweep(workspace_root, mine=True)


def runner_scratch(workspace_root: Path, size: int) -> Path | None:
    """This process's scratch tmpfs (mounted at first use), or None where none can be."""
    key = (workspace_root, os.getpid())
    found = _mounted.get(key)
    if found is None:
        with _lock:
            found = _mounted.get(key)
            if found is None:
                found = _mounted[key] = _mount(workspace_root, size)
                if isinstance(found, str):
                    log.warning("job scratch on the workspace's disk: %s", found)
    return found if isinstance(found, Path) else None


def _mount(workspace_root: Path, size: int) -> Path | str:
    """The mounted scratch, or why not."""
    if os.geteuid() != 0:
        return "the runner is not root (it cannot mount a size-limited tmpfs)"
    pid = os.getpid()
    sweep(workspace_root, keep=pid)
    base = workspace_root / defaults.SCRATCH_DIR
    fds: list[int] = []
    try:
        workspace_root.mkdir(parents=True, exist_ok=True)
        fds.append(os.open(workspace_root, _DIR_FLAGS))
        fds.append(_own_private_dir(fds[-1], defaults.SCRATCH_DIR))
        point = base / str(pid)
        overlay.unmount_under(point)  # a process of this pid before (a restarted container)
        shutil.rmtree(str(pid), ignore_errors=True, dir_fd=fds[-1])
        fds.append(_own_private_dir(fds[-1], str(pid)))
        _mount_tmpfs(fds[-1], size)
    except OSError as exc:
        return f"{base}: {exc.strerror or exc}"
    finally:
        for fd in fds:
            os.close(fd)
    return point


def job_dirs(scratch: Path, name: str) -> Path | None:
    """A fresh 0700 directory ``name`` with ``scripts`` and ``files`` in the scratch (what
    had the name is removed, never followed), or None when it cannot be made."""
    try:
        fd = os.open(scratch, _DIR_FLAGS)
    except OSError:
        return None
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=fd)
        except FileExistsError:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, ignore_errors=True, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)
            os.mkdir(name, 0o700, dir_fd=fd)
        job = os.open(name, _DIR_FLAGS, dir_fd=fd)
        try:
            os.mkdir("scripts", 0o700, dir_fd=job)
            os.mkdir("files", 0o700, dir_fd=job)
        finally:
            os.close(job)
    except OSError as exc:
        log.warning("job scratch %s/%s: %s; using the workspace's disk", scratch, name, exc)
        return None
    finally:
        os.close(fd)
    return scratch / name


def remove(job_dir: Path | None) -> None:
    """Remove a job's scratch directory, if it has one (links are removed, never followed)."""
    if job_dir is not None:
        shutil.rmtree(job_dir, ignore_errors=True)
