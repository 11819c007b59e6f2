"""Idempotency-Key bookkeeping on a real SQLite store."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from ci_pool.exceptions import InputError
from ci_pool.store import Store
from ci_pool.store.idempotency import KEY_TTL, IdempotencyKey, KeyConflict, forget_expired, run_once
from ci_pool.store.models import utcnow


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'k.db'}")
    s.init_schema()
    return s


def test_first_result_again_and_conflict_on_another_body(store: Store) -> None:
    made: list[str] = []

    def create() -> str:
        made.append(f"job-{len(made)}")
        return made[-1]

    assert run_once(store, "bot", "k1", "job", {"a": 1}, create) == ("job-0", False)
    assert run_once(store, "bot", "k1", "job", {"a": 1}, create) == ("job-0", True)
    with pytest.raises(KeyConflict, match="different request"):
        run_once(store, "bot", "k1", "job", {"a": 2}, create)
    with pytest.raises(KeyConflict):
        run_once(store, "bot", "k1", "pipeline", {"a": 1}, create)
    assert run_once(store, "other-bot", "k1", "job", {"a": 1}, create) == ("job-1", False)
    assert made == ["job-0", "job-1"]


def test_a_failed_first_request_lets_the_key_go(store: Store) -> None:
    def boom() -> str:
        raise InputError("bad", field="repo")

    with pytest.raises(InputError):
        run_once(store, "bot", "k", "job", {}, boom)
    assert run_once(store, "bot", "k", "job", {}, lambda: "job-x") == ("job-x", False)


def test_bad_keys_are_refused(store: Store) -> None:
    for key in ("", "x" * 201, "tab\there"):
        with pytest.raises(InputError, match="printable characters"):
            run_once(store, "bot", key, "job", {}, lambda: "j")


def test_concurrent_requests_create_once(store: Store) -> None:
    made: list[str] = []
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(6)

    def create() -> str:
        made.append("job")
        return "job-1"

    def call() -> None:
        barrier.wait()
        results.append(run_once(store, "bot", "same", "job", {"x": 1}, create))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made == ["job"]
    assert sorted(r[1] for r in results) == [False] + [True] * 5


def test_expired_keys_are_forgotten_and_free_again(store: Store) -> None:
    run_once(store, "bot", "old", "job", {"a": 1}, lambda: "job-1")
    run_once(store, "bot", "new", "job", {"a": 1}, lambda: "job-2")
    with store.session() as s:
        s.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == "old")
            .values(created_at=utcnow() - KEY_TTL - timedelta(minutes=1))
        )
    assert run_once(store, "bot", "old", "job", {"b": 2}, lambda: "job-3") == ("job-3", False)
    with store.session() as s:
        s.execute(
            update(IdempotencyKey).values(created_at=utcnow() - KEY_TTL - timedelta(minutes=1))
        )
    assert forget_expired(store) == 2
    assert forget_expired(store) == 0
