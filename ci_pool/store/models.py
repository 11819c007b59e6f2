"""SQLAlchemy models: jobs, their audit events and their log chunks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import TypeAdapter
from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ci_pool.core.concurrency import ConcurrencyGroup
from ci_pool.core.evidence import Evidence
from ci_pool.core.pipeline import PipelineJob
from ci_pool.core.services import ContainerSpec, ServiceSpec
from ci_pool.core.specs import (
    STORED,
    CheckoutSpec,
    EnvironmentSpec,
    JobSpec,
    JobState,
    PipelineState,
    StepSpec,
)
from ci_pool.core.workflow.run_context import RunFacts


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class StateType(TypeDecorator[Any]):
    """A ``str`` enum stored as its value: rows hand back ``JobState``/``PipelineState``
    members, and the column stays a plain string on every backend."""

    impl = String(16)
    cache_ok = True

    def __init__(self, enum: type[JobState] | type[PipelineState]):
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else self.enum(value)


class SpecType(TypeDecorator[Any]):
    """A pydantic-typed value stored as JSON: written as its JSON dump (models or the same
    shape as plain data), read back validated into the type, so rows hand back models."""

    impl = JSON
    cache_ok = True

    def __init__(self, spec_type: Any):
        super().__init__()
        self.spec_type = spec_type
        self.adapter: TypeAdapter[Any] = TypeAdapter(spec_type)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return self.adapter.dump_python(self.adapter.validate_python(value), mode="json")

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return self.adapter.validate_python(value, context={STORED: True})

    def coerce_compared_value(self, op: Any, value: Any) -> Any:
        return JSON()


@dataclass(frozen=True, kw_only=True)
class NewJob:
    """A job to write: its spec (repo and ref filled), where the pool placed it, and for a
    pipeline job its place in the graph."""

    spec: JobSpec
    capability: str
    queue: str
    timeout_s: int
    max_attempts: int
    commit_sha: str | None = None
    #: None: ``queued`` for a job of its own, ``blocked`` for a pipeline job.
    state: JobState | None = None
    reason: str | None = None
    graph: PipelineJob | None = None
    #: Job-level ``concurrency``, as evaluated at submit.
    concurrency: ConcurrencyGroup | None = None

    def columns(self) -> dict[str, Any]:
        """The job row's columns."""
        spec, graph = self.spec, self.graph
        row: dict[str, Any] = {
            "name": spec.name,
            "capability": self.capability,
            "queue": self.queue,
            "repo": spec.repo,
            "ref": spec.ref,
            "commit_sha": self.commit_sha,
            "steps": spec.steps,
            "env": dict(spec.env),
            "labels": list(spec.labels),
            "timeout_s": self.timeout_s,
            "max_attempts": self.max_attempts,
            "secrets": list(spec.secrets),
            "artifacts": list(spec.artifacts),
            "image": spec.image,
            "checkout": spec.checkout,
            "permissions": spec.permissions,
            "environment": spec.environment,
            "services": spec.services,
            "container": spec.container,
            "runner": spec.runner,
            "reason": self.reason,
            "concurrency": self.concurrency,
        }
        if self.state is not None:
            row["state"] = self.state
        if graph is not None:
            row.update(
                key=graph.key,
                job_ref=graph.job_id,
                needs=list(graph.needs),
                if_expr=graph.if_expr,
                continue_on_error=graph.continue_on_error,
                matrix=dict(graph.matrix),
                fail_fast=graph.fail_fast,
                max_parallel=graph.max_parallel,
                outputs_spec=dict(graph.outputs),
                matrix_template=graph.dynamic_matrix,
            )
        return row


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Job(Base):
    """One job: what to run, where, and the outcome of its latest attempt."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    pipeline_id: Mapped[str | None] = mapped_column(String(32), default=None)
    capability: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(64))
    repo: Mapped[str] = mapped_column(Text)
    ref: Mapped[str] = mapped_column(String(255))
    commit_sha: Mapped[str | None] = mapped_column(String(64), default=None)
    steps: Mapped[tuple[StepSpec, ...]] = mapped_column(SpecType(tuple[StepSpec, ...]))
    env: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    labels: Mapped[list[Any]] = mapped_column(JSON, default=list)
    timeout_s: Mapped[int] = mapped_column(Integer)
    #: Names only: secret values never reach the store.
    secrets: Mapped[list[Any]] = mapped_column(JSON, default=list)
    artifacts: Mapped[list[Any]] = mapped_column(JSON, default=list)
    image: Mapped[str | None] = mapped_column(String(500), default=None)
    checkout: Mapped[CheckoutSpec] = mapped_column(SpecType(CheckoutSpec), default=CheckoutSpec)
    #: ``permissions:`` and ``environment:`` as written (recorded and shown).
    permissions: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    environment: Mapped[EnvironmentSpec | None] = mapped_column(
        SpecType(EnvironmentSpec), default=None
    )
    #: ``services:`` and the ``container:`` settings beyond its image.
    services: Mapped[tuple[ServiceSpec, ...] | None] = mapped_column(
        SpecType(tuple[ServiceSpec, ...]), default=()
    )
    container: Mapped[ContainerSpec | None] = mapped_column(SpecType(ContainerSpec), default=None)
    #: Glob over runner names the job may run on (None: any runner of its capability).
    runner: Mapped[str | None] = mapped_column(String(128), default=None)
    # Pipeline jobs only: the workflow job id, the display key of this matrix cell, the
    # keys of the jobs it needs, its condition and its matrix values.
    job_ref: Mapped[str | None] = mapped_column(String(200), default=None)
    key: Mapped[str | None] = mapped_column(String(400), default=None)
    needs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    if_expr: Mapped[str | None] = mapped_column(Text, default=None)
    continue_on_error: Mapped[bool] = mapped_column(default=False)
    matrix: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    fail_fast: Mapped[bool] = mapped_column(default=True)
    max_parallel: Mapped[int | None] = mapped_column(Integer, default=None)
    #: Output name -> template (as written), and the values the job produced.
    outputs_spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: A matrix computed at run time, as written, while this job is the template of its
    #: cells (``core.workflow.dynamic_matrix``); None once expanded, and for other jobs.
    matrix_template: Mapped[Any] = mapped_column(
        JSON(none_as_null=True), default=None, nullable=True
    )
    state: Mapped[JobState] = mapped_column(StateType(JobState))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    runner_id: Mapped[str | None] = mapped_column(String(255), default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    exit_code: Mapped[int | None] = mapped_column(Integer, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    evidence: Mapped[Evidence | None] = mapped_column(SpecType(Evidence), default=None)
    #: Job-level concurrency group (pipeline jobs only), as evaluated at submit.
    concurrency: Mapped[ConcurrencyGroup | None] = mapped_column(
        SpecType(ConcurrencyGroup), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_jobs_state_capability", "state", "capability"),
        Index("ix_jobs_pipeline", "pipeline_id"),
        # Covers what status reads of the last hour's jobs (store.jobs.finished_since).
        Index("ix_jobs_finished", "finished_at", "state", "capability", "started_at"),
        Index("ix_jobs_started", "started_at"),
        Index("ix_jobs_created", "created_at", "id"),
        # The web view: a runner's recent jobs; pipelines with a job on a capability.
        Index("ix_jobs_runner", "runner_id", "started_at"),
        Index("ix_jobs_pipeline_capability", "pipeline_id", "capability"),
    )


class JobEvent(Base):
    """Audit row: one per state transition."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    runner_id: Mapped[str | None] = mapped_column(String(255), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)


