"""Files a job leaves behind, read and written without trusting the job.

A job can replace anything in a directory it can write with a symlink, a FIFO, a device or
a huge file. So every path below such a directory is resolved one component at a time from
a directory fd with ``O_NOFOLLOW`` (what runc does with ``openat2(RESOLVE_BENEATH)``), only
regular files are read, opens never block, and every read stops at a cap. The runner writes
new files only with ``O_CREAT | O_EXCL | O_NOFOLLOW``, so it never writes through a name the
job made.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import IO, BinaryIO

from ci_pool.exceptions import JobFileRefused

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


def _kind(mode: int) -> str:
    """What a non-regular file is, in the words of the error a user reads."""
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def safe_parts(rel: str) -> list[str] | None:
    """The components of a relative path that stays inside its directory (no ``..``,
    nothing absolute, no NUL), or None."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or rel.startswith("/") or "\0" in rel:
        return None
    return parts


def _parts(rel: str) -> list[str]:
    parts = safe_parts(rel)
    if parts is None:
        raise JobFileRefused(rel, "is not a path inside the directory")
    return parts


class JobDir:
    """A directory the job can write, held open: renaming or replacing its path later
    changes nothing about what the runner reads or writes through it."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.fd = os.open(path, _DIR_FLAGS)
        except OSError as exc:
            raise JobFileRefused(
                str(path), f"cannot be opened as a directory ({exc.strerror})"
            ) from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> JobDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _parent(self, rel: str) -> tuple[int, str]:
        """An fd of the directory holding ``rel`` (the caller closes it unless it is
        ``self.fd``) and the final name; no symlink is followed on the way."""
        parts = _parts(rel)
        fd = self.fd
        for i, name in enumerate(parts[:-1]):
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if fd != self.fd:
                    os.close(fd)
                where = "/".join(parts[: i + 1])
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise JobFileRefused(
                        rel, f"{where} is not a directory (symlinks are not followed)"
                    ) from None
                raise JobFileRefused(rel, f"cannot be opened ({exc.strerror})") from None
            if fd != self.fd:
                os.close(fd)
            fd = nfd
        return fd, parts[-1]

    def open_regular(self, rel: str) -> tuple[int, os.stat_result]:
        """An fd of the regular file ``rel`` below this directory, and its status."""
        parent, name = self._parent(rel)
        try:
            try:
                before = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except OSError as exc:
                raise JobFileRefused(rel, f"cannot be read ({exc.strerror})") from None
            # Checked before opening too: opening a device or a FIFO can act on it.
            if not stat.S_ISREG(before.st_mode):
                raise JobFileRefused(rel, f"is {_kind(before.st_mode)}, not a regular file")
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=parent)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise JobFileRefused(rel, "is a symbolic link, not a regular file") from None
                raise JobFileRefused(rel, f"cannot be read ({exc.strerror})") from None
        finally:
            if parent != self.fd:
                os.close(parent)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise JobFileRefused(rel, f"is {_kind(st.st_mode)}, not a regular file")
        return fd, st

    def readlink(self, rel: str) -> str | None:
        """The target of ``rel`` if it is a symlink (never followed), else None."""
        parent, name = self._parent(rel)
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            return os.readlink(name, dir_fd=parent) if stat.S_ISLNK(st.st_mode) else None
        except OSError as exc:
            raise JobFileRefused(rel, f"cannot be read ({exc.strerror})") from None
        finally:
            if parent != self.fd:
                os.close(parent)

    def _empty_here(self, rel: str) -> bool:
        """Whether ``rel``, a plain name in this directory, is an empty regular file: read
        by one ``fstatat`` without following a link (most step files stay empty)."""
        if "/" in rel or rel in ("", ".", ".."):
            return False
        try:
            st = os.stat(rel, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False  # the full path below says why
        return stat.S_ISREG(st.st_mode) and st.st_size == 0

    def read(self, rel: str, cap: int) -> bytes:
        """The whole content of the regular file ``rel``, refused past ``cap`` bytes."""
        if self._empty_here(rel):
            return b""
        fd, _st = self.open_regular(rel)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(cap + 1)
        if len(data) > cap:
            raise JobFileRefused(rel, f"is larger than the {cap} byte limit")
        return data

    def copy(self, rel: str, out: BinaryIO, limit: int) -> tuple[int, str]:
        """Copy the regular file ``rel`` to ``out`` from the fd it was opened as, hashing
        the very bytes copied; stops past ``limit`` bytes. Returns (size, sha256): a size
        over ``limit`` means the file was cut there."""
        digest = hashlib.sha256()
        if self._empty_here(rel):
            return 0, digest.hexdigest()
        fd, _st = self.open_regular(rel)
        copied = 0
        with os.fdopen(fd, "rb") as fh:
            while copied <= limit and (block := fh.read(min(_CHUNK, limit + 1 - copied))):
                copied += len(block)
                out.write(block)
                digest.update(block)
        return copied, digest.hexdigest()

    def create(self, rel: str, data: bytes = b"", mode: int = 0o644) -> None:
        """Write a new file; refused if anything (a symlink the job made) has that name."""
        parent, name = self._parent(rel)
        try:
            try:
                fd = os.open(name, _CREATE_FLAGS, mode, dir_fd=parent)
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    raise JobFileRefused(
                        rel, "already exists (made by the job); not written"
                    ) from None
                raise JobFileRefused(rel, f"cannot be written ({exc.strerror})") from None
        finally:
            if parent != self.fd:
                os.close(parent)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)

    def makedirs(self, rel: str) -> int:
        """An fd of the directory ``rel`` below this one (the caller closes it), created
        component by component; a symlink or a file on the way is refused, never followed."""
        fd = os.dup(self.fd)
        for name in _parts(rel) if rel not in ("", ".") else []:
            try:
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise JobFileRefused(
                        rel, f"{name} is not a directory (symlinks are not followed)"
                    ) from None
                raise JobFileRefused(rel, f"cannot be created ({exc.strerror})") from None
            os.close(fd)
            fd = nfd
        return fd

    def _clear(self, parent: int, name: str, rel: str) -> None:
        """Remove what has ``name`` in ``parent`` unless it is a directory (a symlink is
        removed, never followed)."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise JobFileRefused(rel, "is a directory; not replaced")
        os.unlink(name, dir_fd=parent)

    def write_file(
        self, rel: str, src: IO[bytes], limit: int, mode: int = 0o644
    ) -> tuple[int, str]:
        """Write ``src`` (at most ``limit`` bytes past which it stops) as the file ``rel``,
        creating its directories; what had that name (a file, a symlink) is replaced.
        Returns (size, sha256) of what was written."""
        parts = _parts(rel)
        parent = self.makedirs("/".join(parts[:-1]))
        try:
            self._clear(parent, parts[-1], rel)
            try:
                fd = os.open(parts[-1], _CREATE_FLAGS, mode, dir_fd=parent)
            except OSError as exc:
                raise JobFileRefused(rel, f"cannot be written ({exc.strerror})") from None
        finally:
            os.close(parent)
        digest = hashlib.sha256()
        written = 0
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            while written <= limit and (block := src.read(min(_CHUNK, limit + 1 - written))):
                written += len(block)
                out.write(block)
                digest.update(block)
        return written, digest.hexdigest()

    def symlink(self, rel: str, target: str) -> None:
        """Make ``rel`` a symlink to ``target`` (which the caller has checked), replacing a
        file or symlink of that name."""
        parts = _parts(rel)
        parent = self.makedirs("/".join(parts[:-1]))
        try:
            self._clear(parent, parts[-1], rel)
            os.symlink(target, parts[-1], dir_fd=parent)
        except OSError as exc:
            raise JobFileRefused(rel, f"cannot be made a link ({exc.strerror})") from None
        finally:
            os.close(parent)

    def replace(self, rel: str, mode: int = 0o644) -> None:
        """Remove whatever has the name ``rel`` (a symlink is removed, never followed) and
        create it again empty; refused if the job recreates it in between."""
        if "/" not in rel and rel not in ("", ".", ".."):
            # Mostly nothing has the name yet: one exclusive create, no unlink first.
            try:
                fd = os.open(rel, _CREATE_FLAGS, mode, dir_fd=self.fd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise JobFileRefused(rel, f"cannot be written ({exc.strerror})") from None
            else:
                os.fchmod(fd, mode)
                os.close(fd)
                return
        parent, name = self._parent(rel)
        try:
            try:
                os.unlink(name, dir_fd=parent)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise JobFileRefused(rel, f"cannot be replaced ({exc.strerror})") from None
        finally:
            if parent != self.fd:
                os.close(parent)
        self.create(rel, b"", mode)
