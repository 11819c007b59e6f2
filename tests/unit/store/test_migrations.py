"""Migrations: a new store and an old one both reach the newest schema, which matches
the models exactly, on SQLite and PostgreSQL; many processes may start at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from ci_pool.store import Store, tokens
from ci_pool.store.migrate import HEAD, MIGRATIONS, config
from ci_pool.store.schema import metadata


def test_head_names_the_newest_revision() -> None:
    assert ScriptDirectory.from_config(config()).get_current_head() == HEAD
    assert (MIGRATIONS / "script.py.mako").is_file()


def _drift(url: str) -> list[object]:
    engine = create_engine(url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert ctx.get_current_revision() == HEAD
        diff = compare_metadata(ctx, metadata())
    engine.dispose()
    return list(diff)


def test_a_new_sqlite_store_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    Store(url).init_schema()
    assert _drift(url) == []


def test_a_new_postgresql_store_matches_the_models(postgres_url: str) -> None:
    store = Store(postgres_url)
    with store.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    store.init_schema()
    store.init_schema()  # a second start finds it done
    assert _drift(postgres_url) == []
    store.close()


def test_a_store_made_before_migrations_is_upgraded_in_place(tmp_path: Path) -> None:
    """The first release created its tables without alembic: they are taken as 0001."""
    from alembic import command

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(config(conn), "0001")
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(
            text(
                "INSERT INTO api_tokens (name, sha256, scopes, created_at, revoked) "
                "VALUES ('old-bot', :d, '[\"read\"]', '2026-11-01 00:00:00', 0)"
            ),
            {"d": tokens.digest("cip_old")},
        )
    engine.dispose()
    store = Store(url)
    store.init_schema()
    columns = {c["name"] for c in inspect(store.engine).get_columns("api_tokens")}
    assert {"capabilities", "repos"} <= columns
    row = tokens.verify(store, "cip_old")
    assert row is not None and row.name == "old-bot" and row.capabilities is None
    assert _drift(url) == []


def test_many_processes_starting_at_once_all_get_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    code = f"from ci_pool.store import Store; Store({url!r}).init_schema()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(6)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    assert _drift(url) == []


@pytest.mark.parametrize("revision", ["0001", "base"])
def test_downgrades_run(tmp_path: Path, revision: str) -> None:
    from alembic import command

    engine = create_engine(f"sqlite:///{tmp_path / 'down.db'}")
    with engine.begin() as conn:
        command.upgrade(config(conn), "head")
        command.downgrade(config(conn), revision)
        names = set(inspect(conn).get_table_names())
    assert "idempotency_keys" not in names
    assert ("jobs" in names) == (revision == "0001")