class LogChunk(Base):
    """A piece of one attempt's log, in order of ``seq``."""

    __tablename__ = "log_chunks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    data: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_log_chunks_job", "job_id", "attempt", "seq", unique=True),)


class Artifact(Base):
    """A file a job attempt produced, copied to the artifact store."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The name it was uploaded under (``actions/upload-artifact``; its path starts with
    #: ``<name>/``), None for the files of the job's ``artifacts:`` paths.
    name: Mapped[str | None] = mapped_column(String(255), default=None, index=True)

    __table_args__ = (Index("ix_artifacts_job", "job_id", "attempt", "path", unique=True),)


class Pipeline(Base):
    """A submitted workflow: one row, and one job row per (job x matrix cell)."""

    __tablename__ = "pipelines"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    file: Mapped[str] = mapped_column(Text, default="")
    repo: Mapped[str] = mapped_column(Text)
    ref: Mapped[str] = mapped_column(String(255))
    commit_sha: Mapped[str | None] = mapped_column(String(64), default=None)
    event: Mapped[str] = mapped_column(String(64), default="push")
    env: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: What started it: the trigger (name, ref, pull request, schedule slot, whether its
    #: jobs get secrets), the event payload, dispatch inputs, vars, actor and run number.
    context: Mapped[RunFacts | None] = mapped_column(SpecType(RunFacts), default=None)
    #: ``run-name`` rendered at submit: the display name; None shows ``name``.
    run_name: Mapped[str | None] = mapped_column(String(200), default=None)
    permissions: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    state: Mapped[PipelineState] = mapped_column(StateType(PipelineState))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Workflow-level concurrency group, as evaluated at submit.
    concurrency: Mapped[ConcurrencyGroup | None] = mapped_column(
        SpecType(ConcurrencyGroup), default=None
    )

    # The web view's pipelines list: newest first, a keyset page at a time.
    __table_args__ = (Index("ix_pipelines_created", "created_at", "id"),)


class ConcurrencySlot(Base):
    """One concurrency group of one repository: the member that holds it and the member
    waiting for it (``pipeline:<id>`` or ``job:<id>``). Whether each has ended is read from
    its own rows; this row is the fence two claims of the group race on."""

    __tablename__ = "concurrency_groups"

    #: ``core.concurrency.group_key`` of the repository and the group's name.
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    repo: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    holder: Mapped[str | None] = mapped_column(String(48), default=None, index=True)
    pending: Mapped[str | None] = mapped_column(String(48), default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
