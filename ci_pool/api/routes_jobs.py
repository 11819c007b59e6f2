"""``/v1/jobs`` and ``/v1/queues``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from ci_pool.api.deps import CancelToken, PoolDep, ReadToken, SubmitToken
from ci_pool.api.schemas import ErrorBody, JobCreate, JobPublic, JobsPublic, QueuesPublic
from ci_pool.cli import job_dict
from ci_pool.jobs import JobState, parse_job_spec

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 422, 503)
}

router = APIRouter(prefix="/v1", responses=_ERRORS)


@router.post("/jobs", status_code=201, response_model=JobPublic, tags=["jobs"])
def create_job(body: JobCreate, pool: PoolDep, token: SubmitToken) -> JobPublic:
    """Submit one job (the rules of ``ci-pool submit``); 201 with the queued job."""
    spec = parse_job_spec(
        body.model_dump(exclude_none=True), allow_local_repos=pool.settings.allow_local_repos
    )
    job = pool.submit(spec)
    return JobPublic.model_validate(job_dict(job))


@router.get("/jobs", response_model=JobsPublic, tags=["jobs"])
def list_jobs(
    pool: PoolDep,
    token: ReadToken,
    state: Annotated[list[JobState] | None, Query()] = None,
    capability: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobsPublic:
    """The newest jobs first, optionally of some states or one capability."""
    jobs = pool.store.list_jobs(states=state or (), capability=capability, limit=limit)
    data = [JobPublic.model_validate(job_dict(j)) for j in jobs]
    return JobsPublic(data=data, count=len(data))


@router.get("/jobs/{job_id}", response_model=JobPublic, tags=["jobs"])
def get_job(job_id: str, pool: PoolDep, token: ReadToken) -> JobPublic:
    """One job with its history, artifacts and why it waits (if it does)."""
    return JobPublic.model_validate(job_dict(pool.get(job_id), pool))


@router.get(
    "/jobs/{job_id}/logs",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}},
    tags=["jobs"],
)
def get_logs(
    job_id: str,
    pool: PoolDep,
    token: ReadToken,
    attempt: Annotated[int | None, Query(ge=1)] = None,
) -> PlainTextResponse:
    """The stored log of one attempt (default: the latest that wrote any)."""
    pool.get(job_id)  # 404 for an unknown job rather than an empty log
    return PlainTextResponse(pool.store.read_log(job_id, attempt))


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic, tags=["jobs"])
def cancel_job(job_id: str, pool: PoolDep, token: CancelToken) -> JobPublic:
    """Queued: cancelled at once. Running: its worker stops it (state follows)."""
    job = pool.cancel(job_id, by=f"api token {token.name}")
    return JobPublic.model_validate(job_dict(job))


@router.get("/queues", response_model=QueuesPublic, tags=["queues"])
def queues(pool: PoolDep, token: ReadToken) -> QueuesPublic:
    """Per capability: depth, oldest wait, running, workers, last hour's jobs."""
    return QueuesPublic.model_validate({"data": pool.status()})
