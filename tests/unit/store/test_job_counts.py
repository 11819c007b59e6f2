"""The pool's counts on both backends: one store read behind ``ci-pool status``,
``ci-pool runners`` and the metrics, so the three never disagree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, event

from ci_pool.core.specs import JobState as S
from ci_pool.service.monitoring import collect
from ci_pool.service.views import queue_statuses
from ci_pool.store import Store
from tests.unit.store.conftest import RecordingPool
from tests.unit.store.test_repository import claim, new_job


def test_counts_per_state_and_capability_oldest_queued_and_running_per_runner(
    store: Store,
) -> None:
    first = new_job(store)
    new_job(store)
    new_job(store, capability="android", queue="android", state=S.BLOCKED)
    run_a, run_b, done = new_job(store), new_job(store), new_job(store)
    claim(store, run_a.id, runner="r1")
    claim(store, run_b.id, runner="r1")
    claim(store, done.id, runner="r2")
    store.finish(done.id, 1, S.FAILED, runner_id="r2", exit_code=2)

    counts = store.job_counts()
    assert counts.by_state == {
        ("linux", "queued"): 2,
        ("linux", "running"): 2,
        ("linux", "failed"): 1,
        ("android", "blocked"): 1,
    }
    assert counts.of("linux", S.QUEUED) == 2 and counts.of("iso", S.QUEUED) == 0
    assert counts.states() == {"queued": 2, "running": 2, "failed": 1, "blocked": 1}
    assert counts.capabilities() == {"linux", "android"}
    assert set(counts.oldest_queued) == {"linux"}
    assert counts.oldest_queued["linux"] == first.queued_at.replace(tzinfo=UTC)
    # Newest first, as ``runners`` lists them; a runner with nothing running is absent.
    assert counts.running == {"r1": [run_b.id, run_a.id]}

    finished = store.finished_since(datetime.now(UTC) - timedelta(hours=1))
    assert dict(finished["linux"].states) == {"failed": 1}
    assert len(finished["linux"].durations) == 1 and finished["linux"].durations[0] >= 0
    assert store.finished_since(datetime.now(UTC) + timedelta(seconds=5)) == {}


def test_status_rows_and_metrics_read_the_same_counts(pool: RecordingPool) -> None:
    store = pool.store
    new_job(store)
    new_job(store, capability="android", queue="android")
    claim(store, new_job(store).id, runner="r1")
    now = datetime.now(UTC)
    counts = store.job_counts()
    rows = queue_statuses(
        ["linux"], counts, store.finished_since(now - timedelta(hours=1)), None, now
    )
    snap = collect(pool, now=now)
    for row in rows:
        assert row.queued == snap.queued.get(row.capability, 0), row
        assert row.oldest_wait_s == round(snap.oldest_wait[row.capability], 1), row
    assert {r.capability: r.running for r in rows} == {"linux": 1, "android": 0}
    assert snap.jobs_by_state["running"] == 1 and snap.jobs_by_state["queued"] == 2


def test_the_last_hours_jobs_are_read_from_one_covering_index(tmp_path: Path) -> None:
    """Status reads every job that ended in the last hour (50k rows on a busy pool): on
    SQLite the window must be one range of ix_jobs_finished with no table lookups, and a
    job that ended and was then sent again (not final) is not counted."""
    store = Store(f"sqlite:///{tmp_path / 'cover.db'}")
    store.init_schema()
    done = new_job(store)
    claim(store, done.id, runner="r1")
    store.finish(done.id, 1, S.SUCCEEDED, runner_id="r1", exit_code=0)
    since = datetime.now(UTC) - timedelta(hours=1)
    statements: list[tuple[str, object]] = []

    def record(_conn: object, _cursor: object, sql: str, params: object, *_rest: object) -> None:
        statements.append((sql, params))

    event.listen(Engine, "before_cursor_execute", record)  # the store's reader engine too
    try:
        got = store.finished_since(since)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert dict(got["linux"].states) == {"succeeded": 1}
    window = [(sql, params) for sql, params in statements if "finished_at >=" in sql]
    assert len(window) == 1
    sql, params = window[0]
    with store.engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()  # type: ignore[arg-type]
    assert "COVERING INDEX ix_jobs_finished" in " ".join(str(row[-1]) for row in plan), plan
    store.close()
