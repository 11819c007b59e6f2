"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ci_pool.core.specs import CheckoutSpec, JobSpec, StepSpec
from ci_pool.core.sync import SyncSource
from ci_pool.defaults import MAX_INPUT_VALUE_BYTES, MAX_INPUTS, RUNNER_GLOB_MAX_LENGTH
from ci_pool.service.job_views import ArtifactView, JobView
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


class JobAck(BaseModel):
    """What an action on a job answers a token that may not read the job: id and state."""

    id: str
    state: str


class PipelineAck(BaseModel):
    """What an action on a pipeline answers a token that may not read it: id and state."""

    id: str
    state: str


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
