"""A job's life through its fenced transitions: submission, claims and leases, heartbeats,
closing an attempt under the retry policy, and cancellation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update

from ci_pool import defaults
from ci_pool.core.evidence import Evidence
from ci_pool.core.retry import AfterAttempt, Next, lost_reason
from ci_pool.core.runner_names import name_matches
from ci_pool.core.specs import JobState
from ci_pool.exceptions import NotFound
from ci_pool.store.jobs import JobQueries
from ci_pool.store.models import Job, LogChunk, NewJob, utcnow
from ci_pool.store.prepared import DirectTransaction
from ci_pool.store.transitions import (
    Closed,
    cancel_job,
    close_kept_attempt,
    close_running_attempt,
    detached_job,
    fenced_transition,
    insert_job,
    kept_transition,
    returns_rows,
)

#: What a claim reads first (built once: every job is claimed), the runner-name glob too.
#: The claim's statements name the table's columns (see ``transitions._PREPARED``).
_JOBS = cast(Table, Job.__table__)
_CLAIMABLE = select(
    _JOBS.c.state, _JOBS.c.attempt, _JOBS.c.runner_id, _JOBS.c.runner, _JOBS.c.capability
).where(_JOBS.c.id == bindparam("job_id"))
# A Core insert on the table: an ORM-enabled insert costs more than the statement.
_ADD_CHUNK = insert(cast(Table, LogChunk.__table__))
_NEXT_ATTEMPT = _JOBS.c.attempt + 1
_CLAIM_FENCE = [_JOBS.c.state == JobState.QUEUED.value, _JOBS.c.cancel_requested.is_(False)]


@dataclass(frozen=True, slots=True)
class Claim:
    """What a worker gets when it claims a job."""

    job: Job
    #: The attempt that was found abandoned (lease expired) and taken over, if any.
    took_over: int | None = None


@dataclass(frozen=True, slots=True)
class Misrouted:
    """A claim refused because the job is sent to runners by a name the claimer does not
    match: the job is left as it was, for a runner that does."""

    job_id: str
    #: The runner-name glob the job is sent to.
    runners: str
    state: JobState
    capability: str


@dataclass(frozen=True, slots=True)
class FinalChunk:
    """The last piece of an attempt's log, stored in the transaction that closes it."""

    seq: int
    data: str


#: Closes the retry policy may follow up (a retry, a cancel) or that read the cancel's
#: reason: they take the Session path.
_FOLLOWED_UP = (JobState.ERROR, JobState.CANCELLED)


def _claim_values(now: datetime, runner_id: str, lease_ttl: float) -> dict[str, Any]:
    return {
        "attempt": _NEXT_ATTEMPT,
        "runner_id": runner_id,
        "lease_until": now + timedelta(seconds=lease_ttl),
        "started_at": now,
        "finished_at": None,
        "exit_code": None,
        "reason": None,
    }


def _chunk(job_id: str, attempt: int, log: FinalChunk) -> dict[str, Any]:
    return {"job_id": job_id, "attempt": attempt, "seq": log.seq, "data": log.data}


def _claim_queued(
    tx: DirectTransaction, job_id: str, runner_id: str, lease_ttl: float
) -> Claim | Misrouted | JobState | None:
    """``JobLifecycle.claim`` of a queued job on a direct transaction: the same first read,
    runner-name check and kept fenced UPDATE; ``JobState.RUNNING`` (nothing written) for a
    running job, whose takeover takes the Session path."""
    row = tx.first(_CLAIMABLE, {"job_id": job_id})
    now = utcnow()  # taken under the write lock, so the lease is not shortened by a wait
    if row is None or row["state"] not in (JobState.QUEUED.value, JobState.RUNNING.value):
        return None
    if row["runner"] is not None and not name_matches(row["runner"], runner_id):
        return Misrouted(job_id, row["runner"], JobState(row["state"]), row["capability"])
    if row["state"] == JobState.RUNNING.value:
        return JobState.RUNNING
    claimed = kept_transition(
        tx,
        job_id,
        JobState.RUNNING,
        shape="claim",
        current=row["state"],
        where=_CLAIM_FENCE,
        params={},
        runner_id=runner_id,
        values=_claim_values(now, runner_id, lease_ttl),
    )
    return None if claimed is None else Claim(detached_job(claimed))


