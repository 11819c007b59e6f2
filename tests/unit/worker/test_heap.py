"""A pool process's heap is frozen once after its first job, without keeping anything
alive: garbage from before is collected first, an object dropped later is still freed, a
cycle a later job makes is still collected, and a forked child settles its own heap.

Each case runs in a fresh interpreter, so the test process's own heap is never frozen."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PRELUDE = """
import gc, os, weakref
from ci_pool.worker import heap

class Node:
    def __init__(self):
        self.me = self

gen2 = []
gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2
                    and gen2.append(1))
"""


def _run(body: str) -> str:
    code = PRELUDE + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_settling_collects_the_garbage_first_then_freezes_the_live_heap_once() -> None:
    out = _run(
        """
        garbage = Node()
        gone = weakref.ref(garbage)
        del garbage
        kept = Node()
        assert gc.get_freeze_count() == 0
        heap.settle()
        print("garbage collected:", gone() is None)
        print("frozen:", gc.get_freeze_count() > 0)
        print("collections:", len(gen2))
        heap.settle()  # the second job: nothing more
        print("after a second job:", len(gen2))
        """
    )
    assert "garbage collected: True" in out
    assert "frozen: True" in out
    assert "collections: 1" in out
    assert "after a second job: 1" in out


def test_a_frozen_object_is_still_freed_and_a_later_cycle_still_collected() -> None:
    out = _run(
        """
        before = Node()
        heap.settle()
        dropped = weakref.ref(before)
        before.me = None  # no cycle any more: reference counting frees it at once
        del before
        print("frozen object freed:", dropped() is None)
        later = Node()
        cycle = weakref.ref(later)
        del later
        gc.collect()
        print("later cycle collected:", cycle() is None)
        """
    )
    assert "frozen object freed: True" in out
    assert "later cycle collected: True" in out


def test_a_forked_child_settles_its_own_heap() -> None:
    out = _run(
        """
        heap.settle()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            gen2.clear()
            heap.settle()
            os.write(w, str(len(gen2)).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        print("child collections:", os.read(r, 10).decode())
        """
    )
    assert "child collections: 1" in out


def test_a_pool_process_freezes_what_it_inherits_as_it_starts() -> None:
    out = _run(
        """
        from celery.signals import worker_process_init
        import ci_pool.worker.tasks  # connects the pool process's start-up hook
        assert gc.get_freeze_count() == 0
        worker_process_init.send(sender=None)
        print("frozen at start:", gc.get_freeze_count() > 0)
        """
    )
    assert "frozen at start: True" in out


def test_the_worker_settles_once_before_forking_its_pool_processes() -> None:
    out = _run(
        """
        from celery.signals import worker_before_create_process
        import ci_pool.worker.tasks  # connects the worker's hook
        gen2.clear()
        for _ in range(3):  # one signal per pool process Celery creates
            worker_before_create_process.send(sender=None)
        print("frozen:", gc.get_freeze_count() > 0)
        print("collections:", len(gen2))
        """
    )
    assert "frozen: True" in out
    assert "collections: 1" in out
