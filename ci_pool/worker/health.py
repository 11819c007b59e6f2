"""Whether this runner can run its capability's jobs now (engine up, image present)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ci_pool.core.capabilities import Capability
from ci_pool.exceptions import ExecutorError
from ci_pool.worker.executors.base import ENGINE_DOWN, Executor


class Health:
    """Whether this runner can run a capability's jobs now: its Docker engine answers and
    the capability's image is here. A verdict is kept ``ttl`` seconds."""

    def __init__(self, cap: Capability, executor: Callable[[Capability], Executor], ttl: float):
        self.cap, self._executor, self.ttl = cap, executor, ttl
        self.executor: Executor | None = None
        self._verdict: str | None = None
        self._until = 0.0

    def reason(self) -> str | None:
        """Why the runner cannot run the capability's jobs (with what fixes it), or None."""
        if self.cap.mode != "docker":
            return None
        now = time.monotonic()
        if now >= self._until:
            self._verdict, self._until = self._ask(), now + self.ttl
        return self._verdict

    def _ask(self) -> str | None:
        if self.executor is None:
            try:
                self.executor = self._executor(self.cap)
            except ExecutorError:
                return ENGINE_DOWN
        return self.executor.health(self.cap)

    def forget(self) -> None:
        """Ask again next time (an attempt just ended in an infrastructure error)."""
        self._until = 0.0
