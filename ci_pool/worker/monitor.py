"""The job monitor: heartbeats the lease, flushes the log, and stops the job on cancel or
timeout while the runner thread runs its steps."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ci_pool.core.specs import JobState
from ci_pool.exceptions import RunnerCutOff
from ci_pool.worker.executors.base import Execution
from ci_pool.worker.logs import LogWriter

log = logging.getLogger(__name__)


class LeaseKeeper(Protocol):
    """What the monitor needs from the store: the lease heartbeat."""

    def heartbeat(self, job_id: str, attempt: int, lease_ttl: float) -> bool | None: ...


class JobMonitor(threading.Thread):
    """Heartbeats the lease, flushes the log, and stops the job on cancel or timeout.

    Step deadlines are tied to a step number under a lock: the runner thread calls
    ``begin_step`` and ``end_step``; a deadline the monitor saw for one step can only
    interrupt and time out that step, never the one that starts after it."""

    def __init__(
        self,
        store: LeaseKeeper,
        job_id: str,
        attempt: int,
        logw: LogWriter,
        deadline: float,
        *,
        heartbeat_interval: float,
        lease_ttl: float,
        stop_grace: float,
    ):
        super().__init__(name=f"monitor-{job_id}", daemon=True)
        self.store = store
        self.job_id, self.attempt = job_id, attempt
        self.logw = logw
        self.deadline = deadline
        self.heartbeat_interval = heartbeat_interval
        self.lease_ttl = lease_ttl
        self.stop_grace = stop_grace
        self.execution: Execution | None = None
        self.stop_reason: JobState | None = None
        self._step_lock = threading.Lock()
        #: Number of the step running now (0: none), its deadline, and the steps timed out.
        self._step = 0
        self._step_count = 0
        self._step_deadline: float | None = None
        self._timed_out: set[int] = set()
        self._done = threading.Event()
        #: Set when the job ends or when the log starts holding a line back.
        self._wake = threading.Event()
        logw.on_hold = self._wake.set

    def begin_step(self, timeout: float | None) -> int:
        """A step starts now with ``timeout`` seconds (None: no limit); its token."""
        with self._step_lock:
            self._step_count += 1
            self._step = self._step_count
            self._step_deadline = time.monotonic() + timeout if timeout else None
            return self._step

    def end_step(self, token: int) -> bool:
        """The step ``token`` ended; whether its own deadline stopped it."""
        with self._step_lock:
            if self._step == token:
                self._step, self._step_deadline = 0, None
            return token in self._timed_out

    def run(self) -> None:
        interval = min(self.heartbeat_interval, 1.0)
        last_beat = time.monotonic()
        next_tick = last_beat + interval
        while not self._done.is_set():
            held = self.logw.held_until()
            until = next_tick if held is None else min(next_tick, held)
            self._wake.wait(max(0.0, until - time.monotonic()))
            self._wake.clear()
            if self._done.is_set():
                break
            now = time.monotonic()
            if held is not None and now >= held:
                self._safe(lambda: self.logw.release(time.monotonic()))
            if now < next_tick:
                continue
            next_tick = now + interval
            self._safe(self.logw.flush)
            if now >= self.deadline:
                self._halt(JobState.TIMED_OUT, "job timeout reached")
            else:
                self.check_step(now)
            if now - last_beat >= self.heartbeat_interval:
                last_beat = now
                self._beat()

    def check_step(self, now: float) -> None:
        """Time out the running step if ``now`` is past its deadline."""
        with self._step_lock:
            if self._step_deadline is None or now < self._step_deadline:
                return
            token, self._step_deadline = self._step, None
            self._timed_out.add(token)
        self.logw.line("##[ci-pool] step timeout reached: stopping the step")
        self._in_background(lambda ex: self._interrupt(ex, token))

    def _interrupt(self, execution: Execution, token: int) -> None:
        # Under the step lock: the runner cannot end this step and start the next one
        # between the check and the signal, so only the step that timed out is hit.
        with self._step_lock:
            if self._step == token:
                execution.interrupt(self.stop_grace)

    def _beat(self) -> None:
        try:
            cancel = self.store.heartbeat(self.job_id, self.attempt, self.lease_ttl)
        except RunnerCutOff:
            # Revoked: nothing this attempt does can be recorded; stop it, and the lease
            # runs out so the reaper queues the job for another runner.
            self._halt(JobState.ERROR, "the pool refused this runner's credential")
            return
        except Exception:  # a store hiccup: keep running, the lease has slack
            log.exception("heartbeat of job %s failed", self.job_id)
            return
        if cancel is None:
            self._halt(JobState.CANCELLED, "job is no longer ours (cancelled or taken over)")
        elif cancel:
            self._halt(JobState.CANCELLED, "cancel requested")

    def _halt(self, why: JobState, message: str) -> None:
        if self.stop_reason is not None:
            return
        self.stop_reason = why
        grace = self.stop_grace
        self.logw.line(f"##[ci-pool] {message}: stopping (grace {grace:g}s)")
        self._in_background(lambda ex: ex.stop(grace))

    def _in_background(self, action: Callable[[Execution], None]) -> None:
        """Stopping waits out a grace period; the heartbeat must not wait with it."""
        execution = self.execution
        if execution is not None:
            threading.Thread(
                target=self._safe, args=(lambda: action(execution),), daemon=True
            ).start()

    @staticmethod
    def _safe(fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:
            log.exception("job monitor action failed")

    def finish(self) -> None:
        self._done.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout=5)
