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
- In-memory and URI-named databases get no lock (``for_url`` returns None); neither does
  PostgreSQL.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sqlalchemy.engine import make_url

from ci_pool import defaults

log = logging.getLogger(__name__)


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
        with mutex:
            if self._depth == 0:
                self._lock_file()
            self._depth += 1
            try:
                yield
            finally:
                if generation == self._generation:
                    self._depth -= 1
                    if self._depth == 0:
                        self._unlock_file()

    def _lock_file(self) -> None:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:  # a read-only directory: SQLite's busy timeout alone
                log.debug("no writer lock at %s: %s", self.path, exc)
                return
        fcntl.lockf(self._fd, fcntl.LOCK_EX)

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
