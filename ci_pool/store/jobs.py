"""Reads over jobs and their audit rows: one job, pages of jobs, the pool's counts, and the
jobs the reaper looks for (expired leases, long queued)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import String, and_, func, or_, select, type_coerce

from ci_pool.core.specs import FINAL_STATES, JobState
from ci_pool.exceptions import NotFound
from ci_pool.store.engine import Database, seconds_between
from ci_pool.store.models import Job, JobEvent


@dataclass(frozen=True, slots=True)
class JobCounts:
    """The pool's jobs as ``status``, ``runners`` and the metrics count them."""

    #: (capability, state) -> jobs in that state now, for every state that has one.
    by_state: dict[tuple[str, str], int]
    #: capability -> when its oldest queued job was queued (UTC); absent when none waits.
    oldest_queued: dict[str, datetime]
    #: runner id -> ids of the jobs it runs now, the newest first.
    running: dict[str, list[str]]

    def of(self, capability: str, state: JobState) -> int:
        return self.by_state.get((capability, state.value), 0)

    def capabilities(self) -> set[str]:
        """The capabilities that have a job in any state."""
        return {cap for cap, _state in self.by_state}

    def states(self) -> dict[str, int]:
        """Jobs per state over every capability."""
        total: dict[str, int] = {}
        for (_cap, state), n in self.by_state.items():
            total[state] = total.get(state, 0) + n
        return total


@dataclass(slots=True)
class FinishedJobs:
    """The jobs of one capability that ended in a window."""

    #: final state -> jobs that ended in it.
    states: Counter[str] = field(default_factory=Counter)
    #: Their run times (finished - started), in seconds.
    durations: list[float] = field(default_factory=list)


class JobQueries(Database):
    """Read-only queries over the jobs and events tables."""

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

    def job_counts(self) -> JobCounts:
        """What ``status``, ``runners`` and the metrics count: jobs per capability and
        state, each capability's oldest queued job, and the jobs each runner runs. Three
        grouped or indexed queries whose answers do not grow with the jobs table (running
        jobs are bounded by the pool's slots)."""
        by_state: dict[tuple[str, str], int] = {}
        running: dict[str, list[str]] = {}
        with self.session(write=False) as s:
            for cap, state, count in s.execute(
                select(Job.capability, Job.state, func.count()).group_by(Job.state, Job.capability)
            ):
                by_state[cap, str(state)] = int(count)
            oldest = {
                cap: first.replace(tzinfo=UTC)
                for cap, first in s.execute(
                    select(Job.capability, func.min(Job.queued_at))
                    .where(Job.state == JobState.QUEUED.value)
                    .group_by(Job.capability)
                )
                if first is not None
            }
            for runner_id, job_id in s.execute(
                select(Job.runner_id, Job.id)
                .where(Job.state == JobState.RUNNING.value, Job.runner_id.is_not(None))
                .order_by(Job.created_at.desc(), Job.id.desc())
            ):
                running.setdefault(runner_id or "", []).append(job_id)
        return JobCounts(by_state, oldest, running)

    def finished_since(self, since: datetime) -> dict[str, FinishedJobs]:
        """Per capability, the jobs that ended since ``since``: how many per final state,
        and their run times (s)."""
        out: dict[str, FinishedJobs] = {}
        took = seconds_between(self.engine.dialect.name, Job.started_at, Job.finished_at)
        # Only the finished_at range is in SQL: ix_jobs_finished holds every column read, so
        # the window is one index range with no table lookups (a state IN list would lead
        # SQLite to the state index and a lookup per row). States are read as text.
        final = {s.value for s in FINAL_STATES}
        with self.session(write=False) as s:
            for cap, state, seconds in s.execute(
                select(Job.capability, type_coerce(Job.state, String()), took).where(
                    Job.finished_at >= since
                )
            ):
                if state not in final:
                    continue
                entry = out.setdefault(cap, FinishedJobs())
                entry.states[state] += 1
                if seconds is not None:
                    entry.durations.append(float(seconds))
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

    def count_claims(self, runner_id: str, since: datetime | None = None) -> int:
        """Jobs this runner has claimed so far (each attempt counts), or since ``since``
        (a runner name outlives its processes: each process counts its own)."""
        where = [
            JobEvent.runner_id == runner_id,
            JobEvent.to_state == JobState.RUNNING.value,
            JobEvent.from_state == JobState.QUEUED.value,
        ]
        if since is not None:
            where.append(JobEvent.at >= since)
        with self.session(write=False) as s:
            return int(s.scalar(select(func.count()).where(*where)) or 0)

    def events(self, job_id: str) -> list[JobEvent]:
        with self.session(write=False) as s:
            return list(
                s.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
            )

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
