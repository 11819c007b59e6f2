"""Acting on the pool: cancel, retry, drain, undrain, scale."""

from __future__ import annotations

from ci_pool.broker.runners import RunnerInfo, drain_key
from ci_pool.core.capabilities import route
from ci_pool.core.specs import (
    FINAL_STATES,
    JobState,
)
from ci_pool.core.workflow import expressions
from ci_pool.exceptions import (
    InputError,
    NotFound,
)
from ci_pool.service.submission import Submission
from ci_pool.store import Job
from ci_pool.store.models import Pipeline as PipelineRow


class Operations(Submission):
    """Cancel, retry and steer runners."""

    def cancel_pipeline(self, pipeline_id: str, by: str | None = None) -> PipelineRow:
        """Cancel the pipeline's running, queued and waiting jobs. As on GitHub, a waiting
        job whose ``if:`` has a status function is decided once its needs end, in the
        cancelled status: ``always()`` and ``cancelled()`` jobs run (cleanup on cancel),
        ``!cancelled()`` and ``failure()`` ones are skipped."""
        for job in self.store.pipeline_jobs(pipeline_id):
            state = JobState(job.state)
            if state in FINAL_STATES or (state is JobState.BLOCKED and _decides(job.if_expr)):
                continue
            self.store.request_cancel(job.id, by or "pipeline cancel")
        self.scheduler().advance(pipeline_id)
        return self.store.get_pipeline(pipeline_id)

    def retry_pipeline(self, pipeline_id: str) -> list[Job]:
        """Re-run the jobs that did not succeed (and those skipped because of them);
        jobs that passed keep their results."""
        again = self.store.reset_for_retry(pipeline_id, self.settings.max_attempts)
        if again:
            self.store.reopen_pipeline(pipeline_id)
            self.scheduler().advance(pipeline_id)
        return again

    def retry_job(self, job_id: str) -> Job:
        """Re-run a job that did not succeed: its pipeline's retry for a pipeline job, else
        the job itself, queued again as a new attempt (earlier attempts keep their logs)."""
        job = self.get(job_id)
        if job.pipeline_id:
            self.retry_pipeline(job.pipeline_id)
        elif self.store.reset_for_retry(None, self.settings.max_attempts, job_id=job.id):
            self.publish(job.capability, job.id)
        else:
            raise InputError(
                f"job {job.id} is {job.state}; only failed, timed-out, cancelled or errored "
                "jobs can be retried",
                field="job_id",
            )
        return self.get(job_id)

    def _runner(self, runner_id: str) -> RunnerInfo:
        for r in self.runners():
            if r.runner_id == runner_id:
                return r
        raise NotFound(f"no live runner {runner_id!r}; see ci-pool runners")

    def drain(self, runner_id: str) -> str:
        """The runner stops taking jobs, finishes the running one, then exits."""
        runner = self._runner(runner_id)
        self.redis.set(drain_key(runner_id), "1", ex=86400)
        for queue in runner.queues:
            self.celery.control.cancel_consumer(queue, destination=[runner.node])
        return f"{runner_id}: draining; it exits when its running job ends"

    def undrain(self, runner_id: str) -> str:
        runner = self._runner(runner_id)
        self.redis.delete(drain_key(runner_id))
        for queue in runner.queues:
            self.celery.control.add_consumer(queue, destination=[runner.node])
        return f"{runner_id}: taking jobs again"

    def scale(self, capability: str, slots: int) -> list[str]:
        """Spread ``slots`` concurrent jobs over the capability's live workers with Celery's
        pool_grow / pool_shrink; one line per worker saying what changed."""
        cap = route(self.settings.capabilities, capability)
        workers = sorted(self.runners(cap.name), key=lambda r: r.runner_id)
        if not workers:
            raise NotFound(
                f"no worker serves {cap.name!r}; start one with "
                f"ci-pool worker --capability {cap.name}"
            )
        share, extra = divmod(slots, len(workers))
        lines = []
        for i, r in enumerate(workers):
            want = share + (1 if i < extra else 0)
            delta = want - r.concurrency
            if delta > 0:
                reply = self.celery.control.pool_grow(
                    delta, destination=[r.node], reply=True, timeout=5
                )
            elif delta < 0:
                reply = self.celery.control.pool_shrink(
                    -delta, destination=[r.node], reply=True, timeout=5
                )
            else:
                reply = [{r.node: {"ok": "unchanged"}}]
            ok = any(r.node in rep and "ok" in rep[r.node] for rep in reply or [])
            lines.append(
                f"{r.runner_id}: {r.concurrency} -> {want} "
                + ("ok" if ok else f"no answer ({reply})")
            )
        return lines

    def cancel(self, job_id: str, by: str | None = None) -> Job:
        """Cancel a job; a pipeline job that ended at once lets its pipeline move on (its
        dependents skipped, a concurrency group it held released)."""
        job = self.store.request_cancel(job_id, by)
        if job.pipeline_id and JobState(job.state) in FINAL_STATES:
            self.scheduler().advance(job.pipeline_id)
            job = self.get(job_id)
        return job


def _decides(if_expr: str | None) -> bool:
    """Whether a job's ``if:`` says itself what happens when its needs did not succeed."""
    if not if_expr:
        return False
    try:
        return expressions.uses_status_function(expressions.parse(if_expr))
    except expressions.ExpressionError:
        return False
