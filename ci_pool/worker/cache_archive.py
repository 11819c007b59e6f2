"""Cache archives: a tar of workspace files, zstd- or gzip-compressed.

Packing reads the workspace like artifact collection does (``worker.artifacts``: names
listed by the globs, each file opened without following a symlink); a symlink is kept as
a symlink when its target stays inside the workspace. Unpacking treats the archive as
untrusted: every member name must stay inside the workspace (no absolute name, no ``..``),
only regular files, directories and symlinks whose target stays inside are restored
(never a device, FIFO or hard link), every directory on the way is opened without
following a symlink, and the bytes and files restored are capped."""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import zstandard

from ci_pool.exceptions import ActionError, JobFileRefused
from ci_pool.worker import artifacts
from ci_pool.worker.jobfiles import JobDir, safe_parts

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class Packed:
    files: int
    bytes: int
    #: What was left out, and why (a symlink out of the workspace, an unreadable file).
    skipped: list[str]


def _inside(rel: str, target: str) -> bool:
    """Whether a symlink at ``rel`` pointing to ``target`` stays inside the workspace."""
    if not target or target.startswith("/") or "\0" in target:
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    return joined != ".." and not joined.startswith("../")


@contextmanager
def _writer(out: IO[bytes], compression: str) -> Iterator[tarfile.TarFile]:
    if compression == "zstd":
        with zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False) as zout:
            with tarfile.open(fileobj=zout, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                yield tar
    else:
        # Level 6 (gzip's own default): tarfile's 9 takes several times longer for ~1% less.
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as gout:
            with tarfile.open(fileobj=gout, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                yield tar


def pack(
    workspace: Path,
    sel: artifacts.Selection,
    out: IO[bytes],
    compression: str,
    max_bytes: int,
) -> Packed:
    """Write the files ``sel`` selects (names relative to the workspace) as an archive to
    ``out``; ActionError past ``max_bytes`` or ``sel.max_files``."""
    root = workspace.resolve()
    files = total = 0
    skipped: list[str] = []
    with JobDir(root) as wdir, _writer(out, compression) as tar:
        for rel in artifacts.selected_names(root, sel):
            if sel.max_files is not None and files >= sel.max_files:
                raise ActionError(f"more than {sel.max_files} files to cache; not saved")
            try:
                link = wdir.readlink(rel)
            except JobFileRefused as exc:
                skipped.append(str(exc))
                continue
            if link is not None:
                if not _inside(rel, link):
                    skipped.append(f"{rel}: a symlink to {link!r}, outside the workspace")
                    continue
                info = tarfile.TarInfo(rel)
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, link, 0o777
                tar.addfile(info)
                files += 1
                continue
            try:
                fd, st = wdir.open_regular(rel)
            except JobFileRefused as exc:
                skipped.append(str(exc))
                continue
            if total + st.st_size > max_bytes:
                raise ActionError(
                    f"the paths to cache hold more than the cache_entry_max_bytes limit of "
                    f"{max_bytes} bytes; not saved"
                )
            with open(fd, "rb") as fh:
                info = tarfile.TarInfo(rel)
                info.size, info.mode, info.mtime = st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime
                tar.addfile(info, _Exactly(fh, st.st_size))
            files += 1
            total += st.st_size
    return Packed(files, total, skipped)


class _Exactly(io.RawIOBase):
    """A file read as exactly ``size`` bytes (a file the job grows meanwhile is cut, one
    it shrinks is padded with zeros), so the tar header stays true."""

    def __init__(self, fh: IO[bytes], size: int):
        self.fh, self.left = fh, size

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            return 0
        want = min(len(buf), self.left)
        data = self.fh.read(want) or b"\0" * want
        buf[: len(data)] = data
        self.left -= len(data)
        return len(data)


@contextmanager
def _reader(src: IO[bytes]) -> Iterator[tarfile.TarFile]:
    head = src.read(4)
    src.seek(0)
    if head == _ZSTD_MAGIC:
        with zstandard.ZstdDecompressor().stream_reader(src, closefd=False) as zin:
            with tarfile.open(fileobj=zin, mode="r|") as tar:
                yield tar
    elif head[:2] == _GZIP_MAGIC:
        with tarfile.open(fileobj=src, mode="r|gz") as tar:
            yield tar
    else:
        raise ActionError("the cache entry is not a zstd or gzip archive; not restored")


def unpack(src: IO[bytes], workspace: Path, max_bytes: int, max_files: int) -> tuple[int, int]:
    """Restore an archive into the workspace; (files, bytes) restored. ActionError for a
    member that is refused (the restore stops there) or past the limits."""
    files = total = 0
    try:
        with JobDir(workspace.resolve()) as wdir, _reader(src) as tar:
            for member in tar:
                files += 1
                if files > max_files:
                    raise ActionError(f"the cache entry holds more than {max_files} files")
                total += _restore(tar, member, wdir, max_bytes - total)
    except (tarfile.TarError, zstandard.ZstdError, EOFError, OSError) as exc:
        raise ActionError(f"the cache entry is not a readable archive ({exc})") from None
    return files, total


def _restore(tar: tarfile.TarFile, member: tarfile.TarInfo, wdir: JobDir, left: int) -> int:
    """One archive member written into the workspace; the bytes it took."""
    name = member.name
    parts = safe_parts(name)
    if parts is None:
        if member.isdir() and name.strip("/") in ("", "."):
            return 0
        raise ActionError(f"cache entry member {name!r} leaves the workspace; not restored")
    rel = "/".join(parts)
    try:
        if member.isdir():
            os.close(wdir.makedirs(rel))
            return 0
        if member.issym():
            if not _inside(rel, member.linkname):
                raise ActionError(
                    f"cache entry member {name!r} links to {member.linkname!r}, outside the "
                    "workspace; not restored"
                )
            wdir.symlink(rel, member.linkname)
            return 0
        if not member.isreg():
            raise ActionError(
                f"cache entry member {name!r} is {_kind(member)}; only files, directories and "
                "symlinks are restored"
            )
        if member.size > left:
            raise ActionError("the cache entry holds more than the cache_entry_max_bytes limit")
        fh = tar.extractfile(member)
        assert fh is not None
        mode = 0o755 if member.mode & 0o111 else 0o644
        size, _sha = wdir.write_file(rel, fh, member.size, mode)
        return size
    except JobFileRefused as exc:
        raise ActionError(f"cache entry member {name!r}: {exc}; not restored") from None


def _kind(member: tarfile.TarInfo) -> str:
    if member.islnk():
        return "a hard link"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a FIFO"
    return "not a regular file"
