"""Pipelines and what their jobs pass on: creating a pipeline with all its jobs, ending and
reopening it, job outputs, and an operator's retry of the jobs that did not succeed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update

from ci_pool.core.specs import JobState, PipelineState
from ci_pool.exceptions import NotFound
from ci_pool.store.engine import Database
from ci_pool.store.models import Job, NewJob, Pipeline, utcnow
from ci_pool.store.transitions import RETRYABLE_STATES, fenced_transition, insert_job


class PipelineQueries(Database):
    """Queries over the pipelines table and the jobs a pipeline holds."""

    def create_pipeline(self, pipeline: dict[str, Any], jobs: Sequence[NewJob]) -> Pipeline:
        """A pipeline and all its jobs (``blocked``), in one transaction: all or nothing.
        Its id is ``pipeline["id"]`` when given (``new_pipeline_id``), else a new one.

        A pipeline refused by policy is written ``rejected`` whole: each job carries its
        ``state`` and ``reason``."""
        now = utcnow()
        pipeline = dict(pipeline)
        state = pipeline.pop("state", "running")
        row = Pipeline(
            id=pipeline.pop("id", None) or self.new_pipeline_id(),
            state=state,
            created_at=now,
            finished_at=None if state == "running" else now,
            **pipeline,
        )
        with self.session() as s:
            if row.context is not None:
                # github.run_number: this run's place among the runs of the same file.
                earlier = s.scalar(
                    select(func.count())
                    .select_from(Pipeline)
                    .where(Pipeline.repo == row.repo, Pipeline.file == row.file)
                )
                row.context = row.context.model_copy(update={"run_number": (earlier or 0) + 1})
            s.add(row)
            s.flush()
            for new in jobs:
                fields = {**new.columns(), "pipeline_id": row.id}
                insert_job(s, now, JobState(fields.pop("state", JobState.BLOCKED)), fields)
        return row

    @staticmethod
    def new_pipeline_id() -> str:
        """An id for a pipeline about to be created, when its values need it first."""
        return uuid.uuid4().hex[:16]

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
                done = fenced_transition(
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

    def running_pipelines(self) -> list[str]:
        """Ids of the pipelines that have not ended."""
        with self.session(write=False) as s:
            q = select(Pipeline.id).where(Pipeline.state == PipelineState.RUNNING.value)
            return list(s.scalars(q))
