"""The store: the source of truth for jobs. Every state change is one fenced UPDATE plus
one audit row, so two workers can never both own a job."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    create_engine,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from ci_pool import defaults
from ci_pool.core.retry import AfterAttempt, Next, after_attempt, lost_reason
from ci_pool.core.specs import (
    FINAL_STATES,
    RETRY_TRANSITIONS,
    Evidence,
    JobState,
    PipelineState,
    sources_of,
)
from ci_pool.exceptions import NotFound
from ci_pool.store.files import private_sqlite
from ci_pool.store.models import Artifact, Job, JobEvent, LogChunk, NewJob, Pipeline, utcnow

#: States a retry puts back to run: the sources of the operator's retry edges (rejected jobs
#: stay rejected: a retry is not a way around policy).
RETRYABLE_STATES = tuple(sorted(s.value for s in RETRY_TRANSITIONS))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, *, writer: bool = True) -> Engine:
    """An engine for the store URL; SQLite gets WAL and a generous busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; issue it ourselves. Writers take
        # the write lock up front so fenced updates never deadlock on a lock upgrade; readers
        # use a plain BEGIN and, under WAL, never wait for writers.
        begin = "BEGIN IMMEDIATE" if writer else "BEGIN"
        event.listen(engine, "connect", lambda c, _r: setattr(c, "isolation_level", None))
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(begin))
        return engine
    return create_engine(url, pool_pre_ping=True)


def seconds_between(dialect: str, start: Any, end: Any) -> ColumnElement[Any]:
    """``end - start`` in seconds, computed by the database (no rows parsed in Python)."""
    if dialect == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


@dataclass(frozen=True, slots=True)
class Claim:
    """What a worker gets when it claims a job."""

    job: Job
    #: The attempt that was found abandoned (lease expired) and taken over, if any.
    took_over: int | None = None


