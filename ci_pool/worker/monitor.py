"""The job monitor: heartbeats the lease, flushes the log, and stops the job on cancel or
timeout while the runner thread runs its steps.

The monitor's work runs on a watcher thread made once per runner thread and kept for that
thread's next jobs (a pool process runs its jobs on one thread, so it keeps one watcher):
starting and joining a thread for every job cost more CPU than everything the monitor
does for a short job. A runner thread watches one job at a time, so each job still has a
thread of its own beside it, as when each job started one."""

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
#: How long ``finish`` waits for the monitor's action in progress (a heartbeat) to end.
FINISH_WAIT = 5.0
#: How often an idle watcher checks that its runner thread is still there (else it ends).
IDLE_CHECK = 60.0


class LeaseKeeper(Protocol):
    """What the monitor needs from the store: the lease heartbeat."""

    def heartbeat(self, job_id: str, attempt: int, lease_ttl: float) -> bool | None: ...


class JobMonitor:
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
        self._done = False
        self._interval = min(heartbeat_interval, 1.0)
        self._last_beat = self._next_tick = 0.0
        #: The watcher of this job, from ``start`` to ``finish``.
        self._watcher: Watcher | None = None
        logw.on_hold = self._wake

    def start(self) -> None:
        """Watch the job from now on (on the calling thread's watcher)."""
        now = time.monotonic()
        self._last_beat, self._next_tick = now, now + self._interval
        self._watcher = watcher()
        self._watcher.watch(self)

    def finish(self) -> None:
        """Stop watching the job; returns once no action of the monitor runs any more (or
        after ``FINISH_WAIT``, the action still in progress left to end by itself)."""
        self._done = True
        w, self._watcher = self._watcher, None  # lines held from now on wake nobody
        if w is not None:
            w.unwatch(self)

    def _wake(self) -> None:
        """A log line is held: the watcher must wake by its release time (never blocks)."""
        w = self._watcher
        if w is not None:
            w.wake.set()

    def due(self) -> float:
        """When the monitor must act next (``time.monotonic``)."""
        held = self.logw.held_until()
        return self._next_tick if held is None else min(self._next_tick, held)

    def tick(self, now: float) -> None:
        """Act at ``now``: release held log lines that are due; every interval, flush the
        log, check the deadlines, and heartbeat the lease when its interval is up."""
        if self._done:
            return
        held = self.logw.held_until()
        if held is not None and now >= held:
            self._safe(lambda: self.logw.release(time.monotonic()))
        if now < self._next_tick:
            return
        self._next_tick = now + self._interval
        self._safe(self.logw.flush)
        if now >= self.deadline:
            self._halt(JobState.TIMED_OUT, "job timeout reached")
        else:
            self.check_step(now)
        if now - self._last_beat >= self.heartbeat_interval:
            self._last_beat = now
            self._beat()

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


class Watcher(threading.Thread):
    """The thread that runs the monitors of one runner thread's jobs, one job at a time."""

    def __init__(self) -> None:
        super().__init__(name="ci-pool-monitor", daemon=True)
        #: The runner thread whose jobs this watches: the watcher ends after it.
        self.owner = threading.current_thread()
        #: Set when the monitor changes or must act sooner than the watcher planned.
        self.wake = threading.Event()
        #: Held while a monitor acts: ``unwatch`` waits for it.
        self._acting = threading.Lock()
        self._monitor: JobMonitor | None = None
        #: Set when an action outlived ``FINISH_WAIT``: the thread ends after it and the
        #: runner thread's next job gets a new watcher.
        self.retired = False

    def watch(self, monitor: JobMonitor) -> None:
        self._monitor = monitor
        self.wake.set()

    def unwatch(self, monitor: JobMonitor) -> None:
        if self._acting.acquire(timeout=FINISH_WAIT):
            if self._monitor is monitor:
                self._monitor = None
            self._acting.release()
            return
        log.warning(
            "job %s: its monitor is still busy; watching the next job apart", monitor.job_id
        )
        self.retired = True
        self.wake.set()

    def run(self) -> None:
        while not self.retired:
            self.wake.clear()
            monitor = self._monitor
            if monitor is None:
                if not self.wake.wait(IDLE_CHECK) and not self.owner.is_alive():
                    return
                continue
            wait = monitor.due() - time.monotonic()
            if wait > 0:
                self.wake.wait(wait)
                continue
            with self._acting:
                if self._monitor is monitor and not self.retired:
                    monitor.tick(time.monotonic())


_local = threading.local()


def watcher() -> Watcher:
    """The calling thread's watcher, started with its first job (in a forked process, the
    thread inherited from the parent is not running: a new one starts)."""
    w: Watcher | None = getattr(_local, "watcher", None)
    if w is None or w.retired or not w.is_alive():
        w = _local.watcher = Watcher()
        w.start()
    return w
