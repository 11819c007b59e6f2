"""Fenced job transitions: every state change is one fenced UPDATE plus one audit row, in
the caller's transaction, so two workers can never both own a job."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    Table,
    Update,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session, make_transient_to_detached

from ci_pool import defaults
from ci_pool.core.retry import AfterAttempt, Next, after_attempt
from ci_pool.core.specs import FINAL_STATES, RETRY_TRANSITIONS, JobState, sources_of
from ci_pool.store.models import Job, JobEvent, utcnow
from ci_pool.store.outbox import note_change
from ci_pool.store.prepared import DirectTransaction

#: States a retry puts back to run: the sources of the operator's retry edges (rejected jobs
#: stay rejected: a retry is not a way around policy).
RETRYABLE_STATES = tuple(sorted(s.value for s in RETRY_TRANSITIONS))
_EVENTS = cast(Table, JobEvent.__table__)
# Built once: every transition runs these, and building a statement costs more CPU than
# SQLite takes to run it.
_JOBS = cast(Table, Job.__table__)
_STATE_OF = select(_JOBS.c.state).where(_JOBS.c.id == bindparam("job_id"))
_JOB_BY_ID = (
    select(Job).where(Job.id == bindparam("job_id")).execution_options(populate_existing=True)
)
_ADD_EVENT = insert(_EVENTS)
#: The fenced UPDATEs of the runner's hot transitions (its claim, its outcome), each built
#: once per shape: building one costs more CPU than SQLite takes to run it. Core UPDATEs
#: of the table that return what their caller needs (RETURNING): no reload of the row
#: and no ORM unit of work. Their expressions name the table's columns (``_JOBS.c``), never
#: the mapped class's attributes: a statement that mentions the class goes through the
#: ORM's execution, which copies it at every call and computes its cache key again.
_PREPARED: dict[tuple[Any, ...], Update] = {}
#: What each kept shape returns: the whole row for a claim (the runner runs the job from
#: it), what the retry policy and the caller need for a close.
_CLOSED_COLUMNS = (
    _JOBS.c.id,
    _JOBS.c.state,
    _JOBS.c.attempt,
    _JOBS.c.max_attempts,
    _JOBS.c.cancel_requested,
    _JOBS.c.commit_sha,
    _JOBS.c.pipeline_id,
    _JOBS.c.reason,
)
_RETURNING = {"claim": tuple(_JOBS.c), "close": _CLOSED_COLUMNS}
_SAME_ATTEMPT = _JOBS.c.attempt == bindparam("f_attempt")
_INSERT_JOB = insert(_JOBS)
_JOB_MANAGER = sa_inspect(Job).class_manager
#: The columns without a default, as None: every insert names every column, as the ORM's
#: flush did (a JSON column then holds JSON null, not SQL NULL).
_NO_DEFAULT: dict[str, Any] = {
    attr.key: None for attr in sa_inspect(Job).column_attrs if attr.columns[0].default is None
}


@dataclass(frozen=True, slots=True)
class Closed:
    """A job as closing one of its attempts left it (after the retry policy's follow-up):
    what the closer needs, not the whole row."""

    id: str
    state: JobState
    attempt: int
    max_attempts: int
    cancel_requested: bool
    commit_sha: str | None
    pipeline_id: str | None
    reason: str | None

    @classmethod
    def of(cls, row: Job) -> Closed:
        return cls(
            row.id,
            JobState(row.state),
            row.attempt,
            row.max_attempts,
            bool(row.cancel_requested),
            row.commit_sha,
            row.pipeline_id,
            row.reason,
        )

    @classmethod
    def of_columns(cls, row: Mapping[str, Any]) -> Closed:
        return cls(
            row["id"],
            JobState(row["state"]),
            row["attempt"],
            row["max_attempts"],
            bool(row["cancel_requested"]),
            row["commit_sha"],
            row["pipeline_id"],
            row["reason"],
        )


def _add_event(
    s: Session | DirectTransaction,
    job_id: str,
    attempt: int,
    from_state: str | None,
    to_state: str,
    at: datetime,
    runner_id: str | None,
    reason: str | None,
) -> None:
    """A job's audit row, by a Core insert: the ORM's unit of work costs more than the
    statement for one row."""
    s.execute(
        _ADD_EVENT,
        {
            "job_id": job_id,
            "attempt": attempt,
            "from_state": from_state,
            "to_state": to_state,
            "at": at,
            "runner_id": runner_id,
            "reason": reason,
        },
    )


def insert_job(
    s: Session | DirectTransaction, now: datetime, state: JobState, fields: dict[str, Any]
) -> Job:
    """A new job row in ``state`` plus its first audit row, in the caller's transaction.

    A Core insert: the ORM's flush of one new row costs about half of a submit's CPU. The
    job returned is built from the inserted values (the columns' defaults included) and
    is detached, as a job read in a finished session is."""
    row = {
        **_NO_DEFAULT,
        **fields,
        "id": fields.get("id") or uuid.uuid4().hex[:16],
        "state": state.value,
        "attempt": 0,
        "created_at": now,
        "updated_at": now,
        "queued_at": now if state is JobState.QUEUED else None,
        "finished_at": now if state in FINAL_STATES else None,
    }
    if isinstance(s, DirectTransaction):
        inserted = s.insert(_INSERT_JOB, row)
    else:
        inserted = s.execute(_INSERT_JOB, row).last_inserted_params()  # type: ignore[attr-defined]
    job = detached_job(inserted)
    _add_event(s, job.id, 0, None, state.value, now, None, job.reason)
    note_change(s, job.id, job.commit_sha, now)
    return job


def fenced_transition(
    s: Session,
    job_id: str,
    to: JobState,
    *,
    where: Iterable[ColumnElement[bool]] = (),
    runner_id: str | None = None,
    reason: str | None = None,
    values: dict[str, Any] | None = None,
    operator: bool = False,
    current: str | None = None,
) -> Job | None:
    """One fenced UPDATE from any state allowed to reach ``to`` (by the transition
    table, or by the operator's retry table with ``operator``), plus its audit row; the
    job as it is now. ``current``: the job's state as the caller read it in this
    transaction (not read again; the UPDATE is fenced on it all the same)."""
    now = utcnow()
    if current is None:
        current = s.scalar(_STATE_OF, {"job_id": job_id})
    if current is None or JobState(current) not in sources_of(to, operator=operator):
        return None
    vals = _values(to, now, reason, values)
    res = s.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == current, *where)
        .values(**vals)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return None
    job = s.scalars(_JOB_BY_ID, {"job_id": job_id}).one()
    _add_event(s, job_id, job.attempt, current, to.value, now, runner_id, reason)
    note_change(s, job_id, job.commit_sha, now)
    return job


def kept_transition(
    s: Session | DirectTransaction,
    job_id: str,
    to: JobState,
    *,
    shape: str,
    current: str,
    where: Iterable[ColumnElement[bool]],
    params: dict[str, Any],
    runner_id: str | None = None,
    reason: str | None = None,
    values: dict[str, Any] | None = None,
) -> Mapping[str, Any] | None:
    """``fenced_transition`` for the runner's hot paths: the UPDATE is built once and
    kept under ``shape`` (``where`` must be the same expressions at every call with that
    shape, their varying values bound through ``params``), and it returns the columns of
    ``_RETURNING[shape]`` instead of the row being read again. None when the fence did
    not match. ``current`` must be a state allowed to reach ``to``."""
    now = utcnow()
    if JobState(current) not in sources_of(to):
        return None
    vals = _values(to, now, reason, values)
    stmt, bound = _prepared(shape, job_id, current, where, vals, params)
    row: Mapping[str, Any] | None
    if isinstance(s, DirectTransaction):
        row = s.first(stmt, bound)
    else:
        found = s.execute(stmt, bound).first()
        row = None if found is None else cast("Mapping[str, Any]", found._mapping)
    if row is None:
        return None
    _add_event(s, job_id, row["attempt"], current, to.value, now, runner_id, reason)
    note_change(s, job_id, row["commit_sha"], now)
    return row


def detached_job(row: Mapping[str, Any]) -> Job:
    """A detached job from a whole row that a statement returned (or that an insert
    wrote), as a job read in a finished session is.

    Built as the ORM's loader builds a loaded row: the values go into the instance's
    dict, not through 47 instrumented attribute sets (a third of a claim's CPU here)."""
    job: Job = _JOB_MANAGER.new_instance()
    job.__dict__.update(row)
    make_transient_to_detached(job)
    return job


def returns_rows(s: Session) -> bool:
    """Whether the session's database returns the rows an UPDATE changed (SQLite >= 3.35
    and PostgreSQL do): ``kept_transition`` needs it."""
    return bool(s.get_bind().dialect.update_returning)


def _values(
    to: JobState, now: datetime, reason: str | None, values: dict[str, Any] | None
) -> dict[str, Any]:
    vals: dict[str, Any] = {"state": to.value, "updated_at": now, **(values or {})}
    if reason is not None:
        vals["reason"] = reason
    return vals


def _prepared(
    shape: str,
    job_id: str,
    current: str,
    where: Iterable[ColumnElement[bool]],
    vals: dict[str, Any],
    params: dict[str, Any],
) -> tuple[Update, dict[str, Any]]:
    """The kept UPDATE of ``shape`` for these value columns, and its parameters: plain
    values are bound, SQL expressions (``attempt + 1``) are part of the statement."""
    plain = {k: v for k, v in vals.items() if not isinstance(v, ClauseElement)}
    key = (shape, tuple(sorted(vals)), tuple(sorted(plain)))
    stmt = _PREPARED.get(key)
    if stmt is None:
        stmt = _PREPARED[key] = (
            update(_JOBS)
            .where(_JOBS.c.id == bindparam("f_job_id"), _JOBS.c.state == bindparam("f_current"))
            .where(*where)
            .values(**{k: bindparam(f"v_{k}") if k in plain else v for k, v in vals.items()})
            .returning(*_RETURNING[shape])
        )
    bound = {f"v_{k}": v for k, v in plain.items()}
    return stmt, {"f_job_id": job_id, "f_current": current, **bound, **params}


def close_running_attempt(
    s: Session,
    job_id: str,
    attempt: int,
    state: JobState,
    *,
    now: datetime,
    where: list[ColumnElement[bool]],
    runner_id: str | None,
    reason: str | None,
    values: dict[str, Any] | None = None,
    backoff: float = defaults.RETRY_BACKOFF,
) -> tuple[Closed, AfterAttempt] | None:
    """Close a running attempt in ``state`` and follow the retry policy's decision (back to
    ``queued``, ``cancelled``, or left as it is), in the caller's transaction. A cancelled
    attempt keeps the reason its cancel was requested with (``cancel_job``)."""
    if state is JobState.CANCELLED:
        requested = s.scalar(
            select(Job.reason).where(Job.id == job_id, Job.cancel_requested.is_(True))
        )
        reason = requested or reason
    vals = _closing_values(now, values)
    # Fenced on "running": the state is not read first. The runner's own close (no
    # extra fence) runs a kept statement.
    job: Closed
    if where or not returns_rows(s):
        found = fenced_transition(
            s,
            job_id,
            state,
            where=[Job.attempt == attempt, *where],
            runner_id=runner_id,
            reason=reason,
            values=vals,
            current=JobState.RUNNING.value,
        )
        if found is None:
            return None
        job = Closed.of(found)
    else:
        kept = _kept_close(s, job_id, attempt, state, runner_id, reason, vals)
        if kept is None:
            return None
        job = Closed.of_columns(kept)
    decision = after_attempt(
        state, job.attempt, job.max_attempts, job.cancel_requested, backoff=backoff
    )
    follow = None
    if decision.next is Next.REQUEUE:
        follow = fenced_transition(
            s,
            job_id,
            JobState.QUEUED,
            where=[Job.attempt == attempt],
            runner_id=runner_id,
            reason=decision.reason,
            values={"queued_at": now},
        )
    elif decision.next is Next.CANCEL:
        follow = fenced_transition(
            s, job_id, JobState.CANCELLED, runner_id=runner_id, reason=decision.reason
        )
    return (job if follow is None else Closed.of(follow)), decision


def close_kept_attempt(
    tx: DirectTransaction,
    job_id: str,
    attempt: int,
    state: JobState,
    *,
    now: datetime,
    runner_id: str | None,
    reason: str | None,
    values: dict[str, Any] | None = None,
) -> tuple[Closed, AfterAttempt] | None:
    """``close_running_attempt`` for a runner's own close that ends its job (``state``
    neither ``error`` nor ``cancelled``, so the retry policy has nothing to follow up
    and no cancel reason is read), on a direct transaction."""
    if state in (JobState.ERROR, JobState.CANCELLED):
        raise ValueError(f"an attempt closed in {state.value} takes close_running_attempt")
    kept = _kept_close(tx, job_id, attempt, state, runner_id, reason, _closing_values(now, values))
    if kept is None:
        return None
    job = Closed.of_columns(kept)
    return job, after_attempt(state, job.attempt, job.max_attempts, job.cancel_requested)


def _closing_values(now: datetime, values: dict[str, Any] | None) -> dict[str, Any]:
    return {"finished_at": now, "lease_until": None, **(values or {})}


def _kept_close(
    s: Session | DirectTransaction,
    job_id: str,
    attempt: int,
    state: JobState,
    runner_id: str | None,
    reason: str | None,
    vals: dict[str, Any],
) -> Mapping[str, Any] | None:
    return kept_transition(
        s,
        job_id,
        state,
        shape="close",
        current=JobState.RUNNING.value,
        where=[_SAME_ATTEMPT],
        params={"f_attempt": attempt},
        runner_id=runner_id,
        reason=reason,
        values=vals,
    )


def cancel_job(s: Session, job_id: str, reason: str) -> Job | None:
    """Cancel a job in the caller's transaction: at once when it is not running (the job),
    else flag it for its worker, which stops and removes its container (None)."""
    state = s.scalar(select(Job.state).where(Job.id == job_id))
    if state in (JobState.QUEUED, JobState.BLOCKED, JobState.ERROR):
        done = fenced_transition(
            s,
            job_id,
            JobState.CANCELLED,
            reason=reason,
            values={"cancel_requested": True, "finished_at": utcnow()},
        )
        if done is not None:
            return done
    # The reason is kept for the attempt's close, which its worker writes once stopped.
    s.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.RUNNING.value)
        .values(cancel_requested=True, reason=reason)
        .execution_options(synchronize_session=False)
    )
    return None
