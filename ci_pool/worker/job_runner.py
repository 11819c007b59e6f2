"""JobRunner: claim a job, check it out, run its steps, record the outcome. Celery-free."""

from __future__ import annotations

import logging
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from ci_pool import defaults
from ci_pool.core import scheduler
from ci_pool.core.capabilities import Capability
from ci_pool.core.masking import Masker
from ci_pool.core.policy import resolve_secrets
from ci_pool.core.retry import Next
from ci_pool.core.specs import ArtifactEntry, Evidence, JobState, StepSpec, github_repository
from ci_pool.core.workflow import expressions
from ci_pool.exceptions import (
    CheckoutError,
    CIPoolError,
    ExecutorError,
    InfraError,
    InputError,
    JobFileRefused,
)
from ci_pool.git import CheckoutRequest, checkout, resolve_ref
from ci_pool.settings import Settings
from ci_pool.store import Job, Store
from ci_pool.worker import artifacts
from ci_pool.worker.executors.base import Execution, Executor, JobContext
from ci_pool.worker.jobfiles import JobDir
from ci_pool.worker.logs import LogWriter
from ci_pool.worker.monitor import JobMonitor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    state: JobState
    exit_code: int | None = None
    reason: str | None = None


@dataclass
class _StepDirs:
    """The job's step scripts (read-only to the job) and the files its steps write back,
    both held open so a replaced path changes nothing."""

    scripts: JobDir
    files: JobDir

    def close(self) -> None:
        self.scripts.close()
        self.files.close()