class Store:
    """Repository functions over the jobs, events and log tables."""

    def __init__(self, url: str):
        self.url = url
        private_sqlite(url)
        self.engine = make_engine(url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        reader = make_engine(url, writer=False) if url.startswith("sqlite") else self.engine
        self._read_session = sessionmaker(reader, expire_on_commit=False)

    def init_schema(self) -> None:
        """Create or upgrade the tables through the migrations (idempotent, and safe when
        several processes start at once)."""
        from ci_pool.store.migrate import upgrade

        upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()
        self._read_session.kw["bind"].dispose()

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """A transaction; ``write=False`` for reads that must not queue behind writers."""
        maker = self._session if write else self._read_session
        with maker.begin() as session:
            yield session

    # -- jobs -------------------------------------------------------------------------

    def add_job(self, new: NewJob) -> Job:
        """Write a submitted job in ``queued`` (or its ``state``) with its first audit row."""
        return self.create_job(**new.columns())

    def create_job(self, **fields: Any) -> Job:
        """Write a job row from its columns in ``queued`` (or the given ``state``) with its
        first audit row."""
        with self.session() as s:
            return _add_job(s, utcnow(), JobState(fields.pop("state", JobState.QUEUED)), fields)

    def get_job(self, job_id: str) -> Job:
        with self.session(write=False) as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"no job with id {job_id!r}")
            return job

    def list_jobs(
        self,
        *,
        states: Iterable[JobState] = (),
        capability: str | None = None,
        repo: str | None = None,
        limit: int = 100,
        after: tuple[datetime, str] | None = None,
        capabilities: Iterable[str] | None = None,
    ) -> list[Job]:
        """Newest first (ties by id); ``after`` = (created_at, id) of the last row of the
        previous page, so pages stay stable while new jobs arrive. ``capabilities``: only
        jobs of these (None: any)."""
        q = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        if states:
            q = q.where(Job.state.in_([s.value for s in states]))
        if capability:
            q = q.where(Job.capability == capability)
        if capabilities is not None:
            q = q.where(Job.capability.in_(list(capabilities)))
        if repo:
            q = q.where(Job.repo == repo)
        if after is not None:
            at, job_id = after
            q = q.where(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < job_id)))
        with self.session(write=False) as s:
            return list(s.scalars(q))

    def pool_summary(self, since: datetime) -> dict[str, dict[str, Any]]:
        """Per capability: jobs by state, the oldest queued time, and the durations (s) of
        jobs finished since ``since``; three indexed queries, whatever the table size."""
        out: dict[str, dict[str, Any]] = {}

        def entry(cap: str) -> dict[str, Any]:
            return out.setdefault(cap, {"states": {}, "oldest_queued": None, "durations": []})

        with self.session(write=False) as s:
            active = [JobState.QUEUED.value, JobState.RUNNING.value, JobState.BLOCKED.value]
            for cap, state, count in s.execute(
                select(Job.capability, Job.state, func.count())
                .where(Job.state.in_(active))
                .group_by(Job.capability, Job.state)
            ):
                entry(cap)["states"][state] = count
            for cap, oldest in s.execute(
                select(Job.capability, func.min(Job.queued_at))
                .where(Job.state == JobState.QUEUED.value)
                .group_by(Job.capability)
            ):
                entry(cap)["oldest_queued"] = oldest.replace(tzinfo=UTC) if oldest else None
            took = seconds_between(self.engine.dialect.name, Job.started_at, Job.finished_at)
            for cap, state, seconds in s.execute(
                select(Job.capability, Job.state, took).where(
                    Job.finished_at >= since, Job.state.in_([s.value for s in FINAL_STATES])
                )
            ):
                e = entry(cap)
                e["states"][f"finished_{state}"] = e["states"].get(f"finished_{state}", 0) + 1
                if seconds is not None:
                    e["durations"].append(float(seconds))
        return out

    def count_running(self, runner_id: str) -> int:
        """Jobs this runner holds right now."""
        with self.session(write=False) as s:
            return int(
                s.scalar(
                    select(func.count()).where(
                        Job.runner_id == runner_id, Job.state == JobState.RUNNING.value
                    )
                )
                or 0
            )

    def count_claims(self, runner_id: str) -> int:
        """Jobs this runner has claimed so far (each attempt counts)."""
        with self.session(write=False) as s:
            return int(
                s.scalar(
                    select(func.count()).where(
                        JobEvent.runner_id == runner_id,
                        JobEvent.to_state == JobState.RUNNING.value,
                        JobEvent.from_state == JobState.QUEUED.value,
                    )
                )
                or 0
            )

    def events(self, job_id: str) -> list[JobEvent]:
        with self.session(write=False) as s:
            return list(
                s.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
            )

    def _transition(
        self,
        s: Session,
        job_id: str,
        to: JobState,
        *,
        where: Iterable[ColumnElement[bool]] = (),
        runner_id: str | None = None,
        reason: str | None = None,
        values: dict[str, Any] | None = None,
        operator: bool = False,
    ) -> Job | None:
        """One fenced UPDATE from any state allowed to reach ``to`` (by the transition
        table, or by the operator's retry table with ``operator``), plus its audit row."""
        now = utcnow()
        before = s.execute(select(Job.state, Job.attempt).where(Job.id == job_id)).first()
        if before is None or JobState(before.state) not in sources_of(to, operator=operator):
            return None
        vals: dict[str, Any] = {"state": to.value, "updated_at": now, **(values or {})}
        if reason is not None:
            vals["reason"] = reason
        res = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == before.state, *where)
            .values(**vals)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return None
        job = s.scalars(
            select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
        ).one()
        s.add(
            JobEvent(
                job_id=job_id,
                attempt=job.attempt,
                from_state=before.state,
                to_state=to.value,
                at=now,
                runner_id=runner_id,
                reason=reason,
            )
        )
        return job

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
            return self._transition(
                s, job_id, to, where=where, runner_id=runner_id, reason=reason, values=values
            )

    def claim(self, job_id: str, runner_id: str, lease_ttl: float) -> Claim | None:
        """Fenced claim: ``queued`` -> ``running``; a ``running`` job whose lease expired is
        first closed as ``error/runner_lost`` (``close_attempt``) and taken over when the
        retry policy re-queues it."""
        took_over = None
        with self.session() as s:
            row = s.execute(
                select(Job.state, Job.attempt, Job.runner_id).where(Job.id == job_id)
            ).first()
            now = utcnow()  # taken under the write lock, so the lease is not shortened by a wait
            if row is None or row.state not in (JobState.QUEUED.value, JobState.RUNNING.value):
                return None
            if row.state == JobState.RUNNING.value:
                closed = self._close_attempt(
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
            job = self._transition(
                s,
                job_id,
                JobState.RUNNING,
                where=[Job.state == JobState.QUEUED.value, Job.cancel_requested.is_(False)],
                runner_id=runner_id,
                values={
                    "attempt": Job.attempt + 1,
                    "runner_id": runner_id,
                    "lease_until": now + timedelta(seconds=lease_ttl),
                    "started_at": now,
                    "finished_at": None,
                    "exit_code": None,
                    "reason": None,
                },
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
    ) -> tuple[Job, AfterAttempt] | None:
        """Close a running attempt in ``state`` and apply the retry policy to it, in one
        transaction: back to ``queued``, ``cancelled``, or left as it is. None when the
        fence (that attempt, still running, and with ``lease_expired`` its lease past)
        did not match."""
        with self.session() as s:
            now = utcnow()
            where = [Job.lease_until < now] if lease_expired else []
            return self._close_attempt(
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

    def _close_attempt(
        self,
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
    ) -> tuple[Job, AfterAttempt] | None:
        job = self._transition(
            s,
            job_id,
            state,
            where=[Job.attempt == attempt, Job.state == JobState.RUNNING.value, *where],
            runner_id=runner_id,
            reason=reason,
            values={"finished_at": now, "lease_until": None, **(values or {})},
        )
        if job is None:
            return None
        decision = after_attempt(
            state, job.attempt, job.max_attempts, job.cancel_requested, backoff=backoff
        )
        follow = None
        if decision.next is Next.REQUEUE:
            follow = self._transition(
                s,
                job_id,
                JobState.QUEUED,
                where=[Job.attempt == attempt],
                runner_id=runner_id,
                reason=decision.reason,
                values={"queued_at": now},
            )
        elif decision.next is Next.CANCEL:
            follow = self._transition(
                s, job_id, JobState.CANCELLED, runner_id=runner_id, reason=decision.reason
            )
        return follow or job, decision

    def expired_leases(self, now: datetime) -> list[Job]:
        """Running jobs whose lease ended before ``now``: their runner stopped heartbeating."""
        with self.session(write=False) as s:
            q = select(Job).where(Job.state == JobState.RUNNING.value, Job.lease_until < now)
            return list(s.scalars(q))

    def queued_before(self, cutoff: datetime) -> list[Job]:
        """Jobs queued since before ``cutoff`` and still waiting for a runner."""
        with self.session(write=False) as s:
            q = select(Job).where(Job.state == JobState.QUEUED.value, Job.queued_at < cutoff)
            return list(s.scalars(q))

    def running_pipelines(self) -> list[str]:
        """Ids of the pipelines that have not ended."""
        with self.session(write=False) as s:
            q = select(Pipeline.id).where(Pipeline.state == PipelineState.RUNNING.value)
            return list(s.scalars(q))

    def ping(self) -> None:
        """Raise when the store does not answer a trivial query."""
        with self.session(write=False) as s:
            s.execute(text("SELECT 1"))

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
        """Close an attempt we own with its outcome (``close_attempt``); the job as the
        retry policy left it."""
        closed = self.close_attempt(
            job_id,
            attempt,
            state,
            runner_id=runner_id,
            reason=reason,
            values={"exit_code": exit_code, "evidence": evidence},
            backoff=backoff,
        )
        return None if closed is None else closed[0]

    def request_cancel(self, job_id: str, by: str | None = None) -> Job:
        """Cancel a job: at once when it is not running, else flag it for its worker."""
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"no job with id {job_id!r}")
            if JobState(job.state) in (JobState.QUEUED, JobState.BLOCKED, JobState.ERROR):
                done = self._transition(
                    s,
                    job_id,
                    JobState.CANCELLED,
                    reason=f"cancelled by {by or 'user'}",
                    values={"cancel_requested": True, "finished_at": utcnow()},
                )
                if done is not None:
                    return done
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.RUNNING.value)
                .values(cancel_requested=True)
                .execution_options(synchronize_session=False)
            )
        return self.get_job(job_id)

    # -- logs -------------------------------------------------------------------------

    def append_log(self, job_id: str, attempt: int, seq: int, data: str) -> None:
        with self.session() as s:
            s.add(LogChunk(job_id=job_id, attempt=attempt, seq=seq, data=data))

    def read_log(self, job_id: str, attempt: int | None = None) -> str:
        """The stored log of one attempt (default: the latest one that wrote any)."""
        with self.session(write=False) as s:
            if attempt is None:
                attempt = s.scalar(
                    select(func.max(LogChunk.attempt)).where(LogChunk.job_id == job_id)
                )
                if attempt is None:
                    return ""
            rows = s.scalars(
                select(LogChunk.data)
                .where(and_(LogChunk.job_id == job_id, LogChunk.attempt == attempt))
                .order_by(LogChunk.seq)
            )
            return "".join(rows)

    # -- artifacts --------------------------------------------------------------------

    def add_artifacts(self, job_id: str, attempt: int, files: Iterable[Any]) -> None:
        """Index collected files (objects with path, size and sha256)."""
        with self.session() as s:
            for f in files:
                s.add(
                    Artifact(
                        job_id=job_id, attempt=attempt, path=f.path, size=f.size, sha256=f.sha256
                    )
                )

    def artifacts(self, job_id: str, attempt: int | None = None) -> list[Artifact]:
        """The artifact index of one attempt (default: the latest that has any)."""
        with self.session(write=False) as s:
            if attempt is None:
                attempt = s.scalar(
                    select(func.max(Artifact.attempt)).where(Artifact.job_id == job_id)
                )
            q = select(Artifact).where(Artifact.job_id == job_id, Artifact.attempt == attempt)
            return list(s.scalars(q.order_by(Artifact.path)))

    # -- pipelines --------------------------------------------------------------------

    def create_pipeline(self, pipeline: dict[str, Any], jobs: Sequence[NewJob]) -> Pipeline:
        """A pipeline and all its jobs (``blocked``), in one transaction: all or nothing.

        A pipeline refused by policy is written ``rejected`` whole: each job carries its
        ``state`` and ``reason``."""
        now = utcnow()
        pipeline = dict(pipeline)
        state = pipeline.pop("state", "running")
        row = Pipeline(
            id=uuid.uuid4().hex[:16],
            state=state,
            created_at=now,
            finished_at=None if state == "running" else now,
            **pipeline,
        )
        with self.session() as s:
            s.add(row)
            s.flush()
            for new in jobs:
                fields = {**new.columns(), "pipeline_id": row.id}
                _add_job(s, now, JobState(fields.pop("state", JobState.BLOCKED)), fields)
        return row

    def get_pipeline(self, pipeline_id: str) -> Pipeline:
        with self.session(write=False) as s:
            row = s.get(Pipeline, pipeline_id)
            if row is None:
                raise NotFound(f"no pipeline with id {pipeline_id!r}")
            return row

    def pipeline_jobs(self, pipeline_id: str) -> list[Job]:
        with self.session(write=False) as s:
            q = select(Job).where(Job.pipeline_id == pipeline_id).order_by(Job.created_at, Job.key)
            return list(s.scalars(q))

    def finish_pipeline(self, pipeline_id: str, state: str) -> bool:
        """Fenced: only a running pipeline ends, once."""
        with self.session() as s:
            res = s.execute(
                update(Pipeline)
                .where(Pipeline.id == pipeline_id, Pipeline.state == "running")
                .values(state=state, finished_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return res.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def reopen_pipeline(self, pipeline_id: str) -> None:
        with self.session() as s:
            s.execute(
                update(Pipeline)
                .where(Pipeline.id == pipeline_id)
                .values(state="running", finished_at=None)
                .execution_options(synchronize_session=False)
            )

    def set_outputs(self, job_id: str, attempt: int, outputs: dict[str, Any]) -> None:
        with self.session() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.attempt == attempt)
                .values(outputs=outputs)
                .execution_options(synchronize_session=False)
            )

    def reset_for_retry(
        self, pipeline_id: str | None, budget: int, *, job_id: str | None = None
    ) -> list[Job]:
        """Put every job of the pipeline that did not succeed back to ``blocked`` through
        the operator's retry edges (one audit row each); its next run is a new attempt with
        ``budget`` more attempts for infra errors, and earlier attempts keep their logs.
        With ``job_id`` instead: that one job, outside any pipeline, straight back to
        ``queued``."""
        again = []
        where = Job.id == job_id if job_id else Job.pipeline_id == pipeline_id
        target = JobState.QUEUED if job_id else JobState.BLOCKED
        with self.session() as s:
            now = utcnow()
            rows = s.scalars(select(Job).where(where, Job.state.in_(RETRYABLE_STATES)))
            for job in list(rows):
                done = self._transition(
                    s,
                    job.id,
                    target,
                    where=[Job.state == job.state],
                    reason="retry requested",
                    operator=True,
                    values={
                        "queued_at": now if target is JobState.QUEUED else None,
                        "cancel_requested": False,
                        "exit_code": None,
                        "finished_at": None,
                        "outputs": {},
                        "max_attempts": job.attempt + budget,
                    },
                )
                if done is not None:
                    again.append(done)
        return again


def _add_job(s: Session, now: datetime, state: JobState, fields: dict[str, Any]) -> Job:
    """A new job row in ``state`` plus its first audit row, in the caller's transaction."""
    job = Job(
        id=fields.pop("id", None) or uuid.uuid4().hex[:16],
        state=state.value,
        attempt=0,
        created_at=now,
        updated_at=now,
        queued_at=now if state is JobState.QUEUED else None,
        finished_at=now if state in FINAL_STATES else None,
        **fields,
    )
    s.add(job)
    s.flush()
    s.add(
        JobEvent(
            job_id=job.id,
            attempt=0,
            from_state=None,
            to_state=state.value,
            at=now,
            reason=job.reason,
        )
    )
    return job
