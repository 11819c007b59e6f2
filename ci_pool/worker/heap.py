"""The worker's and its pool processes' heap, and the garbage collector.

A Celery worker's heap after start-up holds hundreds of thousands of objects (Celery,
SQLAlchemy, pydantic, the settings) that are never freed, and a prefork pool process
inherits all of it; its first job adds what that job imports lazily (the executor, git,
the store's statements). Every full collection walked all of it again: the one Celery
runs before forking each pool process, the ones Python runs as survivors accumulate and
the one at exit. Writing the collector's bookkeeping into those objects also copies the
pages a pool process shares with its parent.

``gc.freeze()`` moves what is alive at that moment into a permanent generation that no
collection walks (in constant time: it splices lists). The worker settles its heap once,
before it forks its first pool process, so Celery's collection before each fork walks only
what was made since. A pool process freezes what it inherits as it starts (all of it is
alive: it was just collected), and settles once more after its first job. Settling is a
collection of what is not frozen yet, then the freeze, so no garbage is ever frozen.

Freezing keeps nothing alive: it only exempts live objects from the cycle collector. A
job's objects are still freed by reference counting when the job ends, later cycles are
still collected, and nothing of a job is carried into the next one by this.
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
