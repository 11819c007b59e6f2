"""Artifact collection over a workspace the job controls: symlinks are reported, never
followed (not even to list names), and the per-job byte limit is named when hit."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ci_pool.worker.artifacts import Selection, collect, collect_selection


def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "dist").mkdir(parents=True)
    (ws / "dist" / "a.bin").write_bytes(b"a" * 10)
    (ws / "dist" / "b.bin").write_bytes(b"b" * 10)
    return ws


def test_regular_files_are_copied_with_the_hash_of_the_bytes_copied(tmp_path: Path) -> None:
    found = collect(workspace(tmp_path), ["dist/*"], tmp_path / "out", 1000)
    assert [(f.path, f.size) for f in found.files] == [("dist/a.bin", 10), ("dist/b.bin", 10)]
    assert found.files[0].sha256 == hashlib.sha256(b"a" * 10).hexdigest()
    assert (tmp_path / "out" / "dist" / "b.bin").read_bytes() == b"b" * 10
    assert found.problems == []


def test_a_symlinked_directory_is_reported_without_listing_its_target(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    host = tmp_path / "host"
    host.mkdir()
    (host / "private-name.key").write_text("key")
    (ws / "dist" / "keys").symlink_to(host)
    found = collect(ws, ["dist/*/*", "dist/**"], tmp_path / "out", 1000)
    assert {f.path for f in found.files} == {"dist/a.bin", "dist/b.bin"}
    assert found.problems == ["dist/keys: is a symbolic link, not a regular file; not collected"]
    assert "private-name" not in "".join(found.problems)
    assert not (tmp_path / "out" / "dist" / "keys").exists()


def test_past_artifact_max_bytes_collection_stops_and_names_the_setting(tmp_path: Path) -> None:
    found = collect(workspace(tmp_path), ["dist/*"], tmp_path / "out", 15)
    assert [f.path for f in found.files] == ["dist/a.bin"]
    assert found.problems == [
        "dist/b.bin: goes past the artifact_max_bytes limit of 15 bytes for the job; "
        "it and the files after it are not collected"
    ]
    assert not (tmp_path / "out" / "dist" / "b.bin").exists()


def test_an_exclusion_globstar_also_stands_for_no_directory(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    (ws / "dist" / "a.map").write_text("top\n")
    (ws / "dist" / "sub").mkdir()
    (ws / "dist" / "sub" / "b.map").write_text("nested\n")
    (ws / "dist" / "sub" / "c.bin").write_text("kept\n")
    sel = Selection(("dist",), ("dist/**/*.map",), "dist")
    found = collect_selection(ws, sel, tmp_path / "out", 1000)
    assert sorted(f.path for f in found.files) == ["a.bin", "b.bin", "sub/c.bin"]


def test_a_name_that_turned_into_a_directory_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    # What a job that swaps a directory for a link while it is collected leaves behind: a
    # stored name that is a directory already (and one below a stored file).
    out = tmp_path / "out"
    (out / "dist" / "a.bin").mkdir(parents=True)
    (out / "dist" / "b.bin" / "x").mkdir(parents=True)
    ws = workspace(tmp_path)
    (ws / "dist" / "c").mkdir()
    (out / "dist" / "c").write_text("a file where a directory is needed")
    (ws / "dist" / "c" / "d.bin").write_bytes(b"d")
    found = collect(ws, ["dist/**"], out, 1000)
    assert found.files == []
    assert [p.split(":")[0] for p in found.problems] == ["dist/a.bin", "dist/b.bin", "dist/c/d.bin"]
    assert all("beside the files collected before it" in p for p in found.problems)
