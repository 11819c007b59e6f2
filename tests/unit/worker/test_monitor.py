"""JobMonitor's step deadlines: a deadline seen for one step stops that step only, never
the step that starts after it (the race is driven with events, not sleeps)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

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
