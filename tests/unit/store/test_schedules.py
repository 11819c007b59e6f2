"""Registered repositories and schedule slots in the store: a slot is claimed once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ci_pool.exceptions import InputError, NotFound
from ci_pool.store import Store
from ci_pool.store.schedules import (
    Schedule,
    add_repository,
    claim_slot,
    find_repository,
    finish_slot,
    list_repositories,
    record_scan,
    release_slot,
    remove_repository,
    schedules_of,
    slots_of,
)

URL = "https://git.example.org/org/app.git"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    s.init_schema()
    return s


def test_a_slot_is_claimed_by_one_caller_only(store: Store) -> None:
    repo = add_repository(store, URL, "main", "ops")
    slot = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert claim_slot(store, repo.id, "ci.yml", "0 10 * * *", slot, "beat-a")
    assert not claim_slot(store, repo.id, "ci.yml", "0 10 * * *", slot, "beat-b")
    # Another cron, file or minute is another slot.
    assert claim_slot(store, repo.id, "ci.yml", "0 * * * *", slot, "beat-b")
    finish_slot(store, repo.id, "ci.yml", "0 10 * * *", slot, pipeline_id="p1")
    rows = {r.cron: r for r in slots_of(store, repo.id)}
    assert (rows["0 10 * * *"].claimed_by, rows["0 10 * * *"].pipeline_id) == ("beat-a", "p1")
    assert (rows["0 * * * *"].claimed_by, rows["0 * * * *"].pipeline_id) == ("beat-b", None)


def test_a_released_slot_can_be_claimed_again_unless_it_started_a_pipeline(store: Store) -> None:
    repo = add_repository(store, URL, "main")
    slot = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert claim_slot(store, repo.id, "a.yml", "* * * * *", slot, "x")
    release_slot(store, repo.id, "a.yml", "* * * * *", slot)
    assert claim_slot(store, repo.id, "a.yml", "* * * * *", slot, "y")
    finish_slot(store, repo.id, "a.yml", "* * * * *", slot, pipeline_id="p")
    release_slot(store, repo.id, "a.yml", "* * * * *", slot)
    assert not claim_slot(store, repo.id, "a.yml", "* * * * *", slot, "z")


def test_registrations(store: Store) -> None:
    repo = add_repository(store, URL, "main")
    with pytest.raises(InputError, match="registered already"):
        add_repository(store, URL, "dev")
    record_scan(store, repo.id, "c" * 40, [Schedule("ci.yml", "0 4 * * *")], None)
    [row] = list_repositories(store)
    assert row.scanned_commit == "c" * 40
    assert schedules_of(row) == [Schedule("ci.yml", "0 4 * * *")]
    assert find_repository(store, URL).id == repo.id
    remove_repository(store, repo.id)
    with pytest.raises(NotFound, match="no registered repository"):
        find_repository(store, URL)
