"""The store suites' fixtures: a store on both backends, and a pool that records what it
would publish."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from ci_pool.service.pool import Pool
from ci_pool.settings import load_settings
from ci_pool.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The same suite on both backends (PostgreSQL is what a multi-host pool uses)."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path}/s.db")
    else:
        s = Store(request.getfixturevalue("postgres_url"))
        with s.engine.begin() as conn:  # an empty database, migrations included
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    s.init_schema()
    yield s
    s.close()


class RecordingPool(Pool):
    """A pool whose publish records the jobs it would send to the broker."""

    published: list[str]

    def publish(self, capability: str, job_id: str) -> None:
        self.published.append(job_id)


@pytest.fixture
def pool(store: Store, tmp_path: Path) -> RecordingPool:
    p = RecordingPool(load_settings(None, home=tmp_path / "home"), store)
    p.published = []
    return p