@dataclass
class _Attempt:
    """Everything one attempt of a job accumulates on its way."""

    job: Job
    cap: Capability | None
    runner_id: str
    logw: LogWriter
    monitor: JobMonitor
    secrets: dict[str, str]
    evidence: Evidence = field(default_factory=Evidence)
    dirs: _StepDirs | None = None
    commands: list[str] = field(default_factory=list)

    def note(self, **values: Any) -> None:
        """Add facts to the attempt's evidence record."""
        self.evidence = self.evidence.model_copy(update=values)


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
        secrets, secret_error = {}, None
        try:
            secrets = resolve_secrets(cap, job.secrets) if cap else {}
        except CIPoolError as exc:
            secret_error = exc
        logw = LogWriter(
            self.redis,
            self.store,
            job.id,
            job.attempt,
            masker=Masker(secrets.values()),
            max_bytes=self.settings.log_max_bytes,
        )
        logw.line(
            f"##[ci-pool] job {job.id} attempt {job.attempt}/{job.max_attempts} on runner "
            f"{runner_id} ({job.capability})"
        )
        if claim.took_over is not None:
            logw.line(
                f"##[ci-pool] attempt {claim.took_over} was lost with its runner; taking over"
            )
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
        monitor.start()
        att = _Attempt(job, cap, runner_id, logw, monitor, secrets)
        att.evidence = Evidence(
            job_id=job.id,
            runner_id=runner_id,
            attempt=job.attempt,
            transport=job.repo.split("://", 1)[0] if "://" in job.repo else "ssh",
        )
        try:
            if secret_error is not None:
                outcome = self._error(secret_error)
            else:
                outcome = self._execute(att, claim.took_over)
        finally:
            monitor.finish()
        return self._record(att, outcome)

    def _record(self, att: _Attempt, outcome: Outcome) -> JobState | None:
        job, logw = att.job, att.logw
        if outcome.state is JobState.ERROR:
            logw.line(f"##[ci-pool] error: {outcome.reason}")
        code = f" (exit code {outcome.exit_code})" if outcome.exit_code is not None else ""
        logw.line(f"##[ci-pool] {outcome.state.value}{code}")
        logw.close()
        att.note(exit_code=outcome.exit_code, stdout_sample=logw.tail()[-defaults.STDOUT_SAMPLE :])
        closed = self.store.close_attempt(
            job.id,
            job.attempt,
            outcome.state,
            runner_id=att.runner_id,
            reason=outcome.reason,
            values={"exit_code": outcome.exit_code, "evidence": att.evidence},
            backoff=self.settings.retry_backoff,
        )
        if closed is None:
            log.warning("job %s attempt %s: lost the fence at finish", job.id, job.attempt)
            return None
        done, decision = closed
        if decision.next is Next.REQUEUE and att.cap is not None:
            self.requeue(att.cap, job.id, decision.delay)
        elif job.pipeline_id:
            self.advance_pipeline(job.pipeline_id)
        return JobState(done.state)

    def advance_pipeline(self, pipeline_id: str) -> None:
        """Queue the dependents whose needs just ended (or skip them)."""

        def publish(capability: str, job_id: str) -> None:
            self.requeue(self.settings.capabilities[capability], job_id, 0)

        try:
            scheduler.PipelineScheduler(self.store, publish).advance(pipeline_id)
        except Exception:  # the job's own outcome is recorded; the reaper can advance later
            log.exception("advancing pipeline %s failed", pipeline_id)

    @staticmethod
    def _error(exc: CIPoolError) -> Outcome:
        if isinstance(exc, InfraError):
            return Outcome(JobState.ERROR, reason=f"{exc.reason}: {exc}")
        return Outcome(JobState.ERROR, reason=f"{type(exc).__name__}: {exc}")

    def _execute(self, att: _Attempt, took_over: int | None) -> Outcome:
        job, cap, logw = att.job, att.cap, att.logw
        if cap is None:
            return Outcome(
                JobState.ERROR,
                reason=f"capability {job.capability!r} is not configured on this runner",
            )
        root = self.settings.resolved_workspace_root / f"{job.id}-{job.attempt}"
        executor: Executor | None = None
        execution: Execution | None = None
        try:
            executor = self.executors(cap)
            if took_over is not None:
                removed = executor.remove_leftovers(job.id)
                if removed:
                    logw.line(f"##[ci-pool] removed {removed} container(s) of the lost attempt")
            workspace, scripts, files = root / "src", root / "scripts", root / "files"
            scripts.mkdir(parents=True, exist_ok=True)
            files.mkdir(exist_ok=True)
            att.dirs = _StepDirs(JobDir(scripts), JobDir(files))
            self._checkout(att, workspace)
            ctx = JobContext(
                job_id=job.id,
                attempt=job.attempt,
                runner_id=att.runner_id,
                capability=cap,
                workspace=workspace,
                scripts=scripts,
                files=files,
                env=self._job_env(att),
                image=job.image or cap.image,
            )
            execution = executor.execution(ctx)
            att.note(mode=execution.mode)
            att.monitor.execution = execution
            execution.start()
            att.note(**execution.describe())
            outcome = self._run_steps(att, execution)
            if job.artifacts and outcome.state is not JobState.CANCELLED:
                self._collect(att, workspace)
            return outcome
        except CIPoolError as exc:
            return self._error(exc)
        except Exception as exc:
            log.exception("job %s: unexpected failure", job.id)
            return Outcome(JobState.ERROR, reason=f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if att.dirs is not None:
                att.dirs.close()
            self._cleanup(executor, execution, root, logw, job.image or cap.image)

    def _checkout(self, att: _Attempt, workspace: Path) -> None:
        job, options = att.job, att.job.checkout
        t0 = time.monotonic()
        commit = job.commit_sha or job.ref
        if options.ref is not None:
            # The checkout's own ref replaces the job's commit; submit pins it to a commit
            # where refs are resolved, else it is resolved here as the job's ref would be.
            try:
                commit = resolve_ref(job.repo, options.ref, self.settings)
            except InputError as exc:
                raise CheckoutError(f"checkout ref {options.ref!r}: {exc}") from None
        att.logw.line(f"##[ci-pool] checkout {job.repo} {commit}")
        result = checkout(
            CheckoutRequest(
                repo=job.repo,
                commit=commit,
                dest=workspace,
                fetch_depth=options.fetch_depth,
                submodules=options.submodules,
                lfs=options.lfs,
            ),
            self.settings,
            log=lambda line: att.logw.line(f"##[ci-pool] {line}"),
        )
        att.note(
            commit_sha=result.sha,
            checkout_s=round(time.monotonic() - t0, 3),
            checkout_via=result.via,
        )

    def _context(self, att: _Attempt) -> dict[str, Any]:
        """The expression context of this job: github, env, matrix, needs (steps grows)."""
        job = att.job
        ref = job.ref if job.ref.startswith("refs/") else f"refs/heads/{job.ref}"
        ctx: dict[str, Any] = {
            "github": {
                "ref": ref,
                "sha": att.evidence.commit_sha or job.commit_sha or "",
                "repository": github_repository(job.repo),
                "event_name": "push",
                "job": job.job_ref or job.id,
                "run_id": job.pipeline_id or job.id,
            },
            "env": {str(k): str(v) for k, v in job.env.items()},
            "matrix": dict(job.matrix or {}),
            "needs": {},
            "steps": {},
        }
        if job.pipeline_id:
            pipeline = self.store.get_pipeline(job.pipeline_id)
            ctx["github"]["event_name"] = pipeline.event
            rows = [scheduler.view(r) for r in self.store.pipeline_jobs(job.pipeline_id)]
            keys = set(job.needs or ())
            refs = {r.job_ref for r in rows if r.key in keys}
            ctx["needs"] = scheduler.needs_context(rows, refs)
        return ctx

    def _should_run_step(self, step: StepSpec, ctx: dict[str, Any], status: str) -> bool:
        cond = step.if_expr
        if not cond:
            return status == "success"
        expr = expressions.parse(cond)
        ok = expressions.condition(expr, ctx, status)
        return ok if expressions.uses_status_function(expr) else ok and status == "success"

    def _run_steps(self, att: _Attempt, execution: Execution) -> Outcome:
        job, logw, monitor = att.job, att.logw, att.monitor
        failed: tuple[int, int] | None = None  # (step, exit code) of the first hard failure
        step_timed_out = False
        ctx = self._context(att)
        for index, step in enumerate(job.steps, start=1):
            if monitor.stop_reason is not None:
                break
            status = "failure" if failed else "success"
            if not self._should_run_step(step, ctx, status):
                logw.line(f"##[step] {index} {step.name or 'run'} skipped")
                continue
            code, timed_out = self._run_step(att, execution, index, step, ctx, status)
            if code == 0 and not timed_out:
                continue
            if step.continue_on_error:
                logw.line(f"##[ci-pool] continue-on-error: step {index} did not pass; going on")
                continue
            if failed is None:
                failed, step_timed_out = (index, code), timed_out
        att.note(command="\n".join(att.commands))
        self._record_outputs(att, ctx, "failure" if failed else "success")
        return self._outcome(att, failed, step_timed_out)

    def _run_step(
        self,
        att: _Attempt,
        execution: Execution,
        index: int,
        step: StepSpec,
        ctx: dict[str, Any],
        status: str,
    ) -> tuple[int, bool]:
        """Write, run and read back one step; its exit code and whether it timed out.
        A file the step left that the runner refuses to read fails the step."""
        logw, monitor, dirs = att.logw, att.monitor, att.dirs
        assert dirs is not None
        logw.line(f"##[step] {index} {step.name or 'run'}")
        try:
            name, env, run = self._write_step(index, step, ctx, status, dirs, execution)
        except JobFileRefused as exc:
            logw.line(f"##[ci-pool] step {index} not run: {exc}")
            return 1, False
        att.commands.append(run)
        started = time.monotonic()
        timeout = step.timeout
        token = monitor.begin_step(timeout)
        # bash (the default) falls back to sh in images without bash.
        shell = None if step.shell == "bash" else step.shell
        code = execution.run_step(name, logw.write, env=env, shell=shell)
        timed_out = monitor.end_step(token)
        took = time.monotonic() - started
        outputs: dict[str, str] = {}
        refused: JobFileRefused | None = None
        try:
            outputs = parse_outputs(
                dirs.files.read(f"output-{index}", defaults.STEP_OUTPUT_MAX_BYTES)
            )
        except JobFileRefused as exc:
            refused = exc
        if step.id:
            ok = code == 0 and refused is None
            ctx["steps"][step.id] = {
                "outputs": outputs,
                "outcome": "success" if ok else "failure",
            }
        if timed_out:
            logw.line(f"##[step] {index} timed out after {timeout}s")
        else:
            logw.line(f"##[step] {index} exit {code} in {took:.2f}s")
        if refused is not None:
            logw.line(f"##[ci-pool] step {index} failed: $GITHUB_OUTPUT {refused}")
            code = code or 1
        return code, timed_out

    @staticmethod
    def _write_step(
        index: int,
        step: StepSpec,
        ctx: dict[str, Any],
        status: str,
        dirs: _StepDirs,
        execution: Execution,
    ) -> tuple[str, dict[str, str], str]:
        """Render the step's templates into its script; returns (script, env, text)."""
        run = expressions.render(step.run, ctx, status)
        env = {k: expressions.render(v, ctx, status) for k, v in step.env.items()}
        workdir = step.working_directory
        if workdir:
            run = f"cd -- {shlex.quote(expressions.render(workdir, ctx, status))}\n{run}"
        name = f"step-{index}.sh"
        dirs.scripts.create(name, (run + "\n").encode())
        dirs.files.replace(f"output-{index}")
        env["GITHUB_OUTPUT"] = f"{execution.files_path}/output-{index}"
        return name, env, run

    @staticmethod
    def _outcome(att: _Attempt, failed: tuple[int, int] | None, step_timed_out: bool) -> Outcome:
        job, monitor = att.job, att.monitor
        if monitor.stop_reason is JobState.TIMED_OUT:
            return Outcome(JobState.TIMED_OUT, None, f"timed out after {job.timeout_s}s")
        if monitor.stop_reason is JobState.CANCELLED:
            return Outcome(JobState.CANCELLED, None, "cancelled")
        if failed is None:
            return Outcome(JobState.SUCCEEDED, 0)
        if step_timed_out:
            return Outcome(JobState.TIMED_OUT, failed[1], f"step {failed[0]} timed out")
        return Outcome(JobState.FAILED, failed[1], f"step {failed[0]} exited with code {failed[1]}")

    def _record_outputs(self, att: _Attempt, ctx: dict[str, Any], status: str) -> None:
        spec = att.job.outputs_spec or {}
        if not spec:
            return
        values = {}
        for name, template in spec.items():
            try:
                values[name] = att.logw.masker.mask(expressions.render(str(template), ctx, status))
            except (expressions.ExpressionError, ValueError, TypeError) as exc:
                att.logw.line(f"##[ci-pool] output {name}: {exc}")
        self.store.set_outputs(att.job.id, att.job.attempt, values)

    def _collect(self, att: _Attempt, workspace: Path) -> None:
        job = att.job
        dest = self.settings.resolved_artifact_root / job.id / str(job.attempt)
        found = artifacts.collect(
            workspace, list(job.artifacts), dest, self.settings.artifact_max_bytes
        )
        for problem in found.problems:
            att.logw.line(f"##[ci-pool] artifacts: {problem}")
        for f in found.files:
            att.logw.line(f"##[ci-pool] artifact {f.path} ({f.size} bytes, sha256 {f.sha256})")
        self.store.add_artifacts(job.id, job.attempt, found.files)
        att.note(
            artifacts=tuple(
                ArtifactEntry(path=f.path, size=f.size, sha256=f.sha256) for f in found.files
            )
        )

    def _job_env(self, att: _Attempt) -> dict[str, str]:
        job = att.job
        return {
            **{str(k): str(v) for k, v in job.env.items()},
            **att.secrets,
            "CI": "true",
            "CI_POOL_JOB_ID": job.id,
            "CI_POOL_ATTEMPT": str(job.attempt),
            "CI_POOL_RUNNER_ID": att.runner_id,
            "CI_POOL_CAPABILITY": job.capability,
            "CI_POOL_REPO": job.repo,
            "CI_POOL_REF": job.ref,
            "CI_POOL_COMMIT_SHA": att.evidence.commit_sha or "",
        }

    def _cleanup(
        self,
        executor: Executor | None,
        execution: Execution | None,
        root: Path,
        logw: LogWriter,
        image: str,
    ) -> None:
        if execution is not None:
            try:
                execution.close()
            except ExecutorError as exc:
                logw.line(f"##[ci-pool] cleanup: {exc}")
        shutil.rmtree(root, ignore_errors=True)
        if root.exists() and executor is not None:
            # Files the build made as another user (root in the container): remove them
            # the way they were made.
            try:
                executor.remove_tree(root, image)
            except ExecutorError as exc:
                logw.line(f"##[ci-pool] cleanup: {exc}")
        if root.exists():
            logw.line(f"##[ci-pool] cleanup: could not remove workspace {root}")


def parse_outputs(data: bytes) -> dict[str, str]:
    """``name=value`` lines and ``name<<DELIM`` ... ``DELIM`` blocks, as GitHub writes them."""
    values: dict[str, str] = {}
    lines = data.decode(errors="replace").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            block = []
            i += 1
            while i < len(lines) and lines[i] != delim:
                block.append(lines[i])
                i += 1
            values[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
        i += 1
    return values
