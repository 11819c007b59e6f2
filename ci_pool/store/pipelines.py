"""Pipelines and what their jobs pass on: creating a pipeline with all its jobs, ending and
reopening it, job outputs, and an operator's retry of the jobs that did not succeed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update

from ci_pool.core.specs import JobState, PipelineState
from ci_pool.core.workflow.dynamic_matrix import MatrixCell
from ci_pool.exceptions import NotFound
from ci_pool.store.engine import Database
from ci_pool.store.models import Job, NewJob, Pipeline, utcnow
from ci_pool.store.transitions import RETRYABLE_STATES, fenced_transition, insert_job

#: Columns a dynamic matrix's cell does not take from its template.
_NOT_COPIED = frozenset(
    {"id", "state", "attempt", "created_at", "updated_at", "queued_at", "finished_at"}
    | {"started_at", "reason", "exit_code", "evidence", "runner_id", "lease_until"}
)


def _cell_columns(cell: MatrixCell) -> dict[str, Any]:
    return {
        "key": cell.key,
        "name": cell.name,
        "matrix": dict(cell.matrix),
        "env": dict(cell.env),
        "steps": tuple(cell.steps),
        "if_expr": cell.if_expr,
        "outputs_spec": dict(cell.outputs),
        "checkout": cell.checkout,
        "environment": cell.environment,
    }


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

    def expand_matrix(self, template_id: str, cells: Sequence[MatrixCell]) -> bool:
        """Turn a dynamic matrix's template job into its cells (``blocked``), in one
        transaction: the template row becomes the first cell, the others are new rows, and
        the jobs that needed the template now need every cell. Fenced on the template
        still being ``blocked`` and unexpanded, so of two schedulers racing one expands;
        False for the other (and when there are no cells)."""
        if not cells:
            return False
        first, rest = cells[0], cells[1:]
        with self.session() as s:
            template = s.get(Job, template_id)
            if template is None or template.pipeline_id is None:
                return False
            old_key = template.key
            res = s.execute(
                update(Job)
                .where(
                    Job.id == template_id,
                    Job.state == JobState.BLOCKED.value,
                    Job.matrix_template.is_not(None),
                )
                .values(matrix_template=None, updated_at=utcnow(), **_cell_columns(first))
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return False
            s.refresh(template)
            copied = {
                c.key: getattr(template, c.key)
                for c in Job.__table__.columns
                if c.key not in _NOT_COPIED
            }
            now = utcnow()
            for cell in rest:
                insert_job(s, now, JobState.BLOCKED, {**copied, **_cell_columns(cell)})
            keys = [c.key for c in cells]
            dependents = s.scalars(
                select(Job).where(Job.pipeline_id == template.pipeline_id, Job.id != template_id)
            )
            for job in list(dependents):
                if old_key in (job.needs or []):
                    needs = [k for n in job.needs for k in (keys if n == old_key else [n])]
                    s.execute(
                        update(Job)
                        .where(Job.id == job.id)
                        .values(needs=needs)
                        .execution_options(synchronize_session=False)
                    )
        return True

    def running_pipelines(self) -> list[str]:
        """Ids of the pipelines that have not ended."""
        with self.session(write=False) as s:
            q = select(Pipeline.id).where(Pipeline.state == PipelineState.RUNNING.value)
            return list(s.scalars(q))
