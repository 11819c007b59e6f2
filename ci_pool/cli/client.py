"""What the CLI asks of the pool, answered locally (store + broker) or by the HTTP API.

``connect(settings)`` picks the API when ``CI_POOL_API_URL`` is set. Both answer with the
same typed views (``JobView``/``PipelineView`` of ``ci_pool.service.job_views``, ``QueueStatus``
and ``RunnerStatus`` of ``ci_pool.service.views``) and raise the same CIPoolError subclasses,
so every command prints the same output and exits with the same code in either mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ci_pool.core.diagnostics import DiagnosticRecord, DiagnosticResult
from ci_pool.core.specs import FINAL_STATES, JobState, parse_job_spec
from ci_pool.core.submissions import JobCreate
from ci_pool.core.sync import SyncSource
from ci_pool.exceptions import (
    InputError,
    NotFound,
)
from ci_pool.service.job_views import (
    JobAck,
    JobView,
    PipelineAck,
    PipelineView,
    job_view,
    pipeline_view,
)
from ci_pool.service.views import QueueStatus, RunnerStatus
from ci_pool.settings import Settings

if TYPE_CHECKING:
    # Each client imports its own stack when made: local commands never load httpx,
    # remote ones never the local pool (Celery, the Docker-side services).

    from ci_pool.service.identities import RunnerIdentityView, RunnerTokenPublic
    from ci_pool.service.pool import Pool

#: A workflow_dispatch run's inputs (``run --input``).
Inputs = dict[str, str] | None


class PoolClient(Protocol):
    """The operations behind the CLI's job and pipeline commands."""

    def submit_job(self, job: JobCreate) -> JobView:
        """Submit one job; its view."""

    def job(self, job_id: str) -> JobView:
        """The detailed view of a job (``show --json``)."""

    def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        """The job's view once it is final, or when ``timeout`` seconds pass."""

    def log(self, job_id: str, attempt: int | None = None) -> str:
        """The stored log of one attempt (default: the latest)."""

    def follow(self, job_id: str) -> Iterator[tuple[str | None, str]]:
        """(timestamp, line) as the job writes them, until it ends."""

    def cancel(self, job_id: str) -> JobView | JobAck:
        """Cancel a job; its view after the request (id and state only to a token that may
        not read it)."""

    def retry_job(self, job_id: str) -> JobView | JobAck:
        """Run a job that did not succeed again; its view."""

    def download_artifacts(self, job_id: str, dest: Path, attempt: int | None = None) -> list[Path]:
        """Copy a job's artifacts under ``dest``, each checked against its sha256."""

    def status(self) -> list[QueueStatus]:
        """The rows of ``ci-pool status``: one per capability."""

    def waiting(self, job_id: str) -> str | None:
        """Why the job has not started, or None."""

    def explain(self, job_id: str) -> str:
        """Why a job is not running yet, or how it ended, in one sentence."""

    def upload_sync(self, mode: str, data: bytes) -> SyncSource:
        """Keep a ``--sync`` payload; the ``SyncSource`` a job's checkout names it by."""

    def submit_pipeline(
        self,
        text: str,
        file: str,
        repo: str,
        ref: str,
        event: str,
        inputs: Inputs = None,
        sync: SyncSource | None = None,
        runner: str | None = None,
    ) -> PipelineView:
        """Run a workflow (``inputs``: a workflow_dispatch run's, ``sync``: local changes
        for every job, ``runner``: a glob over the runner names every job may run on);
        the pipeline's view."""

    def pipeline(self, pipeline_id: str) -> PipelineView:
        """The pipeline's view with each of its jobs."""

    def cancel_pipeline(self, pipeline_id: str) -> PipelineView | PipelineAck:
        """Cancel every job of the pipeline that has not ended; its view."""

    def retry_pipeline(self, pipeline_or_job_id: str) -> tuple[str, int]:
        """Re-run a pipeline's failed jobs: (pipeline id, how many jobs run again)."""

    def runners(self) -> list[RunnerStatus]:
        """Every runner heard from, with its state and running jobs."""

    def drain(self, runner_id: str) -> str:
        """The runner takes no new job and exits after the running one; what happened."""

    def undrain(self, runner_id: str) -> str:
        """Cancel a drain; what happened."""

    def scale(self, capability: str, slots: int) -> list[str]:
        """Spread ``slots`` concurrent jobs over the capability's workers; one line each."""

    def runner_exec(self, name: str, argv: list[str], timeout: float | None) -> DiagnosticResult:
        """One diagnostic command on a live runner: exit code and output."""

    def runner_exec_log(self, runner: str | None, limit: int) -> list[DiagnosticRecord]:
        """The audit of diagnostic commands, newest first."""

    # -- runner identities --
    def create_runner_token(
        self, capabilities: list[str], expires: str, name: str | None = None
    ) -> RunnerTokenPublic:
        """A one-time registration token (admin), for one runner name if given."""

    def revoke_runner(self, name: str) -> RunnerIdentityView:
        """Revoke a registered runner (admin)."""

    def runner_identities(self) -> list[RunnerIdentityView]:
        """Every registered runner, revoked ones too (admin)."""


def connect(settings: Settings) -> PoolClient:
    """The API client when ``api_url`` is set, else the local pool."""
    if settings.api_url:
        from ci_pool.cli.http_client import HttpClient

        return HttpClient(settings)
    from ci_pool.service.pool import Pool

    return LocalClient(Pool(settings))


