"""The background cleaner: removals happen after the call returns, a failure is logged
and never ends the cleaner, and draining waits for what was handed over."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from ci_pool.worker.cleanup import Cleaner, Leftover
from ci_pool.worker.executors.base import Execution


class _Closing(Execution):
    """An execution whose close() records the call, or fails."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.closed = fail, False

    def start(self) -> None: ...

    def run_step(
        self,
        script_name: str,
        on_output: Callable[[bytes], None],
        env: dict[str, str] | None = None,
        shell: str | None = None,
    ) -> int:
        return 0

    def interrupt(self, grace: float) -> None: ...

    def stop(self, grace: float) -> None: ...

    def close(self) -> None:
        if self.fail:
            raise RuntimeError("engine went away")
        self.closed = True


def _root(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    (root / "src" / "deep").mkdir(parents=True)
    (root / "src" / "deep" / "f").write_text("x")
    return root


def test_cleaner_removes_in_background_and_survives_failures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cleaner = Cleaner()
    failing, fine = _Closing(fail=True), _Closing()
    first, second = _root(tmp_path, "a-1"), _root(tmp_path, "b-1")
    with caplog.at_level(logging.WARNING, logger="ci_pool.worker.cleanup"):
        cleaner.submit(Leftover("a", None, failing, first, "img"))
        cleaner.submit(Leftover("b", None, fine, second, "img"))
        assert cleaner.drain(timeout=10)
    assert not first.exists() and not second.exists()
    assert fine.closed
    assert "job a: cleanup: engine went away; the runner's sweep removes it later" in caplog.text
