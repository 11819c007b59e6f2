"""The read model of jobs and pipelines: ``JobView`` and ``PipelineView``, built here once
and returned by the API and, as the same JSON, by both CLI clients (``ci-pool show --json``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ci_pool import defaults
from ci_pool.core.commands import Annotation
from ci_pool.core.concurrency import ConcurrencyGroup
from ci_pool.core.evidence import Evidence
from ci_pool.core.specs import EnvironmentSpec, JobState, PipelineState

if TYPE_CHECKING:
    from ci_pool.service.inspection import Inspection
    from ci_pool.store import Job
    from ci_pool.store.models import Pipeline as PipelineRow


class ArtifactView(BaseModel):
    path: str
    size: int
    sha256: str
    attempt: int


class ExpiredArtifactView(BaseModel):
    """An artifact removed after its retention: named (upload-artifact) or not (the
    job's ``artifacts:`` paths); it can no longer be downloaded."""

    name: str | None
    attempt: int
    expired_at: str | None


class EventView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    attempt: int
    from_state: str | None = Field(default=None, alias="from")
    to: str
    at: str | None
    runner_id: str | None
    reason: str | None


class AnnotationView(Annotation):
    """An error, warning or notice a step of the job's latest attempt printed."""


class StepSummaryView(BaseModel):
    """The markdown a step of the job's latest attempt wrote to $GITHUB_STEP_SUMMARY."""

    step: int
    name: str
    markdown: str = Field(description="GitHub-flavoured markdown, as the step wrote it.")


class JobView(BaseModel):
    """The public view of a job (the same fields as ``ci-pool show --json``)."""

    id: str
    name: str
    pipeline_id: str | None = None
    state: JobState
    capability: str
    queue: str
    repo: str
    ref: str
    commit_sha: str | None
    labels: list[str]
    #: The glob over runner names the job is sent to (None: any runner of its capability).
    runner: str | None = None
    timeout_s: int
    attempt: int
    max_attempts: int
    runner_id: str | None
    exit_code: int | None
    reason: str | None
    created_at: str | None
    queued_at: str | None
    started_at: str | None
    finished_at: str | None
    #: While running: until when its worker's lease holds (it heartbeats to extend it).
    lease_until: str | None = None
    evidence: Evidence | None
    #: Its job-level concurrency group (name, cancel_in_progress), if any.
    concurrency: ConcurrencyGroup | None = None
    #: ``permissions:`` (scope -> level; ``*`` for read-all/write-all) and ``environment:``
    #: of a workflow job, as recorded.
    permissions: dict[str, str] | None = None
    environment: EnvironmentSpec | None = None
    waiting: str | None = None
    artifacts: list[ArtifactView] | None = None
    expired_artifacts: list[ExpiredArtifactView] | None = None
    events: list[EventView] | None = None
    annotations: list[AnnotationView] | None = None
    summaries: list[StepSummaryView] | None = None


class JobAck(BaseModel):
    """What an action on a job answers a token that may not read the job: id and state."""

    id: str
    state: str


class PipelineJobView(BaseModel):
    id: str
    key: str | None
    state: JobState
    capability: str
    needs: list[str]
    runner_id: str | None
    exit_code: int | None
    reason: str | None
    attempt: int
    outputs: dict[str, Any]
    started_at: str | None
    finished_at: str | None
    concurrency: ConcurrencyGroup | None = None


class PipelineView(BaseModel):
    id: str
    name: str
    #: ``run-name`` as rendered at submit (the display name); null without one.
    run_name: str | None = None
    permissions: dict[str, str] | None = None
    file: str
    state: PipelineState
    repo: str
    ref: str
    commit_sha: str | None
    created_at: str
    finished_at: str | None
    #: Its workflow-level concurrency group (name, cancel_in_progress), if any.
    concurrency: ConcurrencyGroup | None = None
    jobs: list[PipelineJobView]


class PipelineAck(BaseModel):
    """What an action on a pipeline answers a token that may not read it: id and state."""

    id: str
    state: str


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def job_view(
    job: Job, pool: Inspection | None = None, visible: Callable[[Job], bool] | None = None
) -> JobView:
    """The public view of a job; with ``pool``, also why it waits (naming no job that
    ``visible`` refuses), artifacts, history, annotations and step summaries."""
    view = JobView(
        id=job.id,
        name=job.name,
        pipeline_id=job.pipeline_id,
        state=job.state,
        capability=job.capability,
        queue=job.queue,
        repo=job.repo,
        ref=job.ref,
        commit_sha=job.commit_sha,
        labels=job.labels,
        runner=job.runner,
        timeout_s=job.timeout_s,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        runner_id=job.runner_id,
        exit_code=job.exit_code,
        reason=job.reason,
        created_at=_ts(job.created_at),
        queued_at=_ts(job.queued_at),
        started_at=_ts(job.started_at),
        finished_at=_ts(job.finished_at),
        lease_until=_ts(job.lease_until),
        evidence=job.evidence,
        concurrency=job.concurrency,
        permissions=job.permissions,
        environment=job.environment,
    )
    if pool is None:
        return view
    store = pool.store
    view.waiting = pool.why_waiting(job, visible)
    view.artifacts = [
        ArtifactView(path=a.path, size=a.size, sha256=a.sha256, attempt=a.attempt)
        for a in store.artifacts(job.id)
    ]
    view.expired_artifacts = [
        ExpiredArtifactView(name=e.name, attempt=e.attempt, expired_at=_ts(e.expired_at))
        for e in store.expired_artifacts(job.id)
    ]
    view.events = [
        EventView(
            attempt=e.attempt,
            from_state=e.from_state,
            to=e.to_state,
            at=_ts(e.at),
            runner_id=e.runner_id,
            reason=e.reason,
        )
        for e in store.events(job.id)
    ]
    # What the latest attempt's steps reported: annotations, and step summaries as the
    # markdown they wrote.
    annotations = store.annotations(job.id, job.attempt)
    view.annotations = [AnnotationView.model_validate(a.model_dump()) for a in annotations]
    view.summaries = [
        StepSummaryView(step=s.step, name=s.name, markdown=s.markdown)
        for s in store.summaries(job.id, job.attempt)
    ]
    return view


def pipeline_view(row: PipelineRow, jobs: list[Job]) -> PipelineView:
    """The public view of a pipeline and each of its jobs."""
    return PipelineView(
        id=row.id,
        name=row.name,
        run_name=row.run_name,
        permissions=row.permissions,
        file=row.file,
        state=row.state,
        repo=row.repo,
        ref=row.ref,
        commit_sha=row.commit_sha,
        created_at=row.created_at.isoformat(),
        finished_at=_ts(row.finished_at),
        concurrency=row.concurrency,
        jobs=[
            PipelineJobView(
                id=j.id,
                key=j.key,
                state=j.state,
                capability=j.capability,
                needs=j.needs,
                runner_id=j.runner_id,
                exit_code=j.exit_code,
                reason=j.reason,
                attempt=j.attempt,
                outputs=j.outputs,
                started_at=_ts(j.started_at),
                finished_at=_ts(j.finished_at),
                concurrency=j.concurrency,
            )
            for j in jobs
        ],
    )


def as_json(view: BaseModel) -> dict[str, Any]:
    """A view as the API sends it (``from`` for an event's earlier state, nulls kept)."""
    return view.model_dump(mode="json", by_alias=True)


def brief_json(view: JobView | JobAck) -> dict[str, Any]:
    """A job as a list or an action prints it: its view as JSON without the details
    only ``show`` carries."""
    return {k: v for k, v in as_json(view).items() if k not in defaults.JOB_DETAIL_KEYS}
