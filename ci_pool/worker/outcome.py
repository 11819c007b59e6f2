"""An attempt's outcome: deciding it from the steps and the monitor, and recording it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ci_pool import defaults
from ci_pool.core import scheduler
from ci_pool.core.capabilities import Capability
from ci_pool.core.retry import Next
from ci_pool.core.specs import JobState
from ci_pool.core.workflow import expressions
from ci_pool.exceptions import CIPoolError, InfraError
from ci_pool.settings import Settings
from ci_pool.worker.attempt import Attempt
from ci_pool.worker.runner_store import RunnerStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    state: JobState
    exit_code: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class StepFailure:
    """The first step that failed the job: its number, exit code and whether it timed out."""

    index: int
    exit_code: int
    timed_out: bool


def error_outcome(exc: CIPoolError) -> Outcome:
    """An attempt that could not run its steps to the end: an error, with the reason."""
    if isinstance(exc, InfraError):
        return Outcome(JobState.ERROR, reason=f"{exc.reason}: {exc}")
    return Outcome(JobState.ERROR, reason=f"{type(exc).__name__}: {exc}")


def steps_outcome(att: Attempt, failed: StepFailure | None) -> Outcome:
    """The outcome of an attempt whose steps ran: a stop by the monitor wins over the steps."""
    job, monitor = att.job, att.monitor
    if monitor.stop_reason is JobState.TIMED_OUT:
        return Outcome(JobState.TIMED_OUT, None, f"timed out after {job.timeout_s}s")
    if monitor.stop_reason is JobState.CANCELLED:
        return Outcome(JobState.CANCELLED, None, "cancelled")
    if failed is None:
        return Outcome(JobState.SUCCEEDED, 0)
    if failed.timed_out:
        return Outcome(JobState.TIMED_OUT, failed.exit_code, f"step {failed.index} timed out")
    return Outcome(
        JobState.FAILED,
        failed.exit_code,
        f"step {failed.index} exited with code {failed.exit_code}",
    )


class OutcomeRecorder:
    """Writes an attempt's outputs and outcome to the store and queues what follows."""

    def __init__(
        self,
        settings: Settings,
        store: RunnerStore,
        requeue: Callable[[Capability, str, float], None],
    ):
        self.settings = settings
        self.store = store
        self.requeue = requeue

    def record(self, att: Attempt, outcome: Outcome) -> JobState | None:
        """Close the attempt under its fence; requeue a retry or advance its pipeline."""
        job, logw = att.job, att.logw
        if outcome.state is JobState.ERROR:
            logw.line(f"##[ci-pool] error: {outcome.reason}")
        code = f" (exit code {outcome.exit_code})" if outcome.exit_code is not None else ""
        logw.line(f"##[ci-pool] {outcome.state.value}{code}")
        # The last chunk goes in the outcome's own transaction: one store call, not two.
        last_chunk = logw.close_with_chunk()
        att.note(exit_code=outcome.exit_code, stdout_sample=logw.tail()[-defaults.STDOUT_SAMPLE :])
        try:
            closed = self.store.close_attempt(
                job.id,
                job.attempt,
                outcome.state,
                runner_id=att.runner_id,
                reason=outcome.reason,
                values={"exit_code": outcome.exit_code, "evidence": att.evidence},
                backoff=self.settings.retry_backoff,
                log=last_chunk,
            )
        except Exception:
            if last_chunk is not None:  # the log stays whole when the outcome could not go
                with contextlib.suppress(Exception):
                    logw.store_chunk(last_chunk)
            raise
        if closed is None:
            log.warning("job %s attempt %s: lost the fence at finish", job.id, job.attempt)
            return None
        done, decision = closed
        if self.store.settles_outcomes:  # the API queued what follows, server-side
            return JobState(done.state)
        if decision.next is Next.REQUEUE and att.cap is not None:
            self.requeue(att.cap, job.id, decision.delay)
        elif job.pipeline_id:
            self.advance_pipeline(job.pipeline_id)
        return JobState(done.state)

    def record_outputs(self, att: Attempt, ctx: dict[str, Any], status: str) -> None:
        """Render the job's declared outputs, masked, and store them with the attempt."""
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

    def advance_pipeline(self, pipeline_id: str) -> None:
        """Queue the dependents whose needs just ended (or skip them)."""

        def publish(capability: str, job_id: str) -> None:
            self.requeue(self.settings.capabilities[capability], job_id, 0)

        try:
            scheduler.PipelineScheduler(
                self.store, publish, self.settings.max_jobs_per_pipeline
            ).advance(pipeline_id)
        except Exception:  # the job's own outcome is recorded; the reaper can advance later
            log.exception("advancing pipeline %s failed", pipeline_id)
