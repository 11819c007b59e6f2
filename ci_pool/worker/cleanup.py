"""Removal of what an ended attempt leaves (its container, its directory) off the job's
critical path: the outcome is recorded first, then a per-process cleaner thread removes
the rest. A failure is logged and never escapes; the runner's sweep retries by label."""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from ci_pool import overlay
from ci_pool.worker.executors.base import Execution, Executor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Leftover:
    """What one attempt leaves behind for removal."""

    job_id: str
    executor: Executor | None
    execution: Execution | None
    root: Path
    image: str


def remove(item: Leftover) -> list[str]:
    """Close the execution, unmount the workspace's overlays and remove the attempt's
    directory; what could not be removed."""
    problems: list[str] = []
    if item.execution is not None:
        try:
            item.execution.close()
        except Exception as exc:
            problems.append(f"{exc}; the runner's sweep removes it later")
    stuck = overlay.unmount_under(item.root)
    if stuck:
        # Removing the directory now would delete through the mount into the job's layer
        # only, and the mount would stay: the runner's sweep unmounts it later.
        problems.append(f"could not unmount {stuck[0]}; the runner's sweep does later")
        return problems
    shutil.rmtree(item.root, ignore_errors=True)
    if item.root.exists() and item.executor is not None:
        # Files the build made as another user (root in the container): remove them
        # the way they were made.
        try:
            item.executor.remove_tree(item.root, item.image)
        except Exception as exc:
            problems.append(str(exc))
    if item.root.exists():
        problems.append(f"could not remove workspace {item.root}")
    return problems


class Cleaner:
    """A daemon thread removing leftovers in the order they were handed over."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Leftover] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, item: Leftover) -> None:
        """Remove ``item`` soon, in the background; returns at once."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="ci-pool-cleanup", daemon=True
                )
                self._thread.start()
        self._queue.put(item)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                for problem in remove(item):
                    log.warning("job %s: cleanup: %s", item.job_id, problem)
            except Exception:  # nothing may end the cleaner
                log.exception("job %s: cleanup failed", item.job_id)
            finally:
                self._queue.task_done()

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for what was handed over; whether all is done."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, name="ci-pool-cleanup-drain", daemon=True).start()
        return done.wait(timeout)


_cleaners: dict[int, Cleaner] = {}


def cleaner() -> Cleaner:
    """This process's cleaner (a forked pool child gets its own)."""
    pid = os.getpid()
    if pid not in _cleaners:
        _cleaners[pid] = Cleaner()
    return _cleaners[pid]
