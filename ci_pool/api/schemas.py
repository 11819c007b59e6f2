"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from ci_pool.core.submissions import MAX_INT, CheckoutCreate, JobCreate, StepCreate
from ci_pool.core.sync import SyncSource
from ci_pool.defaults import MAX_INPUT_VALUE_BYTES, MAX_INPUTS, RUNNER_GLOB_MAX_LENGTH
from ci_pool.service.job_views import ArtifactView, JobAck, JobView, PipelineAck
from ci_pool.service.views import QueueStatus

__all__ = [
    "MAX_INT",
    "CheckoutCreate",
    "JobAck",
    "JobCreate",
    "PipelineAck",
    "StepCreate",
]


class JobsPublic(BaseModel):
    data: list[JobView]
    count: int
    #: Pass as ``cursor`` for the next page; null on the last page.
    next_cursor: str | None = None


class ArtifactsPublic(BaseModel):
    data: list[ArtifactView]


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
