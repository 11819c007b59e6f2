"""The pool process's heap and the garbage collector.

A prefork pool process inherits the whole heap of the worker it was forked from (Celery,
SQLAlchemy, pydantic, the settings: hundreds of thousands of objects), and its first job
adds what that job imports lazily (the executor, git, the store's statements). None of it
is ever freed, but every older-generation collection walked all of it again, and writing
the collector's bookkeeping into those objects copied the pages the process shared with
its parent.

``gc.freeze()`` moves what is alive at that moment into a permanent generation that no
collection walks (in constant time: it splices lists). The worker settles its heap once,
before it forks its first pool process (Celery collects the whole heap before every fork:
after this, only what was made since). A pool process freezes what it inherits as it
starts (all alive: it was just collected), and settles once more after its first job.
Settling is a collection of what is not frozen yet, then the freeze, so no garbage is
ever frozen. Freezing keeps nothing
alive: it only exempts live objects from the cycle collector; a job's objects are still
freed by reference counting when the job ends, and nothing of a job is carried into the
next one by this.
"""

from __future__ import annotations

import gc
import os

#: The pid whose heap is settled (a forked child starts unsettled).
_settled_in: int | None = None


def freeze_inherited() -> None:
    """In a pool process as it starts: exempt the heap it inherited from collections."""
    gc.freeze()


def settle() -> None:
    """Once per process: collect, then freeze what is alive (in a pool process, after
    its first job: what its lazy imports and its clients added to the heap)."""
    global _settled_in
    pid = os.getpid()
    if _settled_in != pid:
        _settled_in = pid
        gc.collect()
        gc.freeze()
