"""JobRunner: claim a job, check it out, run its steps, record the outcome. Celery-free."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from ci_pool import defaults
from ci_pool.capabilities import Capability
from ci_pool.exceptions import CIPoolError, ExecutorError, InfraError
from ci_pool.jobs import JobState
from ci_pool.runner.checkout import checkout
from ci_pool.runner.executors.base import Execution, Executor, JobContext
from ci_pool.runner.logs import LogWriter
from ci_pool.settings import Settings
from ci_pool.store import Job, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    state: JobState
    exit_code: int | None = None
    reason: str | None = None


class _Monitor(threading.Thread):
    """Heartbeats the lease, flushes the log, and stops the job on cancel or timeout."""

    def __init__(self, runner: JobRunner, job: Job, logw: LogWriter, deadline: float):
        super().__init__(name=f"monitor-{job.id}", daemon=True)
        self.runner = runner
        self.job = job
        self.logw = logw
        self.deadline = deadline
        self.execution: Execution | None = None
        self.stop_reason: JobState | None = None
        self._done = threading.Event()

    def run(self) -> None:
        interval = min(self.runner.settings.heartbeat_interval, 1.0)
        last_beat = time.monotonic()
        while not self._done.wait(interval):
            self._safe(self.logw.flush)
            now = time.monotonic()
            if now >= self.deadline:
                self._halt(JobState.TIMED_OUT, "job timeout reached")
            if now - last_beat >= self.runner.settings.heartbeat_interval:
                last_beat = now
                self._beat()

    def _beat(self) -> None:
        try:
            cancel = self.runner.store.heartbeat(
                self.job.id, self.job.attempt, self.runner.settings.lease_ttl
            )
        except Exception:  # a store hiccup: keep running, the lease has slack
            log.exception("heartbeat of job %s failed", self.job.id)
            return
        if cancel is None:
            self._halt(JobState.CANCELLED, "job is no longer ours (cancelled or taken over)")
        elif cancel:
            self._halt(JobState.CANCELLED, "cancel requested")

    def _halt(self, why: JobState, message: str) -> None:
        if self.stop_reason is not None:
            return
        self.stop_reason = why
        self.logw.line(
            f"##[ci-pool] {message}: stopping (grace {self.runner.settings.stop_grace:g}s)"
        )
        if self.execution is not None:
            self._safe(lambda: self.execution.stop(self.runner.settings.stop_grace))  # type: ignore[union-attr]

    @staticmethod
    def _safe(fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:
            log.exception("job monitor action failed")

    def finish(self) -> None:
        self._done.set()
        self.join(timeout=5)


class JobRunner:
    """Runs claimed jobs for one worker process."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        redis_client: redis.Redis | None,
        executors: Callable[[Capability], Executor],
        requeue: Callable[[Capability, str, float], None],
    ):
        self.settings = settings
        self.store = store
        self.redis = redis_client
        self.executors = executors
        self.requeue = requeue

    def run(self, job_id: str, runner_id: str) -> JobState | None:
        """Claim and run one job; returns its final state, or None if there was nothing
        to claim (a duplicate delivery, a cancelled job, a live lease elsewhere)."""
        claim = self.store.claim(job_id, runner_id, self.settings.lease_ttl)
        if claim is None:
            log.info("job %s: nothing to claim (already taken or finished)", job_id)
            return None
        job = claim.job
        cap = self.settings.capabilities.get(job.capability)
        logw = LogWriter(self.redis, self.store, job.id, job.attempt)
        logw.line(
            f"##[ci-pool] job {job.id} attempt {job.attempt}/{job.max_attempts} on runner "
            f"{runner_id} ({job.capability})"
        )
        if claim.took_over is not None:
            logw.line(
                f"##[ci-pool] attempt {claim.took_over} was lost with its runner; taking over"
            )
        monitor = _Monitor(self, job, logw, time.monotonic() + job.timeout_s)
        monitor.start()
        evidence: dict[str, Any] = {
            "job_id": job.id,
            "runner_id": runner_id,
            "attempt": job.attempt,
            "transport": job.repo.split("://", 1)[0] if "://" in job.repo else "ssh",
        }
        try:
            outcome = self._execute(job, cap, runner_id, claim.took_over, logw, monitor, evidence)
        finally:
            monitor.finish()
        if outcome.state is JobState.ERROR:
            logw.line(f"##[ci-pool] error: {outcome.reason}")
        logw.line(
            f"##[ci-pool] {outcome.state.value}"
            + (f" (exit code {outcome.exit_code})" if outcome.exit_code is not None else "")
        )
        logw.close()
        evidence["exit_code"] = outcome.exit_code
        evidence["stdout_sample"] = logw.tail()[-defaults.STDOUT_SAMPLE :]
        done = self.store.finish(
            job.id,
            job.attempt,
            outcome.state,
            runner_id=runner_id,
            exit_code=outcome.exit_code,
            reason=outcome.reason,
            evidence=evidence,
            retry=True,
        )
        if done is None:
            log.warning("job %s attempt %s: lost the fence at finish", job.id, job.attempt)
            return None
        if done.state == JobState.QUEUED.value and cap is not None:
            backoff = min(
                self.settings.retry_backoff * 2 ** (job.attempt - 1), defaults.RETRY_BACKOFF_MAX
            )
            self.requeue(cap, job.id, backoff)
        return JobState(done.state)

    def _execute(
        self,
        job: Job,
        cap: Capability | None,
        runner_id: str,
        took_over: int | None,
        logw: LogWriter,
        monitor: _Monitor,
        evidence: dict[str, Any],
    ) -> Outcome:
        if cap is None:
            return Outcome(
                JobState.ERROR,
                reason=f"capability {job.capability!r} is not configured on this runner",
            )
        root = self.settings.resolved_workspace_root / f"{job.id}-{job.attempt}"
        execution: Execution | None = None
        try:
            executor = self.executors(cap)
            if took_over is not None:
                removed = executor.remove_leftovers(job.id)
                if removed:
                    logw.line(f"##[ci-pool] removed {removed} container(s) of the lost attempt")
            workspace, scripts = root / "src", root / "scripts"
            scripts.mkdir(parents=True, exist_ok=True)
            logw.line(f"##[ci-pool] checkout {job.repo} {job.commit_sha or job.ref}")
            t0 = time.monotonic()
            sha = checkout(
                job.repo,
                job.commit_sha or job.ref,
                workspace,
                rewrites=self.settings.git_url_rewrites,
                log=lambda line: logw.line(f"##[ci-pool] {line}"),
            )
            evidence.update(commit_sha=sha, checkout_s=round(time.monotonic() - t0, 3))
            ctx = JobContext(
                job_id=job.id,
                attempt=job.attempt,
                runner_id=runner_id,
                capability=cap,
                workspace=workspace,
                scripts=scripts,
                env=self._job_env(job, runner_id, sha),
            )
            execution = executor.execution(ctx)
            evidence["mode"] = execution.mode
            monitor.execution = execution
            execution.start()
            evidence.update(execution.describe())
            return self._run_steps(job, execution, scripts, logw, monitor, evidence)
        except InfraError as exc:
            return Outcome(JobState.ERROR, reason=f"{exc.reason}: {exc}")
        except CIPoolError as exc:
            return Outcome(JobState.ERROR, reason=f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            log.exception("job %s: unexpected failure", job.id)
            return Outcome(JobState.ERROR, reason=f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self._cleanup(execution, root, logw)

    def _run_steps(
        self,
        job: Job,
        execution: Execution,
        scripts: Path,
        logw: LogWriter,
        monitor: _Monitor,
        evidence: dict[str, Any],
    ) -> Outcome:
        code = 0
        commands = []
        for index, step in enumerate(job.steps, start=1):
            if monitor.stop_reason is not None:
                break
            name = f"step-{index}.sh"
            (scripts / name).write_text(step["run"] + "\n")
            commands.append(step["run"])
            logw.line(f"##[step] {index} {step.get('name') or 'run'}")
            started = time.monotonic()
            code = execution.run_step(name, logw.write)
            logw.line(f"##[step] {index} exit {code} in {time.monotonic() - started:.2f}s")
            if code != 0:
                break
        evidence["command"] = "\n".join(commands)
        if monitor.stop_reason is JobState.TIMED_OUT:
            return Outcome(JobState.TIMED_OUT, code, f"timed out after {job.timeout_s}s")
        if monitor.stop_reason is JobState.CANCELLED:
            return Outcome(JobState.CANCELLED, code, "cancelled")
        if code == 0:
            return Outcome(JobState.SUCCEEDED, 0)
        return Outcome(JobState.FAILED, code, f"step exited with code {code}")

    def _job_env(self, job: Job, runner_id: str, sha: str) -> dict[str, str]:
        return {
            **{str(k): str(v) for k, v in job.env.items()},
            "CI": "true",
            "CI_POOL_JOB_ID": job.id,
            "CI_POOL_ATTEMPT": str(job.attempt),
            "CI_POOL_RUNNER_ID": runner_id,
            "CI_POOL_CAPABILITY": job.capability,
            "CI_POOL_REPO": job.repo,
            "CI_POOL_REF": job.ref,
            "CI_POOL_COMMIT_SHA": sha,
        }

    def _cleanup(self, execution: Execution | None, root: Path, logw: LogWriter) -> None:
        if execution is not None:
            try:
                execution.close()
            except ExecutorError as exc:
                logw.line(f"##[ci-pool] cleanup: {exc}")
        shutil.rmtree(root, ignore_errors=True)
        if root.exists():
            logw.line(f"##[ci-pool] cleanup: could not remove workspace {root}")
