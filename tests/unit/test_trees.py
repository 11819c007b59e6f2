"""Filling the tree cache: an entry appears whole or not at all, one filler per entry, and
what a failed or dead filler wrote is removed."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from ci_pool import defaults, trees


def write_tree(dest: Path) -> None:
    (dest / "d").mkdir(parents=True)
    (dest / "f.txt").write_text("v1\n")
    (dest / "d" / "g.txt").write_text("g\n")


def test_a_fill_appears_whole_with_its_size(tmp_path: Path) -> None:
    root = tmp_path / "trees"
    entry = root / "abc-123"
    assert trees.fill(root, entry, write_tree, keep=4) is True
    assert (entry / "complete").exists()
    assert (entry / "tree" / "f.txt").read_text() == "v1\n"
    assert trees.tree_bytes(entry) == 5
    assert list(root.glob("*" + defaults.TREE_FILL_SUFFIX)) == []
    # An entry that exists is not filled again.
    assert trees.fill(root, entry, write_tree, keep=4) is False


def test_a_failed_fill_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "trees"
    entry = root / "abc-123"

    def broken(dest: Path) -> None:
        write_tree(dest)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        trees.fill(root, entry, broken, keep=4)
    assert not entry.exists()
    assert [p.name for p in root.iterdir() if p.is_dir()] == []


def test_one_filler_per_entry_and_a_dead_fillers_dir_is_swept(tmp_path: Path) -> None:
    root = tmp_path / "trees"
    entry = root / "abc-123"
    root.mkdir()
    scratch = root / ("abc-123" + defaults.TREE_FILL_SUFFIX)
    write_tree(scratch / "tree")  # what a filler wrote before it died, or is writing now
    lock = root / ("abc-123" + defaults.TREE_FILL_SUFFIX + ".lock")
    with open(lock, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # a live filler elsewhere
        assert trees.fill(root, entry, write_tree, keep=4) is False
        trees.evict(root, keep=4)
        assert scratch.is_dir()  # its filler is alive: kept
        fcntl.flock(fh, fcntl.LOCK_UN)
    trees.evict(root, keep=4)  # the lock is free: its filler died
    assert not scratch.exists()
    assert not entry.exists()


def test_a_half_entry_of_a_crashed_runner_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "trees"
    entry = root / "abc-123"
    (entry / "tree").mkdir(parents=True)
    (entry / "tree" / "partial").write_text("x")  # no "complete": never served
    assert trees.fill(root, entry, write_tree, keep=4) is True
    assert sorted(os.listdir(entry / "tree")) == ["d", "f.txt"]


def test_fill_later_runs_off_the_callers_thread(tmp_path: Path) -> None:
    root = tmp_path / "trees"
    entry = root / "abc-123"
    trees.fill_later(root, entry, write_tree, keep=4)
    assert trees.settle(30)
    assert (entry / "complete").exists()
