"""The store's database: its engines (SQLite tuned for many writers, or PostgreSQL), the
transactions every query runs in, and schema set-up."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import ColumnElement, Engine, create_engine, event, func, text
from sqlalchemy.orm import Session, sessionmaker

from ci_pool.store import writer_lock
from ci_pool.store.files import private_sqlite
from ci_pool.store.prepared import DirectTransaction, direct_transaction


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, *, writer: bool = True) -> Engine:
    """An engine for the store URL; SQLite gets WAL and a generous busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; issue it ourselves. Writers take
        # the write lock up front so fenced updates never deadlock on a lock upgrade; readers
        # use a plain BEGIN and, under WAL, never wait for writers.
        begin = "BEGIN IMMEDIATE" if writer else "BEGIN"
        event.listen(engine, "connect", lambda c, _r: setattr(c, "isolation_level", None))
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(begin))
        return engine
    return create_engine(url, pool_pre_ping=True)


def seconds_between(dialect: str, start: Any, end: Any) -> ColumnElement[Any]:
    """``end - start`` in seconds, computed by the database (no rows parsed in Python)."""
    if dialect == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


class Database:
    """The store's engines and transactions; the query classes of the store build on it."""

    def __init__(self, url: str):
        self.url = url
        private_sqlite(url)
        self.engine = make_engine(url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        reader = make_engine(url, writer=False) if url.startswith("sqlite") else self.engine
        self._read_session = sessionmaker(reader, expire_on_commit=False)
        #: SQLite: writers queue on a kernel lock before SQLite's (``writer_lock``).
        self._writer_lock = writer_lock.for_url(url)
        #: Whether the hot transactions run on the DBAPI connection (``prepared``).
        self.direct = DirectTransaction.possible(self.engine)

    def init_schema(self) -> None:
        """Create or upgrade the tables through the migrations (idempotent, and safe when
        several processes start at once)."""
        from ci_pool.store.migrate import upgrade

        upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()
        self._read_session.kw["bind"].dispose()

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A transaction; ``write=False`` for reads that must not queue behind writers."""
        if write and self._writer_lock is not None:
            with self._writer_lock.held(), self._session.begin() as session:
                yield session
            return
        maker = self._session if write else self._read_session
        with maker.begin() as session:
            yield session

    @contextmanager
    def direct_session(self) -> Iterator[DirectTransaction]:
        """A write transaction for kept statements only, on the DBAPI connection (when
        ``direct``): the same writer lock and ``BEGIN IMMEDIATE`` as ``session()``."""
        with direct_transaction(self.engine, self._writer_lock) as tx:
            yield tx

    def ping(self) -> None:
        """Raise when the store does not answer a trivial query."""
        with self.session(write=False) as s:
            s.execute(text("SELECT 1"))