class JobLifecycle(JobQueries):
    """Writes that move a job through its states, each fenced so only its owner succeeds."""

    def add_job(self, new: NewJob) -> Job:
        """Write a submitted job in ``queued`` (or its ``state``) with its first audit row."""
        return self.create_job(**new.columns())

    def create_job(self, **fields: Any) -> Job:
        """Write a job row from its columns in ``queued`` (or the given ``state``) with its
        first audit row."""
        state = JobState(fields.pop("state", JobState.QUEUED))
        if self.direct:
            with self.direct_session() as tx:
                return insert_job(tx, utcnow(), state, fields)
        with self.session() as s:
            return insert_job(s, utcnow(), state, fields)

    def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        attempt: int | None = None,
        from_state: JobState | None = None,
        runner_id: str | None = None,
        reason: str | None = None,
        values: dict[str, Any] | None = None,
    ) -> Job | None:
        """Move a job to ``to`` if its current state allows it (and it is still at
        ``attempt`` / in ``from_state``, when given); None when the fence did not match."""
        where = [Job.attempt == attempt] if attempt is not None else []
        if from_state is not None:
            where.append(Job.state == from_state.value)
        with self.session() as s:
            return fenced_transition(
                s, job_id, to, where=where, runner_id=runner_id, reason=reason, values=values
            )

    def claim(self, job_id: str, runner_id: str, lease_ttl: float) -> Claim | Misrouted | None:
        """Fenced claim: ``queued`` -> ``running``; a ``running`` job whose lease expired is
        first closed as ``error/runner_lost`` (``close_attempt``) and taken over when the
        retry policy re-queues it. A job sent to runners by name is never claimed by a
        runner the name leaves out (``Misrouted``); the check is in the claim's first read."""
        if self.direct:
            with self.direct_session() as tx:
                got = _claim_queued(tx, job_id, runner_id, lease_ttl)
            if not isinstance(got, JobState):
                return got
        took_over = None
        with self.session() as s:
            row = s.execute(_CLAIMABLE, {"job_id": job_id}).first()
            now = utcnow()  # taken under the write lock, so the lease is not shortened by a wait
            if row is None or row.state not in (JobState.QUEUED.value, JobState.RUNNING.value):
                return None
            if row.runner is not None and not name_matches(row.runner, runner_id):
                return Misrouted(job_id, row.runner, JobState(row.state), row.capability)
            if row.state == JobState.RUNNING.value:
                closed = close_running_attempt(
                    s,
                    job_id,
                    row.attempt,
                    JobState.ERROR,
                    now=now,
                    where=[Job.lease_until < now],
                    runner_id=runner_id,
                    reason=lost_reason(row.runner_id),
                )
                if closed is None or closed[1].next is not Next.REQUEUE:
                    return None
                took_over = row.attempt
            claim_values = _claim_values(now, runner_id, lease_ttl)
            job: Job | None
            if took_over is None and returns_rows(s):
                claimed = kept_transition(
                    s,
                    job_id,
                    JobState.RUNNING,
                    shape="claim",
                    current=row.state,
                    where=_CLAIM_FENCE,
                    params={},
                    runner_id=runner_id,
                    values=claim_values,
                )
                job = None if claimed is None else detached_job(claimed)
            else:
                job = fenced_transition(
                    s,
                    job_id,
                    JobState.RUNNING,
                    where=_CLAIM_FENCE,
                    runner_id=runner_id,
                    values=claim_values,
                )
            return Claim(job, took_over) if job is not None else None

    def close_attempt(
        self,
        job_id: str,
        attempt: int,
        state: JobState,
        *,
        runner_id: str | None,
        reason: str | None = None,
        lease_expired: bool = False,
        values: dict[str, Any] | None = None,
        backoff: float = defaults.RETRY_BACKOFF,
        log: FinalChunk | None = None,
    ) -> tuple[Closed, AfterAttempt] | None:
        """Close a running attempt in ``state`` and apply the retry policy to it, in one
        transaction: back to ``queued``, ``cancelled``, or left as it is. None when the
        fence (that attempt, still running, and with ``lease_expired`` its lease past)
        did not match. ``log``: the attempt's last log chunk, stored in the same
        transaction (before the outcome, so the log is whole once the job is final)."""
        if self.direct and not lease_expired and state not in _FOLLOWED_UP:
            with self.direct_session() as tx:
                if log is not None:
                    tx.execute(_ADD_CHUNK, _chunk(job_id, attempt, log))
                return close_kept_attempt(
                    tx,
                    job_id,
                    attempt,
                    state,
                    now=utcnow(),
                    runner_id=runner_id,
                    reason=reason,
                    values=values,
                )
        with self.session() as s:
            if log is not None:
                s.execute(_ADD_CHUNK, _chunk(job_id, attempt, log))
            now = utcnow()
            where = [Job.lease_until < now] if lease_expired else []
            return close_running_attempt(
                s,
                job_id,
                attempt,
                state,
                now=now,
                where=where,
                runner_id=runner_id,
                reason=reason,
                values=values,
                backoff=backoff,
            )

    def heartbeat(self, job_id: str, attempt: int, lease_ttl: float) -> bool | None:
        """Extend the lease of the attempt we own. Returns cancel_requested, or None when
        the job is no longer ours (cancelled while queued, or taken over)."""
        now = utcnow()
        with self.session() as s:
            res = s.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.state == JobState.RUNNING.value,
                    Job.attempt == attempt,
                )
                .values(lease_until=now + timedelta(seconds=lease_ttl))
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    def finish(
        self,
        job_id: str,
        attempt: int,
        state: JobState,
        *,
        runner_id: str | None,
        exit_code: int | None = None,
        reason: str | None = None,
        evidence: Evidence | None = None,
        backoff: float = defaults.RETRY_BACKOFF,
    ) -> Job | None:
        """Close an attempt we own with its outcome (``close_attempt``); the whole job as
        the retry policy left it (read again: the runner's own close returns less)."""
        closed = self.close_attempt(
            job_id,
            attempt,
            state,
            runner_id=runner_id,
            reason=reason,
            values={"exit_code": exit_code, "evidence": evidence},
            backoff=backoff,
        )
        return None if closed is None else self.get_job(job_id)

    def request_cancel(self, job_id: str, by: str | None = None) -> Job:
        """Cancel a job: at once when it is not running, else flag it for its worker."""
        with self.session() as s:
            if s.get(Job, job_id) is None:
                raise NotFound(f"no job with id {job_id!r}")
            done = cancel_job(s, job_id, f"cancelled by {by or 'user'}")
            if done is not None:
                return done
        return self.get_job(job_id)
