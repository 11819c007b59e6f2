"""Reads over jobs and their audit rows: one job, pages of jobs, the pool's summary, and the
jobs the reaper looks for (expired leases, long queued)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select

from ci_pool.core.specs import FINAL_STATES, JobState
from ci_pool.exceptions import NotFound
from ci_pool.store.engine import Database, seconds_between
from ci_pool.store.models import Job, JobEvent


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
