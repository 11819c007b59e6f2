"""What a registered runner may do to the store through the API, each call checked
against its identity server-side.

A runner claims only jobs of the capabilities it registered for, under its registered
name. Every other call names a job and an attempt, and is refused unless that attempt is
running under this runner's lease. After an outcome the API queues the retry or the
pipeline's next jobs, as an embedded worker does. Artifacts and cache archives come as
bodies, checked here (bounded, sha256, path rules) before they reach the pool's stores."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from ci_pool import defaults
from ci_pool.cachestore import CacheBackend, cache_repo_prefix, open_backend
from ci_pool.core import scheduler
from ci_pool.core.commands import Annotation
from ci_pool.core.evidence import Evidence
from ci_pool.core.retry import AfterAttempt, Next
from ci_pool.core.runner_names import name_matches
from ci_pool.core.specs import FINAL_STATES, JobState
from ci_pool.exceptions import AccessDenied, InputError, NotFound, TooLarge
from ci_pool.service.pool import Pool
from ci_pool.store.artifact_sets import ArtifactSet
from ci_pool.store.identities import RunnerIdentity
from ci_pool.store.lifecycle import Claim
from ci_pool.store.models import Artifact, Job, Pipeline, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stored:
    """A file an upload wrote: where, its size and sha256."""

    path: str
    size: int
    sha256: str


def artifact_parts(path: str) -> list[str] | None:
    """A stored artifact path's components, if it stays inside its directory (no ``..``,
    nothing absolute, no NUL or backslash, no empty or dot component), else None."""
    if not path or len(path) > 4096 or path.startswith("/") or "\0" in path or "\\" in path:
        return None
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return parts


def check_size(what: str, size: int, limit: int, setting: str = "") -> None:
    if size > limit:
        where = f" (setting {setting})" if setting else ""
        raise TooLarge(f"{what} is {size} bytes, over the limit of {limit}{where}", field=what)


class RunnerIO:
    """The runner ``runner``'s view of the pool ``pool``."""

    def __init__(self, pool: Pool, runner: RunnerIdentity):
        self.pool, self.runner = pool, runner
        self.store, self.settings = pool.store, pool.settings

    @property
    def name(self) -> str:
        return self.runner.name

    # -- scope --

    def held(self, job_id: str, attempt: int) -> Job:
        """The job, when its attempt ``attempt`` runs under this runner's lease."""
        refused = AccessDenied(
            f"job {job_id} attempt {attempt} is not claimed by runner {self.name}",
            field="job_id",
        )
        try:
            job = self.store.get_job(job_id)
        except NotFound:
            raise refused from None
        if (
            job.state is not JobState.RUNNING
            or job.attempt != attempt
            or job.runner_id != self.name
        ):
            raise refused
        return job

    def own_job(self, job_id: str) -> Job:
        """A job whose latest attempt this runner claimed (running or ended)."""
        try:
            job = self.store.get_job(job_id)
        except NotFound:
            job = None
        if job is None or job.runner_id != self.name:
            raise AccessDenied(f"job {job_id} is not claimed by runner {self.name}", field="job_id")
        return job

    def summary(self, since: datetime | None = None) -> dict[str, Any]:
        """Its name, capabilities, running jobs and claims (all, or since ``since``; no
        zone: UTC)."""
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return {
            "name": self.name,
            "capabilities": list(self.runner.capabilities),
            "running": self.store.count_running(self.name),
            "claims": self.store.count_claims(self.name, since),
        }

    def take_exec_request(self, token: str) -> tuple[list[str], float] | None:
        """A ``runner exec`` request made for this runner, taken once under its name."""
        from ci_pool.store.diagnostics import take_exec_request

        return take_exec_request(self.store, token, self.name)

    # -- claim and lease --

    def claim(self, job_id: str, lease_ttl: float) -> Claim | None:
        """Claim under the registered name, only a job of a registered capability."""
        try:
            job = self.store.get_job(job_id)
        except NotFound:
            return None
        if job.capability not in self.runner.capabilities:
            raise AccessDenied(
                f"runner {self.name} serves {', '.join(self.runner.capabilities)}; job {job_id} "
                f"needs capability {job.capability}",
                field="job_id",
            )
        if job.runner is not None and not name_matches(job.runner, self.name):
            log.warning(
                "job %s is for runners %r, not %s: not claimed", job_id, job.runner, self.name
            )
            return None  # it stays queued; the reaper sends it to a runner it matches
        ttl = max(1.0, min(lease_ttl, self.settings.lease_ttl))
        claim = self.store.claim(job_id, self.name, ttl)
        if claim is not None:
            # Its Redis user may write this job's live log from now on; a runner whose
            # abandoned attempt was taken over may not any more.
            self.pool.runner_users.refresh_quietly(self.name)
            if claim.took_over is not None and job.runner_id not in (None, self.name):
                self.pool.runner_users.refresh_quietly(job.runner_id)
        return claim

    def heartbeat(self, job_id: str, attempt: int, lease_ttl: float) -> bool:
        self.held(job_id, attempt)
        ttl = max(1.0, min(lease_ttl, self.settings.lease_ttl))
        cancel = self.store.heartbeat(job_id, attempt, ttl)
        if cancel is None:  # the attempt ended between the check and the update
            raise AccessDenied(
                f"job {job_id} attempt {attempt} is not claimed by runner {self.name}",
                field="job_id",
            )
        return cancel

    # -- what an attempt writes --

    def append_log(self, job_id: str, attempt: int, seq: int, data: str) -> None:
        check_size("data", len(data.encode()), defaults.RUNNER_LOG_CHUNK_MAX)
        self.held(job_id, attempt)
        try:
            self.store.append_log(job_id, attempt, seq, data)
        except IntegrityError:
            raise InputError(
                f"log chunk {seq} of this attempt was stored already", field="seq"
            ) from None

    def set_outputs(self, job_id: str, attempt: int, outputs: dict[str, str]) -> None:
        check_size("outputs", len(json.dumps(outputs).encode()), defaults.RUNNER_OUTPUTS_MAX)
        self.held(job_id, attempt)
        self.store.set_outputs(job_id, attempt, outputs)

    def add_summary(self, job_id: str, attempt: int, step: int, name: str, markdown: str) -> None:
        check_size("markdown", len(markdown.encode()), defaults.RUNNER_SUMMARY_MAX)
        self.held(job_id, attempt)
        self.store.add_summary(job_id, attempt, step, name, markdown)

    def add_annotations(self, job_id: str, attempt: int, found: list[Annotation]) -> None:
        if len(found) > defaults.RUNNER_ANNOTATIONS_MAX:
            raise TooLarge(
                f"{len(found)} annotations in one call, over {defaults.RUNNER_ANNOTATIONS_MAX}",
                field="annotations",
            )
        self.held(job_id, attempt)
        self.store.add_annotations(job_id, attempt, found)

    def close(
        self,
        job_id: str,
        attempt: int,
        state: JobState,
        reason: str | None,
        exit_code: int | None,
        evidence: Evidence | None,
    ) -> tuple[Job, AfterAttempt]:
        """Close the attempt under the fence, then queue the retry or advance the pipeline
        here, as an embedded worker would."""
        if state not in FINAL_STATES or state in (JobState.REJECTED, JobState.SKIPPED):
            raise InputError(f"{state.value!r} is not an outcome of an attempt", field="state")
        job = self.held(job_id, attempt)
        if evidence is not None:
            evidence = evidence.model_copy(update={"runner_id": self.name})
        closed = self.store.close_attempt(
            job_id,
            attempt,
            state,
            runner_id=self.name,
            reason=reason,
            values={"exit_code": exit_code, "evidence": evidence},
            backoff=self.settings.retry_backoff,
        )
        if closed is None:  # the reaper or a cancel closed it meanwhile
            raise AccessDenied(
                f"job {job_id} attempt {attempt} is not claimed by runner {self.name}",
                field="job_id",
            )
        done, decision = closed
        self.pool.runner_users.refresh_quietly(self.name)  # the job's log stream is closed to it
        if decision.next is Next.REQUEUE:
            from ci_pool.broker.app import send_run_job

            cap = self.settings.capabilities[job.capability]
            send_run_job(self.pool.celery, cap, job_id, decision.delay)
        elif job.pipeline_id:
            self._advance(job.pipeline_id)
        return done, decision

    def _advance(self, pipeline_id: str) -> None:
        try:
            scheduler.PipelineScheduler(
                self.store, self.pool.publish, self.settings.max_jobs_per_pipeline
            ).advance(pipeline_id)
        except Exception:  # the outcome is recorded; the reaper can advance later
            log.exception("advancing pipeline %s failed", pipeline_id)

    # -- what an attempt reads --

    def pipeline(self, job_id: str, attempt: int) -> tuple[Pipeline, list[Job]]:
        job = self.held(job_id, attempt)
        if not job.pipeline_id:
            raise NotFound(f"job {job_id} is not in a pipeline")
        return self.store.get_pipeline(job.pipeline_id), self.store.pipeline_jobs(job.pipeline_id)

    def sync_payload(self, job_id: str, attempt: int) -> bytes:
        job = self.held(job_id, attempt)
        sync = job.checkout.sync
        data = self.store.sync_payload(sync.sha256) if sync is not None else None
        if data is None:
            raise NotFound(f"job {job_id} carries no sync payload the pool keeps")
        return data

    # -- artifacts --

    def attempt_dir(self, job_id: str, attempt: int) -> Path:
        return self.settings.resolved_artifact_root / job_id / str(attempt)

    def check_upload(
        self, job_id: str, attempt: int, path: str, name: str | None, size: int
    ) -> list[str]:
        """Before the body is read: the path's parts, once the path, the name and the
        attempt's total size are within bounds."""
        self.held(job_id, attempt)
        parts = artifact_parts(path)
        if parts is None:
            raise InputError(
                f"artifact path {path[:200]!r} is refused: use a relative path without "
                "'..', '.', empty parts, backslashes or NUL",
                field="path",
            )
        if name is not None and (len(parts) < 2 or parts[0] != name):
            raise InputError(f"artifact {name!r}: its files go under {name}/", field="path")
        rows = self.store.artifacts(job_id, attempt)
        if len(rows) >= self.settings.artifact_max_files:
            raise TooLarge(
                f"attempt already has {len(rows)} artifact files, the limit "
                "(setting artifact_max_files)",
                field="path",
            )
        used = sum(r.size for r in rows)
        check_size("artifacts", used + size, self.settings.artifact_max_bytes, "artifact_max_bytes")
        return parts

    def store_upload(
        self, job_id: str, attempt: int, parts: list[str], name: str | None, tmp: Path, got: Stored
    ) -> None:
        """Move a checked upload into the artifact store and index it."""
        self.held(job_id, attempt)
        base = self.attempt_dir(job_id, attempt)
        target = base.joinpath(*parts)
        for parent in reversed(target.relative_to(base).parents):
            if (base / parent).is_symlink():
                raise InputError(f"artifact path {got.path!r} is refused", field="path")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            raise InputError(
                f"artifact {got.path} of this attempt was stored already", field="path"
            )
        os.replace(tmp, target)
        try:
            self.store.add_artifacts(job_id, attempt, [got], name=name)
        except IntegrityError:
            target.unlink(missing_ok=True)
            raise InputError(
                f"artifact {got.path} of this attempt was stored already", field="path"
            ) from None

    def artifact_of_run(self, job_id: str, attempt: int, artifact_id: int) -> tuple[Artifact, Path]:
        """An artifact of the same pipeline (or the job itself) and its stored file."""
        job = self.held(job_id, attempt)
        row = self.store.get_artifact(artifact_id)
        owner = self.store.get_job(row.job_id) if row is not None else None
        same = owner is not None and (
            owner.id == job.id
            or (job.pipeline_id is not None and owner.pipeline_id == job.pipeline_id)
        )
        parts = artifact_parts(row.path) if row is not None else None
        if row is None or not same or parts is None:
            raise NotFound(f"no artifact {artifact_id} in the run of job {job_id}")
        return row, self.attempt_dir(row.job_id, row.attempt).joinpath(*parts)

    # -- artifact sets: names held per run, retention --

    def _expiry(self, asked: datetime) -> datetime:
        """``asked``, at most the pool's longest retention from now (no zone: UTC)."""
        if asked.tzinfo is None:
            asked = asked.replace(tzinfo=UTC)
        longest = utcnow() + timedelta(days=self.settings.artifact_retention_max_days)
        return min(asked, longest)

    def claim_artifact(
        self, job_id: str, attempt: int, name: str, expires_at: datetime, overwrite: bool
    ) -> str | None:
        job = self.held(job_id, attempt)
        return self.store.claim_artifact(
            job.pipeline_id or job.id,
            job.id,
            attempt,
            name,
            self._expiry(expires_at),
            overwrite=overwrite,
        )

    def release_artifact(self, job_id: str, attempt: int, name: str) -> None:
        job = self.held(job_id, attempt)
        self.store.release_artifact(job.pipeline_id or job.id, name, job.id, attempt)

    def add_artifact_set(self, job_id: str, attempt: int, expires_at: datetime) -> None:
        job = self.held(job_id, attempt)
        self.store.add_artifact_set(
            job.pipeline_id or job.id, job.id, attempt, self._expiry(expires_at)
        )

    def expired_named(self, job_id: str, attempt: int, name: str) -> ArtifactSet | None:
        job = self.held(job_id, attempt)
        return self.store.expired_named(job.pipeline_id or job.id, name)

    def remove_artifact(self, job_id: str, attempt: int, artifact_id: int) -> None:
        row, path = self.artifact_of_run(job_id, attempt, artifact_id)
        path.unlink(missing_ok=True)
        self.store.remove_artifacts([row.id])

    # -- the pool cache, scoped to the job's repository --

    def cache(self, job_id: str, attempt: int, name: str) -> CacheBackend:
        """The pool cache, once ``name`` (a name or a prefix) is within the job's repository."""
        job = self.held(job_id, attempt)
        scope = cache_repo_prefix(job.repo)
        if not name.startswith(scope) or ".." in name.split("/") or len(name) > 1024:
            raise AccessDenied(
                f"cache name {name[:120]!r} is outside the cache of job {job_id}'s repository "
                f"(its names start {scope})",
                field="name",
            )
        return open_backend(self.settings)

    def cache_put(self, backend: CacheBackend, name: str, archive: Path) -> None:
        backend.put(name, archive)
        backend.evict(self.settings.cache_max_bytes, defaults.CACHE_LAYOUT)
