"""hashFiles on the runner: GitHub's digest, its patterns, and no symlink ever followed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ci_pool.worker.filehash import FileHasher


def digest(*contents: bytes) -> str:
    total = hashlib.sha256()
    for data in contents:
        total.update(hashlib.sha256(data).digest())
    return total.hexdigest()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "a" / "b").mkdir(parents=True)
    (root / "go.sum").write_bytes(b"top")
    (root / "a" / "b" / "go.sum").write_bytes(b"deep")
    (root / "a" / "keep.txt").write_bytes(b"keep")
    return root


def test_matching_files_hash_in_path_order(ws: Path) -> None:
    h = FileHasher(ws, "/workspace")
    assert h(["**/go.sum"]) == digest(b"deep", b"top")  # a/b/go.sum sorts first
    assert h(["go.sum"]) == digest(b"top")
    assert h(["/workspace/go.sum"]) == digest(b"top")
    assert h(["./a/**"]) == digest(b"deep", b"keep")
    assert h(["**/go.sum", "!a/**"]) == digest(b"top")
    assert h(["a/**/go.sum"]) == digest(b"deep")
    assert h(["**/nothing"]) == ""
    assert h(["**/go.sum\n!go.sum"]) == digest(b"deep")


def test_symlinks_are_never_followed(ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.key").write_bytes(b"host secret")
    os.symlink(outside / "secret.key", ws / "leak.key")
    os.symlink(outside, ws / "leakdir")
    os.symlink("../..", ws / "a" / "up")
    os.symlink(ws / "go.sum", ws / "inside-link")
    os.mkfifo(ws / "pipe")
    h = FileHasher(ws)
    assert h(["leak.key"]) == ""
    assert h(["leakdir/**"]) == ""
    assert h(["a/up/**"]) == ""
    assert h(["inside-link"]) == ""
    assert h(["pipe"]) == ""  # a fifo is not opened (it would block)
    assert h(["**"]) == digest(b"deep", b"keep", b"top")


@pytest.mark.parametrize("pattern", ["../x", "/etc/passwd", "a/../../x"])
def test_patterns_outside_the_workspace_are_errors(ws: Path, pattern: str) -> None:
    with pytest.raises(ValueError, match="outside the workspace"):
        FileHasher(ws, "/workspace")([pattern])


def test_a_missing_workspace_matches_nothing(tmp_path: Path) -> None:
    assert FileHasher(tmp_path / "gone")(["**"]) == ""
