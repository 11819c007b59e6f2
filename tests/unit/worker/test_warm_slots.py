"""Taking a warm slot: an atomic move of one idle slot to the attempt's directory."""

from __future__ import annotations

from pathlib import Path

from ci_pool import defaults
from ci_pool.worker.executors.warm import slots_dir, take


def _slot(root: Path, runner: str, name: str, container: str) -> Path:
    slot = slots_dir(root, runner) / name
    (slot / "src").mkdir(parents=True)
    (slot / defaults.WARM_ID_FILE).write_text(container + "\n")
    return slot


def test_take_moves_one_idle_slot_and_never_a_half_made_one(tmp_path: Path) -> None:
    runner = "linux@host-1"
    assert take(tmp_path, runner, tmp_path / "job-1") == ""  # no slots at all
    _slot(tmp_path, runner, ".new-abc", "half-made")
    _slot(tmp_path, runner, "aaa", "c1")
    _slot(tmp_path, "other@host", "bbb", "c2")
    assert take(tmp_path, runner, tmp_path / "job-1") == "c1"
    assert (tmp_path / "job-1" / "src").is_dir()
    assert not (slots_dir(tmp_path, runner) / "aaa").exists()
    # The only slot left is being made; another runner's slot is never taken.
    assert take(tmp_path, runner, tmp_path / "job-2") == ""
    assert not (tmp_path / "job-2").exists()
    assert slots_dir(tmp_path, runner).name == "linux_host-1"
