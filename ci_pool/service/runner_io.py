"""What a registered runner may do to the store through the API, each call checked
against its identity server-side.

A runner claims only jobs of the capabilities it registered for, under its registered
name. Every other call names a job and an attempt, and is refused unless that attempt is
running under this runner's lease (``runner_scope``). After an outcome the API queues the
retry or the pipeline's next jobs, as an embedded worker does. Artifacts and cache
archives are ``runner_files``'."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from ci_pool import defaults
from ci_pool.core import scheduler
from ci_pool.core.commands import Annotation
from ci_pool.core.evidence import Evidence
from ci_pool.core.retry import AfterAttempt, Next
from ci_pool.core.runner_names import name_matches
from ci_pool.core.specs import FINAL_STATES, JobState
from ci_pool.exceptions import AccessDenied, InputError, NotFound, TooLarge
from ci_pool.service.runner_files import RunnerFiles
from ci_pool.service.runner_scope import Stored, artifact_parts, check_size
from ci_pool.store.lifecycle import Claim, FinalChunk
from ci_pool.store.models import Job, Pipeline
from ci_pool.store.transitions import Closed

log = logging.getLogger(__name__)

__all__ = ["RunnerIO", "Stored", "artifact_parts", "check_size"]


class RunnerIO(RunnerFiles):
    """The runner ``runner``'s calls about its jobs' state: claim, lease, log, outcome,
    outputs, summaries and annotations (its file transfers are ``RunnerFiles``')."""

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
        if not isinstance(claim, Claim):
            return None  # nothing to claim (the name was checked above)
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
        last: FinalChunk | None = None,
    ) -> tuple[Closed, AfterAttempt]:
        """Close the attempt under the fence, with its last log chunk ``last`` in the same
        transaction, then queue the retry or advance the pipeline here, as an embedded
        worker would."""
        if state not in FINAL_STATES or state in (JobState.REJECTED, JobState.SKIPPED):
            raise InputError(f"{state.value!r} is not an outcome of an attempt", field="state")
        if last is not None:
            check_size("log.data", len(last.data.encode()), defaults.RUNNER_LOG_CHUNK_MAX)
        job = self.held(job_id, attempt)
        if evidence is not None:
            evidence = evidence.model_copy(update={"runner_id": self.name})
        try:
            closed = self.store.close_attempt(
                job_id,
                attempt,
                state,
                runner_id=self.name,
                reason=reason,
                values={"exit_code": exit_code, "evidence": evidence},
                backoff=self.settings.retry_backoff,
                log=last,
            )
        except IntegrityError:
            raise InputError(
                f"log chunk {last.seq if last else '?'} of this attempt was stored already",
                field="log.seq",
            ) from None
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
