"""What a token may see and touch: every job an action reads or changes is checked.

A token limited to some capabilities or repositories sees nothing of the others: a job
outside its limits is answered like one that does not exist (404 "no job with id"), lists
and cursors skip such jobs, ``waiting`` reasons leave them out, ``/v1/queues`` shows only
its capabilities. An action that would change jobs outside the limits (a pipeline's retry
through one of its jobs, a pipeline's cancel) is refused whole with a 403 naming the first
such job by id alone. Scopes are least privilege: only ``read`` (or ``admin``) reads a job
back; ``cancel`` and ``retry`` answer a token without it with the id and state alone."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ci_pool.core.policy import repo_allowed
from ci_pool.core.specs import FINAL_STATES, JobState
from ci_pool.exceptions import AccessDenied, NotFound
from ci_pool.service.job_views import JobView
from ci_pool.service.pool import Pool
from ci_pool.store import Job
from ci_pool.store.models import Pipeline
from ci_pool.store.tokens import ApiToken
from ci_pool.store.transitions import RETRYABLE_STATES

Visible = Callable[[Job], bool]
#: How a pipeline job's reason begins when policy denied another job of its pipeline.
_SIBLING_DENIED = "pipeline rejected: job "


def limited(token: ApiToken) -> bool:
    return token.capabilities is not None or token.repos is not None


def may_touch(token: ApiToken, job: Job) -> bool:
    """Whether ``job`` is within the token's capability and repository limits."""
    if token.capabilities is not None and job.capability not in token.capabilities:
        return False
    return token.repos is None or repo_allowed(token.repos, job.repo)


def visibility(token: ApiToken) -> Visible | None:
    """The predicate for a limited token (None: it sees everything)."""
    return (lambda job: may_touch(token, job)) if limited(token) else None


def job_for(pool: Pool, token: ApiToken, job_id: str) -> Job:
    """The job, or the same NotFound as an unknown id when it is outside the limits."""
    job = pool.get(job_id)
    if not may_touch(token, job):
        raise NotFound(f"no job with id {job_id!r}")
    return job


def pipeline_for(pool: Pool, token: ApiToken, pipeline_id: str) -> tuple[Pipeline, list[Job]]:
    """The pipeline and the jobs of it the token may see; NotFound when it sees none."""
    jobs = jobs_of_pipeline(pool, token, pipeline_id)
    return pool.store.get_pipeline(pipeline_id), [j for j in jobs if may_touch(token, j)]


def jobs_of_pipeline(pool: Pool, token: ApiToken, pipeline_id: str) -> list[Job]:
    """All the pipeline's jobs, once the token may see one of them (else NotFound, as for
    a pipeline that does not exist)."""
    jobs = pool.pipeline(pipeline_id)[1]
    if jobs and not any(may_touch(token, j) for j in jobs):
        raise NotFound(f"no pipeline with id {pipeline_id!r}")
    return jobs


def check_every(token: ApiToken, jobs: Iterable[Job], verb: str) -> None:
    """AccessDenied naming (by id only) the first job the action would touch outside the
    token's limits; the action then touches nothing."""
    for job in jobs:
        if not may_touch(token, job):
            raise AccessDenied(
                f"token {token.name!r} may not {verb} job {job.id}, which this {verb} would "
                f"also touch: it is outside the token's limits; nothing was changed",
                field="job_id",
            )


def retryable(jobs: Iterable[Job]) -> list[Job]:
    """The jobs a pipeline's retry resets: those that did not succeed."""
    return [j for j in jobs if j.state in RETRYABLE_STATES]


def touched_by_retry(pool: Pool, job: Job) -> list[Job]:
    """The jobs a retry through ``job`` resets: its pipeline's that did not succeed."""
    return retryable(pool.pipeline(job.pipeline_id)[1]) if job.pipeline_id else [job]


def touched_by_cancel(jobs: Iterable[Job]) -> list[Job]:
    """The jobs of a pipeline its cancel stops: those that have not ended."""
    return [j for j in jobs if JobState(j.state) not in FINAL_STATES]


def reason_shown(pool: Pool, token: ApiToken, job: Job) -> str | None:
    """The job's reason, unless it names a sibling outside the token's limits (a pipeline
    rejected because policy denied another of its jobs)."""
    reason = job.reason
    if not reason or not job.pipeline_id or not limited(token):
        return reason
    if not reason.startswith(_SIBLING_DENIED):
        return reason
    for sibling in pool.store.pipeline_jobs(job.pipeline_id):
        if reason.startswith(f"{_SIBLING_DENIED}{sibling.key} was ") and not may_touch(
            token, sibling
        ):
            return "pipeline rejected: policy denied one of its jobs outside this token's limits"
    return reason


def shown(view: JobView, pool: Pool, token: ApiToken, job: Job) -> JobView:
    """``view`` with the reasons a limited token may read."""
    reason = reason_shown(pool, token, job)
    if reason != job.reason:
        view.reason = reason
        if view.waiting is not None and view.waiting.startswith("rejected: "):
            view.waiting = f"rejected: {reason}"
    return view
