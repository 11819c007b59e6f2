"""JobMonitor: a deadline seen for one step stops that step only, never the step that
starts after it (the race is driven with events, not sleeps); the jobs a thread runs one
after another are each watched by the thread's one watcher, never after they finish."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest

from ci_pool.core.specs import JobState
from ci_pool.worker import monitor as monitor_module
from ci_pool.worker.executors.base import Execution
from ci_pool.worker.logs import LogWriter
from ci_pool.worker.monitor import JobMonitor

WAIT = 10.0  # generous bound on each event wait; never reached when the code is right


class Lease:
    def heartbeat(self, job_id: str, attempt: int, lease_ttl: float) -> bool | None:
        return False


class PausingLog(LogWriter):
    """Holds the monitor at its 'step timeout reached' line until released."""

    def __init__(self) -> None:
        super().__init__(None, None, "job", 1, flush_interval=3600, flush_bytes=1 << 30)  # type: ignore[arg-type]
        self.reached = threading.Event()
        self.release = threading.Event()

    def line(self, text: str) -> None:
        super().line(text)
        if "step timeout reached" in text:
            self.reached.set()
            assert self.release.wait(WAIT)


class Steps(Execution):
    """Records which step each interrupt reached."""

    mode = "scripted"

    def __init__(self) -> None:
        self.running = 0
        self.interrupted: list[int] = []
        self.interrupt_done = threading.Event()

    def start(self) -> None: ...

    def run_step(
        self,
        script_name: str,
        on_output: Callable[[bytes], None],
        env: dict[str, str] | None = None,
        shell: str | None = None,
    ) -> int:
        return 0

    def interrupt(self, grace: float) -> None:
        self.interrupted.append(self.running)
        self.interrupt_done.set()

    def stop(self, grace: float) -> None: ...

    def close(self) -> None: ...


def monitor(logw: LogWriter, execution: Execution) -> JobMonitor:
    m = JobMonitor(
        Lease(),
        "job",
        1,
        logw,
        time.monotonic() + 3600,
        heartbeat_interval=1,
        lease_ttl=30,
        stop_grace=1,
    )
    m.execution = execution
    return m


def test_a_deadline_seen_as_a_step_ends_does_not_time_out_the_next_step() -> None:
    logw, steps = PausingLog(), Steps()
    m = monitor(logw, steps)
    steps.running = 1
    first = m.begin_step(timeout=5)
    before = set(threading.enumerate())
    # The monitor sees step 1 past its deadline, then is held before it acts.
    checker = threading.Thread(target=m.check_step, args=(time.monotonic() + 60,))
    checker.start()
    assert logw.reached.wait(WAIT)
    # Meanwhile step 1 ends and step 2 starts.
    assert m.end_step(first) is True  # step 1 did reach its deadline
    steps.running = 2
    second = m.begin_step(timeout=None)
    logw.release.set()
    for thread in set(threading.enumerate()) - before:  # the monitor's background action
        thread.join(WAIT)
    # The interrupt meant for step 1 found step 1 gone: step 2 runs on, not timed out.
    assert steps.interrupted == []
    assert m.end_step(second) is False


def test_a_step_past_its_deadline_is_interrupted_and_reported_timed_out() -> None:
    logw, steps = PausingLog(), Steps()
    logw.release.set()
    m = monitor(logw, steps)
    steps.running = 1
    token = m.begin_step(timeout=5)
    m.check_step(time.monotonic())  # before the deadline: nothing happens
    assert not logw.reached.is_set()
    m.check_step(time.monotonic() + 60)
    assert steps.interrupt_done.wait(WAIT)
    assert steps.interrupted == [1]
    assert m.end_step(token) is True
    later = m.begin_step(timeout=None)
    m.check_step(time.monotonic() + 3600)
    assert m.end_step(later) is False
    assert steps.interrupted == [1]


class Beats:
    """A lease that counts each job's heartbeats; the job ``stuck`` blocks in its first
    one until ``unblock`` is set."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.stuck = threading.Event()
        self.unblock = threading.Event()

    def heartbeat(self, job_id: str, attempt: int, lease_ttl: float) -> bool | None:
        self.count[job_id] = self.count.get(job_id, 0) + 1
        if job_id == "stuck":
            self.stuck.set()
            self.unblock.wait(WAIT)
        return False


def watched(lease: Beats, job_id: str, *, timeout: float = 3600) -> JobMonitor:
    logw = LogWriter(None, None, job_id, 1, flush_interval=3600)  # type: ignore[arg-type]
    return JobMonitor(
        lease,
        job_id,
        1,
        logw,
        time.monotonic() + timeout,
        heartbeat_interval=0.01,
        lease_ttl=30,
        stop_grace=1,
    )


def until(check: Callable[[], bool]) -> bool:
    end = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def monitor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ci-pool-monitor"]


def test_jobs_one_after_another_are_each_watched_and_never_after_they_finish() -> None:
    lease = Beats()
    seen: list[threading.Thread] = []
    for job in ("a", "b", "c"):
        m = watched(lease, job)
        m.start()
        assert until(lambda job=job: lease.count.get(job, 0) >= 2)  # type: ignore[misc]
        m.finish()
        beats = lease.count[job]
        seen += monitor_threads()
        time.sleep(0.05)  # five heartbeat intervals
        assert lease.count[job] == beats  # nothing acts for a finished job
    # One watcher served this thread's jobs, and it is still there for the next one.
    assert len(set(seen)) == 1 and seen[0].is_alive()


def test_a_later_job_times_out_and_is_stopped() -> None:
    lease, steps = Beats(), Steps()
    stopped = threading.Event()
    steps.stop = lambda grace: stopped.set()  # type: ignore[method-assign]
    first = watched(lease, "first")
    first.start()
    first.finish()
    m = watched(lease, "second", timeout=0.05)
    m.execution = steps
    m.start()
    assert stopped.wait(WAIT)
    assert m.stop_reason is JobState.TIMED_OUT
    m.finish()
    assert first.stop_reason is None


def test_a_heartbeat_that_hangs_does_not_hold_up_the_next_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(monitor_module, "FINISH_WAIT", 0.1)
    lease = Beats()
    stuck = watched(lease, "stuck")
    stuck.start()
    assert lease.stuck.wait(WAIT)
    began = time.monotonic()
    stuck.finish()  # gives up waiting for the heartbeat after FINISH_WAIT
    assert time.monotonic() - began < WAIT
    try:
        nxt = watched(lease, "next")
        nxt.start()
        assert until(lambda: lease.count.get("next", 0) >= 2)
        nxt.finish()
    finally:
        lease.unblock.set()
    assert lease.count["stuck"] == 1


def test_a_forked_process_watches_its_own_jobs() -> None:
    lease = Beats()
    parent = watched(lease, "parent")
    parent.start()
    parent.finish()
    pid = os.fork()
    if pid == 0:  # the child: the parent's watcher thread does not run here
        try:
            m = watched(lease, "child")
            m.start()
            ok = until(lambda: lease.count.get("child", 0) >= 2)
            m.finish()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_watcher_of_a_thread_that_ended_ends_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitor_module, "IDLE_CHECK", 0.01)
    lease = Beats()
    made: list[threading.Thread] = []

    def one_job() -> None:
        m = watched(lease, "short-lived")
        m.start()
        made.extend(monitor_threads())
        m.finish()

    runner = threading.Thread(target=one_job)
    runner.start()
    runner.join(WAIT)
    owned = [t for t in made if getattr(t, "owner", None) is runner]
    assert len(owned) == 1
    owned[0].join(WAIT)
    assert not owned[0].is_alive()
