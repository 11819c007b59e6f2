"""The hot transactions on the DBAPI connection (``store.prepared``, SQLite): a submit, a
claim and a close write exactly the rows the Session path writes, raise what it raises,
and a failed one writes nothing and frees the writer."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, StatementError

from ci_pool.core.evidence import Evidence
from ci_pool.core.specs import JobState
from ci_pool.store import Claim, FinalChunk, Misrouted, Store

S = JobState
SHA = "a" * 40
#: Columns that hold the time of the call or a row number: they differ between two runs.
UNSTABLE = {
    "created_at",
    "updated_at",
    "queued_at",
    "started_at",
    "finished_at",
    "lease_until",
    "at",
    "next_try_at",
    "id",
}
TABLES = ("jobs", "job_events", "log_chunks", "status_outbox")


def open_store(path: Path, *, direct: bool) -> Store:
    store = Store(f"sqlite:///{path}")
    store.init_schema()
    assert store.direct  # SQLite here has RETURNING: the direct path is the default
    store.direct = direct
    return store


def add(store: Store, job_id: str, **over: Any) -> None:
    fields: dict[str, Any] = {
        "id": job_id,
        "name": "build",
        "capability": "linux",
        "queue": "linux",
        "repo": "https://git.example.com/org/app.git",
        "ref": "main",
        "commit_sha": SHA,
        "steps": [{"name": "run", "run": "make"}],
        "env": {"A": "1"},
        "labels": ["linux"],
        "checkout": {"fetch_depth": 5},
        "timeout_s": 60,
        "max_attempts": 2,
        **over,
    }
    store.create_job(**fields)


def scenario(store: Store) -> list[Any]:
    """A job's life on the runner's hot paths, and the fences around them; what each
    call answered, without the times."""
    answers: list[Any] = []
    evidence = Evidence(runner_id="r1", mode="host", exit_code=0, stdout_sample="ok\n")
    add(store, "j-ok")
    got = store.claim("j-ok", "r1", 30)
    assert isinstance(got, Claim)
    answers.append(stable(got.job))
    answers.append(store.claim("j-ok", "r2", 30))  # a second delivery finds nothing
    answers.append(
        store.close_attempt(
            "j-ok",
            1,
            S.SUCCEEDED,
            runner_id="r1",
            values={"exit_code": 0, "evidence": evidence},
            log=FinalChunk(0, "ok\n"),
        )
    )
    answers.append(store.close_attempt("j-ok", 1, S.FAILED, runner_id="r1"))  # closed already
    add(store, "j-named", runner="build-*", commit_sha=None, env={})
    answers.append(store.claim("j-named", "r1", 30))
    got = store.claim("j-named", "build-1", 30)
    assert isinstance(got, Claim)
    answers.append(stable(got.job))
    answers.append(store.close_attempt("j-named", 2, S.FAILED, runner_id="build-1"))
    answers.append(store.close_attempt("j-named", 1, S.FAILED, runner_id="build-1", reason="x"))
    add(store, "j-retry")
    store.claim("j-retry", "r1", 30)
    answers.append(store.close_attempt("j-retry", 1, S.ERROR, runner_id="r1", reason="infra"))
    add(store, "j-rejected", state=S.REJECTED, reason="policy: no")
    return answers


def stable(job: Any) -> dict[str, Any]:
    return {k: v for k, v in job.__dict__.items() if not k.startswith("_") and k not in UNSTABLE}


def dump(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of the job tables as SQLite holds it (text, as written), without the
    columns that differ between runs."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return {
            t: [
                {k: row[k] for k in row.keys() if k not in UNSTABLE}
                for row in conn.execute(f"SELECT * FROM {t} ORDER BY rowid")
            ]
            for t in TABLES
        }
    finally:
        conn.close()


def test_the_direct_path_writes_and_answers_what_the_session_path_does(tmp_path: Path) -> None:
    direct, session = (
        open_store(tmp_path / "d.db", direct=True),
        open_store(tmp_path / "s.db", direct=False),
    )
    try:
        answers = scenario(direct)
        assert answers == scenario(session)
    finally:
        direct.close()
        session.close()
    rows = dump(tmp_path / "d.db")
    assert rows == dump(tmp_path / "s.db")
    # The scenario did reach every table, with times written as the Session writes them.
    assert all(rows[t] for t in TABLES)
    assert isinstance(answers[0]["checkout"].fetch_depth, int) and answers[0]["attempt"] == 1
    assert isinstance(answers[4], Misrouted)
    assert answers[1] is None and answers[3] is None and answers[6] is None
    assert [r["to_state"] for r in rows["job_events"] if r["job_id"] == "j-retry"] == [
        "queued",
        "running",
        "error",
        "queued",
    ]


def test_times_come_back_aware_and_as_written(tmp_path: Path) -> None:
    store = open_store(tmp_path / "d.db", direct=True)
    try:
        add(store, "j")
        got = store.claim("j", "r1", 30)
        assert isinstance(got, Claim)
        job = got.job
        assert job.started_at is not None and job.started_at.tzinfo is not None
        assert job.lease_until is not None and job.lease_until > job.started_at
        assert store.get_job("j").started_at == job.started_at
        assert job.created_at == store.get_job("j").created_at
    finally:
        store.close()


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "session"])
def test_a_failed_close_writes_nothing_and_frees_the_writer(tmp_path: Path, direct: bool) -> None:
    store = open_store(tmp_path / "d.db", direct=direct)
    try:
        add(store, "j")
        store.claim("j", "r1", 30)
        # The chunk is inserted first; the outcome's value is refused by its column type.
        with pytest.raises(StatementError):
            store.close_attempt(
                "j",
                1,
                S.SUCCEEDED,
                runner_id="r1",
                values={"evidence": "not an evidence record"},
                log=FinalChunk(0, "tail\n"),
            )
        assert store.get_job("j").state == S.RUNNING.value
        assert store.read_log("j") == ""
        # Another thread can write at once: the writer lock was released.
        closed: list[Any] = []
        writer = threading.Thread(
            target=lambda: closed.append(
                store.close_attempt("j", 1, S.SUCCEEDED, runner_id="r1", log=FinalChunk(0, "x\n"))
            )
        )
        writer.start()
        writer.join(20)
        assert not writer.is_alive() and closed and closed[0] is not None
        assert store.get_job("j").state == S.SUCCEEDED.value
        assert store.read_log("j") == "x\n"
    finally:
        store.close()


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "session"])
def test_a_log_chunk_stored_twice_is_an_integrity_error(tmp_path: Path, direct: bool) -> None:
    """The runner API answers this one with a clear 400 (``runner_io``): it catches
    SQLAlchemy's ``IntegrityError``, which the direct path raises too."""
    store = open_store(tmp_path / "d.db", direct=direct)
    try:
        add(store, "j")
        store.claim("j", "r1", 30)
        store.append_log("j", 1, 0, "first\n")
        with pytest.raises(IntegrityError):
            store.close_attempt("j", 1, S.SUCCEEDED, runner_id="r1", log=FinalChunk(0, "again"))
        assert store.get_job("j").state == S.RUNNING.value
        assert store.read_log("j") == "first\n"
    finally:
        store.close()
