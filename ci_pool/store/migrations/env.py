"""Alembic environment: migrations run on the connection the store hands over.

``Store.init_schema()`` runs them at start; ``alembic -c ci_pool/store/alembic.ini``
works too for operators who want to run or inspect them by hand."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from ci_pool.store.schema import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # run from the alembic command line
        url = config.get_main_option("sqlalchemy.url") or ""
        with create_engine(url).connect() as conn:
            _migrate(conn)
            conn.commit()
        return
    _migrate(connection)


def _migrate(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata(),
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
