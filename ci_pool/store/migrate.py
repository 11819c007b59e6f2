"""Bring a store's schema to the newest migration (alembic), safely from many processes.

A store created before migrations existed (tables but no ``alembic_version``) is taken
as the first revision and upgraded from there."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

#: The newest revision in migrations/versions (checked by the test suite).
HEAD = "0013_finished_cover"
BASELINE = "0001"
MIGRATIONS = Path(__file__).parent / "migrations"


def config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def current(connection: Connection) -> str | None:
    """The store's revision, by one query of ``alembic_version`` (alembic itself, its Mako
    templates and dialect modules are imported only to upgrade); None without one.
    Several rows (branched heads) come back joined by "+": never HEAD."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    return "+".join(sorted(str(r[0]) for r in rows)) or None


def upgrade(engine: Engine) -> None:
    """Upgrade to HEAD in one transaction; concurrent callers wait and find it done."""
    with engine.connect() as probe:
        if current(probe) == HEAD:
            return
    from alembic import command

    with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE, one writer at a time
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(4711007)"))
        revision = current(conn)
        if revision == HEAD:
            return
        if revision is None and inspect(conn).has_table("jobs"):
            command.stamp(config(conn), BASELINE)
        command.upgrade(config(conn), "head")
