"""The embedded store's files: the SQLite database (with its WAL and shared-memory files)
is private to the pool's user (0600), in a private home (0700). It holds token hashes,
job environments and logs."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

#: What SQLite writes beside the database in WAL mode.
_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> None:
    """Create ``path`` 0700, or take group and other access away from an existing one that
    this user owns (a warning in the log when it cannot)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _tighten(path, 0o700)


def private_sqlite(url: str) -> None:
    """Create the SQLite file of ``url`` 0600 before SQLite opens it (SQLite gives its WAL
    and shm files the database's mode), and tighten an existing one; other URLs: nothing."""
    try:
        parsed = make_url(url)
    except Exception:
        return  # the engine reports a bad URL itself
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return
    if database.startswith("file:") or parsed.query.get("mode") == "memory":
        return
    path = Path(database)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    # Only a file that does not exist yet is opened here: closing any descriptor of a file
    # drops every POSIX lock this process holds on it, SQLite's own included.
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass
    for file in (path, *(path.with_name(path.name + s) for s in _SIDE_FILES)):
        if file.exists():
            _tighten(file, 0o600)


def _tighten(path: Path, mode: int) -> None:
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077 == 0:
        return
    if st.st_uid != os.geteuid():
        log.warning(
            "%s is open to others (mode %o) and owned by another user: not changed",
            path,
            stat.S_IMODE(st.st_mode),
        )
        return
    try:
        os.chmod(path, mode)
    except OSError as exc:
        log.warning("%s is readable by others and could not be made private: %s", path, exc)
