"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ci_pool.core.commands import Annotation
from ci_pool.core.concurrency import ConcurrencyGroup
from ci_pool.core.evidence import Evidence
from ci_pool.core.specs import CheckoutSpec, EnvironmentSpec, JobSpec, StepSpec
from ci_pool.core.sync import SyncSource
from ci_pool.defaults import MAX_INPUT_VALUE_BYTES, MAX_INPUTS, RUNNER_GLOB_MAX_LENGTH
from ci_pool.service.views import QueueStatus

#: Bound of every integer a client sends (the store's columns are 32-bit).
MAX_INT = 2**31 - 1


class StepCreate(StepSpec):
    """A step of a submitted job: a ``StepSpec``, its integers bounded for the store."""

    timeout: int | None = Field(default=None, ge=1, le=MAX_INT)


class CheckoutCreate(CheckoutSpec):
    """The checkout of a submitted job: a ``CheckoutSpec``, bounded for the store."""

    fetch_depth: int = Field(default=1, ge=0, le=MAX_INT)


class JobCreate(JobSpec):
    """A job to submit: a ``JobSpec`` (its repo URL checked against the pool's settings by
    ``parse_job_spec``, the CLI's rules), its integers bounded for the store."""

    steps: tuple[StepCreate, ...] = Field(min_length=1)
    timeout: int | None = Field(default=None, ge=1, le=MAX_INT)
    checkout: CheckoutCreate = Field(default_factory=CheckoutCreate)

    @model_validator(mode="before")
    @classmethod
    def _null_checkout(cls, data: Any) -> Any:
        """``"checkout": null`` (accepted before checkout had defaults) means the defaults."""
        if isinstance(data, dict) and "checkout" in data and data["checkout"] is None:
            return {k: v for k, v in data.items() if k != "checkout"}
        return data


class ArtifactPublic(BaseModel):
    path: str
    size: int
    sha256: str
    attempt: int


class ExpiredArtifactPublic(BaseModel):
    """An artifact removed after its retention: named (upload-artifact) or not (the
    job's ``artifacts:`` paths); it can no longer be downloaded."""

    name: str | None
    attempt: int
    expired_at: str | None


class EventPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    attempt: int
    from_state: str | None = Field(default=None, alias="from")
    to: str
    at: str | None
    runner_id: str | None
    reason: str | None


class AnnotationPublic(Annotation):
    """An error, warning or notice a step of the job's latest attempt printed."""


class StepSummaryPublic(BaseModel):
    """The markdown a step of the job's latest attempt wrote to $GITHUB_STEP_SUMMARY."""

    step: int
    name: str
    markdown: str = Field(description="GitHub-flavoured markdown, as the step wrote it.")


class JobPublic(BaseModel):
    """The public view of a job (the same fields as ``ci-pool show --json``)."""

    id: str
    name: str
    pipeline_id: str | None = None
    state: str
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
    artifacts: list[ArtifactPublic] | None = None
    expired_artifacts: list[ExpiredArtifactPublic] | None = None
    events: list[EventPublic] | None = None
    annotations: list[AnnotationPublic] | None = None
    summaries: list[StepSummaryPublic] | None = None


class JobAck(BaseModel):
    """What an action on a job answers a token that may not read the job: id and state."""

    id: str
    state: str


class PipelineAck(BaseModel):
    """What an action on a pipeline answers a token that may not read it: id and state."""

    id: str
    state: str


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int
    #: Pass as ``cursor`` for the next page; null on the last page.
    next_cursor: str | None = None


class ArtifactsPublic(BaseModel):
    data: list[ArtifactPublic]


class PipelineCreate(BaseModel):
    """A workflow to run: its YAML text (or the same structure as JSON), from a repo/ref."""

    model_config = ConfigDict(extra="forbid")

    workflow: str | dict[str, Any]
    file: str = Field(default="workflow.yml", max_length=500)
    repo: str
    ref: str = "HEAD"
    event: str = Field(default="push", pattern=r"^[a-z_]{1,64}$")
    #: A ``workflow_dispatch`` run's inputs, checked against the workflow's declared ones.
    inputs: dict[str, Annotated[str, Field(max_length=MAX_INPUT_VALUE_BYTES)]] = Field(
        default_factory=dict, max_length=MAX_INPUTS
    )
    #: Local changes for every job's checkout, as ``POST /v1/sync`` answered.
    sync: SyncSource | None = None
    #: A glob over runner names: every job runs only on live runners it matches.
    runner: str | None = Field(default=None, max_length=RUNNER_GLOB_MAX_LENGTH)


class PipelineJobPublic(BaseModel):
    id: str
    key: str | None
    state: str
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


class PipelinePublic(BaseModel):
    id: str
    name: str
    #: ``run-name`` as rendered at submit (the display name); null without one.
    run_name: str | None = None
    permissions: dict[str, str] | None = None
    file: str
    state: str
    repo: str
    ref: str
    commit_sha: str | None
    created_at: str
    finished_at: str | None
    #: Its workflow-level concurrency group (name, cancel_in_progress), if any.
    concurrency: ConcurrencyGroup | None = None
    jobs: list[PipelineJobPublic]


class QueuePublic(QueueStatus):
    """One capability's queue (``ci-pool status``)."""


class QueuesPublic(BaseModel):
    data: list[QueuePublic]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error response: ``{"error": {"code", "message", "field"}}``."""

    error: ErrorDetail


class Health(BaseModel):
    status: str
    checks: dict[str, str]
