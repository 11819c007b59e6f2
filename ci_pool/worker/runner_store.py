"""What a worker needs from the store, as one typed seam: ``Store`` itself for the
embedded default (direct store access on one host), ``ApiRunnerStore`` for a runner that
holds only its own credential and reaches the store through the API (``/v1/runner``).

``open_runner_store`` picks one at start: the API when ``api_url`` and a runner credential
are set (and then never the store URL), else the store."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ci_pool import defaults
from ci_pool.core.retry import AfterAttempt
from ci_pool.core.specs import JobState
from ci_pool.exceptions import ConfigError
from ci_pool.settings import Settings
from ci_pool.store.artifact_sets import ArtifactSet
from ci_pool.store.lifecycle import Claim, FinalChunk, Misrouted
from ci_pool.store.models import Artifact, Job, Pipeline
from ci_pool.store.transitions import Closed

if TYPE_CHECKING:
    from ci_pool.core.commands import Annotation


class RunnerStore(Protocol):
    """The store calls a worker makes, each about a job attempt it claimed (or about
    itself: ``count_claims``, ``count_running``)."""

    @property
    def settles_outcomes(self) -> bool:
        """True when ``close_attempt`` also queues the retry or the pipeline's next jobs
        (the API does it server-side); False when the worker does it."""

    def claim(self, job_id: str, runner_id: str, lease_ttl: float) -> Claim | Misrouted | None:
        """The fenced claim; ``Misrouted`` when the job is sent to runners by a name this
        one does not match (through the API: None, the API's claim checks the name)."""

    def heartbeat(self, job_id: str, attempt: int, lease_ttl: float) -> bool | None: ...

    def append_log(self, job_id: str, attempt: int, seq: int, data: str) -> None: ...

    def close_attempt(
        self,
        job_id: str,
        attempt: int,
        state: JobState,
        *,
        runner_id: str | None,
        reason: str | None = None,
        lease_expired: bool = False,
        values: dict[str, Any] | None = None,
        backoff: float = defaults.RETRY_BACKOFF,
        log: FinalChunk | None = None,
    ) -> tuple[Closed, AfterAttempt] | None:
        """Close the attempt under its fence, with its last log chunk in the same call."""

    def set_outputs(self, job_id: str, attempt: int, outputs: dict[str, Any]) -> None: ...

    def add_summary(
        self, job_id: str, attempt: int, step: int, name: str, markdown: str
    ) -> None: ...

    def add_annotations(self, job_id: str, attempt: int, found: Iterable[Annotation]) -> None: ...

    def add_artifacts(
        self, job_id: str, attempt: int, files: Iterable[Any], name: str | None = None
    ) -> None: ...

    def remove_artifacts(self, ids: Iterable[int]) -> None: ...

    def artifacts(self, job_id: str, attempt: int | None = None) -> list[Artifact]: ...

    def named_artifacts(
        self, pipeline_id: str | None, job_id: str, name: str
    ) -> list[Artifact]: ...

    def artifact_names(self, pipeline_id: str | None, job_id: str) -> list[str]: ...

    def claim_artifact(
        self,
        run_id: str,
        job_id: str,
        attempt: int,
        name: str,
        expires_at: datetime,
        *,
        overwrite: bool,
    ) -> str | None: ...

    def release_artifact(self, run_id: str, name: str, job_id: str, attempt: int) -> None: ...

    def add_artifact_set(
        self, run_id: str, job_id: str, attempt: int, expires_at: datetime
    ) -> None: ...

    def expired_named(self, run_id: str, name: str) -> ArtifactSet | None: ...

    def get_job(self, job_id: str) -> Job: ...

    def get_pipeline(self, pipeline_id: str) -> Pipeline: ...

    def pipeline_jobs(self, pipeline_id: str) -> list[Job]: ...

    def count_claims(self, runner_id: str, since: datetime | None = None) -> int: ...

    def count_running(self, runner_id: str) -> int: ...

    def sync_payload(self, sha256: str) -> bytes | None: ...


def through_api(settings: Settings) -> bool:
    """Whether this runner reaches the store through the API: ``api_url`` and a runner
    credential are set. Then a store URL must not be: the runner holds no database URL."""
    if not settings.api_url or not settings.runner_credential_value():
        return False
    if settings.store_url:
        raise ConfigError(
            "a runner that reaches the store through the API (api_url and a runner "
            "credential are set) must hold no database URL; unset CI_POOL_STORE_URL "
            "(or store_url in ci-pool.toml)",
            key="store_url",
        )
    return True


def open_runner_store(settings: Settings) -> RunnerStore:
    """The API client when ``through_api``, else the store at ``store_url``."""
    if through_api(settings):
        from ci_pool.worker.api_store import ApiRunnerStore

        return ApiRunnerStore(settings)
    from ci_pool.store import Store

    return Store(settings.resolved_store_url)
