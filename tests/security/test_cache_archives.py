"""Restoring a cache entry treats the archive as untrusted: nothing lands outside the
workspace (absolute names, ``..``, symlinks out, symlinks the job planted), no device,
FIFO or hard link is made, and the size and file count are capped."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from ci_pool.exceptions import ActionError
from ci_pool.worker import cache_archive


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, len(data), link, 0o644
    return info, data


def _archive(*members: tuple, compression: str = "zstd") -> io.BytesIO:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    body = raw.getvalue()
    if compression == "zstd":
        body = zstandard.ZstdCompressor().compress(body)
    else:
        import gzip

        body = gzip.compress(body)
    return io.BytesIO(body)


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    workspace, outside = tmp_path / "ws", tmp_path / "outside"
    workspace.mkdir()
    outside.mkdir()
    (outside / "keep.txt").write_text("untouched\n")
    return workspace, outside


def _unpack(src: io.BytesIO, workspace: Path, max_bytes: int = 1 << 20, files: int = 100) -> None:
    cache_archive.unpack(src, workspace, max_bytes, files)


def _outside_unchanged(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert (outside / "keep.txt").read_text() == "untouched\n"


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_absolute_and_dotdot_names_are_refused(places: tuple[Path, Path], compression: str) -> None:
    workspace, outside = places
    for name in (str(outside / "evil.txt"), "../outside/evil.txt", "a/../../outside/evil.txt"):
        with pytest.raises(ActionError, match="leaves the workspace; not restored"):
            _unpack(_archive(_member(name, data=b"x"), compression=compression), workspace)
    _outside_unchanged(outside)
    assert list(workspace.iterdir()) == []


def test_symlinks_pointing_outside_are_refused(places: tuple[Path, Path]) -> None:
    workspace, outside = places
    for target in (str(outside), "../outside", "sub/../../outside", "/etc/passwd"):
        with pytest.raises(ActionError, match="outside the workspace; not restored"):
            _unpack(_archive(_member("link", tarfile.SYMTYPE, link=target)), workspace)
    assert not os.path.lexists(workspace / "link")


def test_a_file_through_a_symlink_is_refused_even_one_inside(places: tuple[Path, Path]) -> None:
    workspace, _ = places
    src = _archive(
        _member("real", tarfile.DIRTYPE),
        _member("hop", tarfile.SYMTYPE, link="real"),
        _member("hop/file.txt", data=b"through a link"),
    )
    with pytest.raises(ActionError, match="symlinks are not followed"):
        _unpack(src, workspace)
    assert not (workspace / "real" / "file.txt").exists()


def test_symlinks_the_job_planted_are_never_followed(places: tuple[Path, Path]) -> None:
    workspace, outside = places
    # A directory the archive writes into is a symlink out of the workspace.
    os.symlink(outside, workspace / "deps")
    with pytest.raises(ActionError, match="symlinks are not followed"):
        _unpack(_archive(_member("deps/evil.txt", data=b"x")), workspace)
    _outside_unchanged(outside)
    # A file the archive writes is a symlink to a file outside: the link is replaced.
    os.unlink(workspace / "deps")
    (workspace / "deps").mkdir()
    os.symlink(outside / "keep.txt", workspace / "deps" / "keep.txt")
    _unpack(_archive(_member("deps/keep.txt", data=b"restored\n")), workspace)
    _outside_unchanged(outside)
    assert not (workspace / "deps" / "keep.txt").is_symlink()
    assert (workspace / "deps" / "keep.txt").read_text() == "restored\n"


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        (tarfile.CHRTYPE, "a device"),
        (tarfile.BLKTYPE, "a device"),
        (tarfile.FIFOTYPE, "a FIFO"),
        (tarfile.LNKTYPE, "a hard link"),
    ],
)
def test_devices_fifos_and_hard_links_are_refused(
    places: tuple[Path, Path], kind: bytes, what: str
) -> None:
    workspace, _ = places
    with pytest.raises(ActionError, match=f"is {what}; only files, directories and symlinks"):
        _unpack(_archive(_member("node", kind, link="x")), workspace)
    assert not os.path.lexists(workspace / "node")


def test_sizes_and_counts_are_capped(places: tuple[Path, Path]) -> None:
    workspace, _ = places
    with pytest.raises(ActionError, match="cache_entry_max_bytes"):
        _unpack(_archive(_member("big", data=b"x" * 2000)), workspace, max_bytes=1000)
    many = [_member(f"f{n}", data=b"x") for n in range(5)]
    with pytest.raises(ActionError, match="more than 3 files"):
        _unpack(_archive(*many), workspace, files=3)
    with pytest.raises(ActionError, match="not a zstd or gzip archive"):
        _unpack(io.BytesIO(b"PK\x03\x04 not a tar"), workspace)
    truncated = _archive(_member("x", data=b"y" * 5000))
    with pytest.raises(ActionError, match="not a readable archive"):
        _unpack(io.BytesIO(truncated.getvalue()[:40]), workspace)
