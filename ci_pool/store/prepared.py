"""Kept statements run on the DBAPI connection: the hot transactions of a job (the submit's
insert, the runner's claim and close) without the Session and the Core execution layer.

Each statement is a Core statement built once (the same one the Session path runs),
compiled once per dialect, and run with the compiled statement's own bind and result
processors, so values are written and read exactly as SQLAlchemy writes and reads them.
What is skipped is the per-call work around them: the Session, the connection's
execution context, the cache-key look-up and the building of ``Row`` objects. Measured
on SQLite: a transaction of 3-4 statements costs about a third of its Session form.

Only SQLite takes this path (``DirectTransaction.possible``); PostgreSQL keeps the Session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import ClauseElement

from ci_pool.store import writer_lock

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class Prepared:
    """One statement compiled for one dialect: its SQL, its parameters in order with their
    bind processors, the Python-side defaults it fills, and its result columns."""

    sql: str
    #: (name, bind processor) of each positional parameter.
    binds: tuple[tuple[str, Processor], ...]
    #: (name, default) of each column whose default is computed in Python at each call.
    defaults: tuple[tuple[str, Any], ...]
    #: The values given in the statement itself, by parameter name.
    statics: dict[str, Any]
    #: Names of the returned columns and their result processors.
    columns: tuple[str, ...]
    results: tuple[Processor, ...]

    @classmethod
    def of(cls, stmt: ClauseElement, dialect: Dialect, keys: Sequence[str]) -> Prepared:
        compiled: Any = stmt.compile(dialect=dialect, column_keys=list(keys))
        if compiled.positiontup is None:
            raise ValueError(f"dialect {dialect.name} has no positional parameters")
        procs = compiled._bind_processors
        binds = tuple((name, procs.get(name)) for name in compiled.positiontup)
        defaults = tuple(
            (col.key, col.default) for col in compiled.insert_prefetch + compiled.update_prefetch
        )
        statics = {
            name: bind.effective_value
            for name, bind in ((n, compiled.binds[n]) for n in compiled.positiontup)
            if not bind.required and name not in dict(defaults)
        }
        entries = compiled._result_columns or []
        return cls(
            sql=compiled.string,
            binds=binds,
            defaults=defaults,
            statics=statics,
            columns=tuple(e.keyname for e in entries),
            results=tuple(e.type._cached_result_processor(dialect, None) for e in entries),
        )

    def filled(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with the statement's own values and the Python-side defaults of the
        columns it leaves out."""
        if not self.defaults and not self.statics:
            return params
        params = {**self.statics, **params}
        for key, default in self.defaults:
            if key not in params:
                params[key] = default.arg(None) if default.is_callable else default.arg
        return params

    def parameters(self, filled: dict[str, Any]) -> list[Any]:
        """The positional parameters, processed, from ``filled`` parameters."""
        return [filled[name] if proc is None else proc(filled[name]) for name, proc in self.binds]

    def row(self, raw: Sequence[Any]) -> dict[str, Any]:
        """A returned row as column name -> value, through the result processors."""
        return {
            name: value if proc is None else proc(value)
            for name, proc, value in zip(self.columns, self.results, raw, strict=True)
        }


class DirectTransaction:
    """A write transaction on a pooled DBAPI connection, for the kept statements only."""

    __slots__ = ("_cursor", "dialect")

    def __init__(self, cursor: Any, dialect: Dialect):
        self._cursor = cursor
        self.dialect = dialect

    @staticmethod
    def possible(engine: Engine) -> bool:
        """Whether ``engine``'s database takes this path: SQLite with ``RETURNING``."""
        dialect = engine.dialect
        return dialect.name == "sqlite" and bool(dialect.update_returning)

    def execute(self, stmt: ClauseElement, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run a kept statement (built once: compiled forms are kept by statement); the
        rows it returns, as column name -> value."""
        prepared = _prepared(stmt, self.dialect, params)
        self._run(prepared, prepared.filled(params))
        if not prepared.columns:
            return []
        return [prepared.row(raw) for raw in self._cursor.fetchall()]

    def insert(self, stmt: ClauseElement, params: dict[str, Any]) -> dict[str, Any]:
        """Run a kept INSERT; the values it wrote, its columns' defaults included (what
        ``last_inserted_params()`` gives on the Session path)."""
        prepared = _prepared(stmt, self.dialect, params)
        filled = prepared.filled(params)
        self._run(prepared, filled)
        return filled

    def _run(self, prepared: Prepared, filled: dict[str, Any]) -> None:
        """Execute, raising what the Session path raises: the DBAPI's errors wrapped as
        SQLAlchemy's (``IntegrityError``, ``OperationalError``...), a value the column's
        type refuses as ``StatementError``."""
        try:
            positional = prepared.parameters(filled)
        except Exception as exc:
            raise StatementError(
                f"({type(exc).__module__}.{type(exc).__name__}) {exc}", prepared.sql, filled, exc
            ) from exc
        with translated(self.dialect, prepared.sql, filled):
            self._cursor.execute(prepared.sql, positional)

    def first(self, stmt: ClauseElement, params: dict[str, Any]) -> dict[str, Any] | None:
        """The first row a kept statement returns, or None."""
        rows = self.execute(stmt, params)
        return rows[0] if rows else None


#: Compiled statements by (statement, dialect, parameter names); the statement is kept in
#: the value too, so its id is never reused while the entry lives.
_COMPILED: dict[tuple[int, str, tuple[str, ...]], tuple[ClauseElement, Prepared]] = {}


def _prepared(stmt: ClauseElement, dialect: Dialect, params: dict[str, Any]) -> Prepared:
    keys = tuple(params)
    key = (id(stmt), dialect.name, keys)
    hit = _COMPILED.get(key)
    if hit is None:
        hit = _COMPILED[key] = (stmt, Prepared.of(stmt, dialect, keys))
    return hit[1]


@contextmanager
def direct_transaction(
    engine: Engine, lock: writer_lock.WriterLock | None
) -> Iterator[DirectTransaction]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on a pooled SQLite connection, under the store's
    writer lock (as ``Database.session`` takes it); rolled back on any exception."""
    conn = engine.raw_connection()
    try:
        with lock.held() if lock is not None else _nothing():
            dbapi = conn.driver_connection
            assert dbapi is not None
            with translated(engine.dialect, "BEGIN IMMEDIATE", {}):
                dbapi.execute("BEGIN IMMEDIATE")
            try:
                yield DirectTransaction(dbapi.cursor(), engine.dialect)
            except BaseException:
                dbapi.rollback()
                raise
            with translated(engine.dialect, "COMMIT", {}):
                dbapi.commit()
    finally:
        conn.close()


@contextmanager
def translated(dialect: Dialect, sql: str, params: dict[str, Any]) -> Iterator[None]:
    """The DBAPI's errors as SQLAlchemy raises them (``DBAPIError.instance``)."""
    base = dialect.loaded_dbapi.Error
    try:
        yield
    except base as exc:
        raise DBAPIError.instance(sql, params, exc, base, dialect=dialect) from exc


@contextmanager
def _nothing() -> Iterator[None]:
    yield