def _explain(view: JobView, lease: str | None = None) -> str:
    if view.waiting:
        return f"job {view.id} is {view.state}: {view.waiting}"
    if view.state == JobState.RUNNING.value:
        return f"job {view.id} is running on {view.runner_id} (attempt {view.attempt})" + (
            f"; its lease runs until {lease}" if lease else ""
        )
    reason = f": {view.reason}" if view.reason else ""
    return f"job {view.id} ended {view.state}{reason}"


def _is_final(view: JobView) -> bool:
    return JobState(view.state) in FINAL_STATES


class LocalClient:
    """Straight to the store and the broker (the operator's CLI on a pool host)."""

    def __init__(self, pool: Pool):
        self.pool = pool

    def submit_job(self, job: JobCreate) -> JobView:
        # As the API takes it: the repo URL checked against this pool's settings.
        allow_local = self.pool.settings.allow_local_repos
        spec = parse_job_spec(job.model_dump(exclude_none=True), allow_local_repos=allow_local)
        return job_view(self.pool.submit(spec))

    def job(self, job_id: str) -> JobView:
        return job_view(self.pool.get(job_id), self.pool)

    def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        return job_view(self.pool.wait(job_id, timeout=timeout))

    def log(self, job_id: str, attempt: int | None = None) -> str:
        self.pool.get(job_id)
        return self.pool.store.read_log(job_id, attempt)

    def follow(self, job_id: str) -> Iterator[tuple[str | None, str]]:
        self.pool.get(job_id)
        yield from self.pool.follow(job_id)

    def cancel(self, job_id: str) -> JobView:
        return job_view(self.pool.cancel(job_id))

    def retry_job(self, job_id: str) -> JobView:
        return job_view(self.pool.retry_job(job_id))

    def download_artifacts(self, job_id: str, dest: Path, attempt: int | None = None) -> list[Path]:
        self.pool.get(job_id)
        return self.pool.download_artifacts(job_id, dest, attempt)

    def status(self) -> list[QueueStatus]:
        return self.pool.status()

    def waiting(self, job_id: str) -> str | None:
        return self.pool.why_waiting(self.pool.get(job_id))

    def explain(self, job_id: str) -> str:
        job = self.pool.get(job_id)
        view = job_view(job)
        view.waiting = self.pool.why_waiting(job)
        return _explain(view, view.lease_until or "-")

    def upload_sync(self, mode: str, data: bytes) -> SyncSource:
        if len(data) > self.pool.settings.sync_max_bytes:
            raise InputError(
                f"the {mode} is {len(data)} bytes, over the limit of "
                f"{self.pool.settings.sync_max_bytes} (setting sync_max_bytes)",
                field="--sync",
            )
        return self.pool.store.put_sync_payload("patch" if mode == "patch" else "snapshot", data)

    def submit_pipeline(
        self,
        text: str,
        file: str,
        repo: str,
        ref: str,
        event: str,
        inputs: Inputs = None,
        sync: SyncSource | None = None,
        runner: str | None = None,
    ) -> PipelineView:
        row = self.pool.submit_pipeline(
            text, file, repo, ref, event, inputs=inputs, sync=sync, runner=runner
        )
        return self.pipeline(row.id)

    def pipeline(self, pipeline_id: str) -> PipelineView:
        return pipeline_view(*self.pool.pipeline(pipeline_id))

    def cancel_pipeline(self, pipeline_id: str) -> PipelineView:
        row = self.pool.cancel_pipeline(pipeline_id)
        return self.pipeline(row.id)

    def retry_pipeline(self, pipeline_or_job_id: str) -> tuple[str, int]:
        pipeline_id = pipeline_or_job_id
        try:
            self.pool.store.get_pipeline(pipeline_id)
        except NotFound:  # a job id: retry its pipeline
            job = self.pool.get(pipeline_id)
            if not job.pipeline_id:
                raise InputError(f"job {job.id} is not part of a pipeline", field="ID") from None
            pipeline_id = job.pipeline_id
        return pipeline_id, len(self.pool.retry_pipeline(pipeline_id))

    def runners(self) -> list[RunnerStatus]:
        return self.pool.runner_statuses()

    def drain(self, runner_id: str) -> str:
        return self.pool.drain(runner_id)

    def undrain(self, runner_id: str) -> str:
        return self.pool.undrain(runner_id)

    def scale(self, capability: str, slots: int) -> list[str]:
        return self.pool.scale(capability, slots)

    def runner_exec(self, name: str, argv: list[str], timeout: float | None) -> DiagnosticResult:
        import getpass

        return self.pool.runner_exec(name, argv, by=f"local {getpass.getuser()}", timeout=timeout)

    def runner_exec_log(self, runner: str | None, limit: int) -> list[DiagnosticRecord]:
        return self.pool.runner_exec_log(runner, limit)

    def create_runner_token(
        self, capabilities: list[str], expires: str, name: str | None = None
    ) -> RunnerTokenPublic:
        from ci_pool.service import identities

        return identities.create_token(
            self.pool, capabilities, identities.lifetime(expires), by=_local_user(), name=name
        )

    def revoke_runner(self, name: str) -> RunnerIdentityView:
        from ci_pool.service import identities

        return identities.revoke(self.pool, name, by=_local_user())

    def runner_identities(self) -> list[RunnerIdentityView]:
        from ci_pool.service import identities

        return identities.identities_view(self.pool)


def _local_user() -> str:
    import getpass

    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local"
