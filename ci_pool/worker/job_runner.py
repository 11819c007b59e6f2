"""JobRunner: claim a job, check it out, run its steps, record the outcome. Celery-free."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from ci_pool.core.capabilities import Capability
from ci_pool.core.evidence import Evidence
from ci_pool.core.masking import Masker
from ci_pool.core.specs import JobState
from ci_pool.exceptions import CIPoolError, SyncRefused
from ci_pool.git import repo_transport
from ci_pool.settings import Settings
from ci_pool.store.lifecycle import Misrouted
from ci_pool.worker import scratch, steps, workspace
from ci_pool.worker.attempt import Attempt, StepDirs
from ci_pool.worker.cleanup import Leftover, cleaner
from ci_pool.worker.contexts import (
    JobPlaces,
    expression_context,
    job_env,
    job_secrets,
    prepare_places,
    registry_auth,
    service_auth,
    service_specs,
)
from ci_pool.worker.executors.base import Execution, Executor, JobContext
from ci_pool.worker.jobfiles import JobDir
from ci_pool.worker.logs import LogWriter
from ci_pool.worker.monitor import JobMonitor
from ci_pool.worker.outcome import Outcome, OutcomeRecorder, error_outcome, steps_outcome
from ci_pool.worker.runner_store import RunnerStore

log = logging.getLogger(__name__)


class JobRunner:
    """Runs claimed jobs for one worker process."""

    def __init__(
        self,
        settings: Settings,
        store: RunnerStore,
        redis_client: redis.Redis | None,
        executors: Callable[[Capability], Executor],
        requeue: Callable[[Capability, str, float], None],
        notify: Callable[[str], None] | None = None,
        misrouted: Callable[[Misrouted], None] | None = None,
    ):
        self.settings = settings
        self.store = store
        self.redis = redis_client
        self.executors = executors
        self.requeue = requeue
        self.recorder = OutcomeRecorder(settings, store, requeue)
        #: Resolved once: ``Path.resolve`` costs more than the rest of a job's path work.
        self.workspace_root = settings.resolved_workspace_root
        #: Told each change of a job's state (commit statuses); returns at once.
        self.notify = notify
        #: Told of a job sent to runners by a name this one does not match.
        self.misrouted = misrouted

    def _secrets_withheld(self, pipeline_id: str | None) -> str:
        """Why the job's pipeline gets no secrets (a pull request's policy), or ""."""
        if pipeline_id is None:
            return ""
        facts = self.store.get_pipeline(pipeline_id).context
        if facts is None or facts.secrets_allowed:
            return ""
        return f"{facts.event_name} #{facts.number}" if facts.number else facts.event_name

    def run(self, job_id: str, runner_id: str) -> JobState | None:
        """Claim and run one job; returns its final state, or None if there was nothing
        to claim (a duplicate delivery, a cancelled job, a live lease elsewhere)."""
        claim = self.store.claim(job_id, runner_id, self.settings.lease_ttl)
        if isinstance(claim, Misrouted):
            log.warning(
                "job %s: for runners %r, not %s; sending it on", job_id, claim.runners, runner_id
            )
            if self.misrouted is not None:
                self.misrouted(claim)
            return None
        if claim is None:
            log.info("job %s: nothing to claim (already taken or finished)", job_id)
            return None
        job = claim.job
        self._notify(job.id)
        cap = self.settings.capabilities.get(job.capability)
        secrets: dict[str, str] = {}
        missing: list[str] = []
        secret_error = None
        withheld = self._secrets_withheld(job.pipeline_id)
        try:
            if cap and not withheld:
                secrets, missing = job_secrets(cap, job)
        except CIPoolError as exc:
            secret_error = exc
        logw = LogWriter(
            self.redis,
            self.store,
            job.id,
            job.attempt,
            masker=Masker(secrets.values()),
            max_bytes=self.settings.log_max_bytes,
            debug=str(job.env.get("ACTIONS_STEP_DEBUG", "")).lower() == "true",
            capability=job.capability,
        )
        # Made before the first line: it releases the lines the log holds back.
        monitor = JobMonitor(
            self.store,
            job.id,
            job.attempt,
            logw,
            time.monotonic() + job.timeout_s,
            heartbeat_interval=self.settings.heartbeat_interval,
            lease_ttl=self.settings.lease_ttl,
            stop_grace=self.settings.stop_grace,
        )
        logw.line(
            f"##[ci-pool] job {job.id} attempt {job.attempt}/{job.max_attempts} on runner "
            f"{runner_id} ({job.capability})"
        )
        if withheld:
            logw.line(f"##[ci-pool] {withheld}: this job gets no capability secrets")
        for name in missing:
            logw.line(
                f"##[warning]secret {name!r} is not offered by capability {job.capability!r}; "
                "the job sees it as empty"
            )
        if claim.took_over is not None:
            logw.line(
                f"##[ci-pool] attempt {claim.took_over} was lost with its runner; taking over"
            )
        monitor.start()
        att = Attempt(job, cap, runner_id, logw, monitor, secrets)
        att.evidence = Evidence(
            job_id=job.id,
            runner_id=runner_id,
            attempt=job.attempt,
            transport=repo_transport(job.repo),
        )
        try:
            if secret_error is not None:
                outcome = error_outcome(secret_error)
            else:
                outcome = self._execute(att, claim.took_over)
        finally:
            monitor.finish()
        # The outcome first; the container and the workspace go afterwards, off the path.
        try:
            state = self.recorder.record(att, outcome)
        finally:
            if att.leftover is not None:
                cleaner().submit(att.leftover)
        self._notify(job.id)
        return state

    def _notify(self, job_id: str) -> None:
        if self.notify is None:
            return
        try:
            self.notify(job_id)
        except Exception:  # reporting never fails a job
            log.exception("job %s: could not hand its state to the status sender", job_id)

    def advance_pipeline(self, pipeline_id: str) -> None:
        """Queue the dependents whose needs just ended (or skip them)."""
        self.recorder.advance_pipeline(pipeline_id)

    def _execute(self, att: Attempt, took_over: int | None) -> Outcome:
        job, cap, logw = att.job, att.cap, att.logw
        if cap is None:
            return Outcome(
                JobState.ERROR,
                reason=f"capability {job.capability!r} is not configured on this runner",
            )
        root = self.workspace_root / f"{job.id}-{job.attempt}"
        executor: Executor | None = None
        execution: Execution | None = None
        warm = ""
        src = root / "src"
        job_scratch = self._scratch(att, f"{job.id}-{job.attempt}")
        scripts, files = _step_dirs(job_scratch or root)
        try:
            executor = self.executors(cap)
            if took_over is not None:
                removed = executor.remove_leftovers(job.id)
                if removed:
                    logw.line(f"##[ci-pool] removed {removed} container(s) of the lost attempt")
            plain = not job.services and job.container is None
            if cap.warm_containers and plain and (job.image or cap.image) == cap.image:
                # Takes the slot before the checkout, which then goes into its mounts.
                warm = executor.take_warm(root.parent, att.runner_id, root)
                att.workspace_mounted = bool(warm)
            _make_dirs(scripts, files, root)
            att.dirs = StepDirs(JobDir(scripts), JobDir(files))
            att.workspace, att.settings = src, self.settings
            if job.checkout.sync is not None:
                att.sync_data = self.store.sync_payload(job.checkout.sync.sha256)
            workspace.check_out(att, src, self.settings)
            places = JobPlaces.of(cap, root, job_scratch)
            contexts = expression_context(self.store, att, places)
            prepare_places(att, places, contexts)
            ctx = JobContext(
                job_id=job.id,
                attempt=job.attempt,
                runner_id=att.runner_id,
                capability=cap,
                workspace=src,
                scripts=scripts,
                files=files,
                env=job_env(att, contexts),
                image=job.image or cap.image,
                services=service_specs(job, contexts),
                container=job.container,
                registry_auth=registry_auth(job, contexts),
                service_auth=service_auth(job, contexts),
                warm_container=warm,
            )
            execution = executor.execution(ctx)
            att.note(mode=execution.mode)
            att.monitor.execution = execution
            execution.start()
            att.note(**execution.describe())
            if warm:
                att.note(warm_container=bool(getattr(execution, "warm", False)))
            contexts["job"]["container"]["id"] = att.evidence.container_id or ""
            contexts["job"]["services"] = execution.services_context()
            outcome = self._run_steps(att, execution, contexts)
            if job.artifacts and outcome.state is not JobState.CANCELLED:
                workspace.collect_artifacts(att, src, self.settings, self.store)
            return outcome
        except SyncRefused as exc:  # the submitter's changes: a failure, not retried
            return Outcome(JobState.FAILED, None, f"sync: {exc}")
        except CIPoolError as exc:
            return error_outcome(exc)
        except Exception as exc:
            log.exception("job %s: unexpected failure", job.id)
            return Outcome(JobState.ERROR, reason=f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if att.dirs is not None:
                att.dirs.close()
            scratch.remove(job_scratch)  # before the next job: its bytes count against it
            if warm and execution is None and executor is not None:
                execution = executor.execution(
                    JobContext(job.id, job.attempt, att.runner_id, cap, src, scripts, files,
                               warm_container=warm)
                )  # fmt: skip
            att.leftover = Leftover(job.id, executor, execution, root, job.image or cap.image)

    def _scratch(self, att: Attempt, name: str) -> Path | None:
        """The job's scratch directory (``worker.scratch``): host jobs without actions."""
        cap, job = att.cap, att.job
        if not self.settings.job_scratch or cap is None or cap.mode != "host":
            return None
        if any(step.uses for step in job.steps):
            return None  # actions are copied into the scripts directory: unbounded
        mounted = scratch.runner_scratch(self.workspace_root, self.settings.job_scratch_bytes)
        return None if mounted is None else scratch.job_dirs(mounted, name)

    def _run_steps(self, att: Attempt, execution: Execution, ctx: dict[str, Any]) -> Outcome:
        """Run the steps in the job's expression context; store its outputs; the outcome.
        Nothing the steps started in the background outlives them."""
        try:
            failed = steps.run_steps(att, execution, ctx, self.store)
        finally:
            execution.steps_over()
        att.note(command="\n".join(att.commands))
        self.recorder.record_outputs(att, ctx, "failure" if failed else "success")
        return steps_outcome(att, failed)


def _step_dirs(where: Path) -> tuple[Path, Path]:
    """The scripts and step files directories, in the attempt's directory or its scratch."""
    return where / "scripts", where / "files"


def _make_dirs(*dirs: Path) -> None:
    for made in dirs:  # those in the scratch exist already
        made.mkdir(parents=True, exist_ok=True)
