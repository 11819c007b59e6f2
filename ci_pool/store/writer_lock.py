"""The embedded store's writer lock: one writer at a time per SQLite file, queued by the
kernel.

SQLite lets one writer in at a time. A writer that finds the file locked sleeps in its
busy handler in growing steps (1, 2, 5, 10 ... 100 ms) and retries, so with several
writer processes most of a transaction's wall time goes to sleeping after the lock was
already free. Writers of the store first take a blocking POSIX lock on a file beside the
database (``<db>-writer.lock``): a waiting writer is woken the moment the holder lets go,
then takes SQLite's own lock (``BEGIN IMMEDIATE``) without a wait. SQLite's busy timeout
stays the backstop for anything else that writes the file (the ``sqlite3`` shell, a
backup).

- A POSIX lock belongs to its process: a forked child never holds its parent's lock, and
  the kernel releases the lock of a process that dies, however it dies.
- Threads of one process queue on an in-process lock first (the POSIX lock cannot tell
  them apart); a thread already inside a write transaction takes it again without waiting.
- The lock is released in every path out of the transaction (commit, rollback, error).
- The wait is bounded (``defaults.SQLITE_WRITER_LOCK_WAIT``, SQLite's busy timeout): a
  holder that hangs inside its transaction delays the others that long, then they go on
  to SQLite's own lock, whose busy timeout decides as it would without this lock. A
  blocking POSIX lock cannot time out by itself: the main thread (a worker's pool process,
  a CLI) waits in the kernel under a real-time timer (SIGALRM, when no other timer is
  armed); other threads (the API server's) poll in sub-millisecond steps.
- In-memory and URI-named databases get no lock (``for_url`` returns None); neither does
  PostgreSQL.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sqlalchemy.engine import make_url

from ci_pool import defaults

log = logging.getLogger(__name__)

#: The file lock is polled from this pause up to the last one while another process holds it.
_FIRST_PAUSE, _LAST_PAUSE = 0.0001, 0.0005


class WriterLock:
    """The writer lock of one SQLite file, shared by every store of this process on it."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._mutex = threading.RLock()
        self._depth = 0
        #: Bumped in a forked child: a hold that began in the parent is not the child's.
        self._generation = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the body: one thread of one process at a time."""
        mutex, generation = self._mutex, self._generation
        deadline = time.monotonic() + defaults.SQLITE_WRITER_LOCK_WAIT
        if not mutex.acquire(timeout=defaults.SQLITE_WRITER_LOCK_WAIT):
            log.warning("writer lock %s: another thread held it too long; going on", self.path)
            yield  # SQLite's own lock and busy timeout decide
            return
        try:
            if self._depth == 0 and not self._lock_file(deadline):
                yield
                return
            self._depth += 1
            try:
                yield
            finally:
                if generation == self._generation:
                    self._depth -= 1
                    if self._depth == 0:
                        self._unlock_file()
        finally:
            mutex.release()

    def _lock_file(self, deadline: float) -> bool:
        """Take the file lock by ``deadline``; False when there is none to take or it
        stayed held (the caller goes on to SQLite's own lock)."""
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:  # a read-only directory: SQLite's busy timeout alone
                log.debug("no writer lock at %s: %s", self.path, exc)
                return False
        taken = _try(self._fd)
        if taken is None:
            taken = _wait_in_kernel(self._fd, deadline) or _poll(self._fd, deadline)
        if not taken:
            log.warning("writer lock %s: held too long elsewhere; going on", self.path)
        return bool(taken)

    def _unlock_file(self) -> None:
        if self._fd is not None:
            with suppress(OSError):
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _forked(self) -> None:
        """In a forked child: the kernel gave the child none of the parent's POSIX locks;
        forget the parent's holders (their threads do not exist here)."""
        self._mutex = threading.RLock()
        self._depth = 0
        self._generation += 1


class _Expired(Exception):
    """The bound of a wait in the kernel ran out."""


def _try(fd: int) -> bool | None:
    """Take the lock if it is free: True; None when another process holds it; False on
    any other error (no lock then)."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return None
        log.debug("writer lock: %s", exc)
        return False


def _wait_in_kernel(fd: int, deadline: float) -> bool | None:
    """Wait for the lock in the kernel, woken the moment it frees, bounded by a real-time
    timer; None where no timer can be used (not the main thread, or a timer already armed
    by someone else): the caller polls then."""
    seconds = deadline - time.monotonic()
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        return None
    if signal.getitimer(signal.ITIMER_REAL)[0]:
        return None
    waiting = [True]

    def expired(signum: int, frame: object) -> None:
        if waiting[0]:
            raise _Expired

    previous = signal.signal(signal.SIGALRM, expired)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            waiting[0] = False
            return True
        except _Expired:
            waiting[0] = False
            return bool(_try(fd))  # taken just as the timer fired, or freed since
        finally:
            waiting[0] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, previous)


def _poll(fd: int, deadline: float) -> bool:
    """Try the lock in sub-millisecond steps until ``deadline`` (threads other than the
    main one, which cannot take a signal)."""
    pause = _FIRST_PAUSE
    while time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, _LAST_PAUSE)
        taken = _try(fd)
        if taken is not None:
            return taken
    return False


_LOCKS: dict[str, WriterLock] = {}


def _after_fork() -> None:
    for lock in list(_LOCKS.values()):
        lock._forked()


os.register_at_fork(after_in_child=_after_fork)


def lock_path(url: str) -> Path | None:
    """The writer lock file of a SQLite URL's database; None for in-memory and URI-named
    databases and for other databases."""
    try:
        parsed = make_url(url)
    except Exception:
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:") or parsed.query.get("mode") == "memory":
        return None
    path = Path(database).absolute()
    return path.with_name(path.name + defaults.SQLITE_WRITER_LOCK_SUFFIX)


def for_url(url: str) -> WriterLock | None:
    """This process's writer lock of the store at ``url``, or None when it has none."""
    path = lock_path(url)
    if path is None:
        return None
    key = str(path)
    return _LOCKS.get(key) or _LOCKS.setdefault(key, WriterLock(path))
