"""``/v1/jobs`` and ``/v1/queues``."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ci_pool.api import access
from ci_pool.api.deps import (
    CancelToken,
    IdempotencyKeyHeader,
    PoolDep,
    ReadToken,
    SubmitterDep,
    SubmitToken,
    json_body,
)
from ci_pool.api.errors import ApiError
from ci_pool.api.schemas import (
    MAX_INT,
    ArtifactsPublic,
    ErrorBody,
    JobAck,
    JobCreate,
    JobsPublic,
    QueuesPublic,
)
from ci_pool.core.specs import JobState, parse_job_spec
from ci_pool.exceptions import InputError, NotFound, PolicyDenied
from ci_pool.service.job_views import ArtifactView, JobView, job_view
from ci_pool.service.pool import Pool
from ci_pool.store.idempotency import run_once
from ci_pool.store.tokens import ApiToken

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 413, 422, 503)
}
#: The same errors for routes whose success is not JSON (their errors still are).
ERRORS_AS_JSON: dict[int | str, dict[str, Any]] = {
    code: {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for code in ERRORS
}
#: Rows read at a time while a limited token's page is filled.
_SCAN_BATCH = 200
#: What ``next`` gives back from an exhausted iterator.
_END: Any = object()
#: Header set on a response that repeats the first result of an Idempotency-Key.
REPLAYED_HEADER = "Idempotent-Replayed"

router = APIRouter(prefix="/v1", responses=ERRORS)


def public(job_id: str, pool: Pool, token: ApiToken | None = None) -> JobView:
    """The detailed view; with ``token``, only of a job within its limits (else 404), and
    its ``waiting`` reason names no job outside them."""
    if token is None:
        return job_view(pool.get(job_id), pool)
    job = access.job_for(pool, token, job_id)
    view = job_view(job, pool, access.visibility(token))
    return access.shown(view, pool, token, job)


def acknowledged(job_id: str, pool: Pool, token: ApiToken) -> JobView | JobAck:
    """What an action answers: the job's view for a token that may read it, else only its
    id and state (``cancel`` is not ``read``)."""
    if token.allows("read"):
        return public(job_id, pool, token)
    return JobAck(id=job_id, state=pool.get(job_id).state)


def once(
    pool: Pool,
    owner: str,
    key: str | None,
    kind: str,
    body: Any,
    response: Response,
    create: Any,
) -> str:
    """``create()`` once per Idempotency-Key (every time without one)."""
    if key is None:
        resource_id: str = create()
        return resource_id
    resource_id, replayed = run_once(pool.store, owner, key, kind, body, create)
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
        _rejected_again(pool, kind, resource_id)
    return resource_id


def _rejected_again(pool: Pool, kind: str, resource_id: str) -> None:
    """A replay of a submission that policy rejected gets the same 403."""
    denied = None
    if kind == "job":
        job = pool.get(resource_id)
        if job.state == JobState.REJECTED.value and job.attempt == 0 and job.reason:
            denied = PolicyDenied.from_record(job.reason, job_id=job.id)
    else:
        row, jobs = pool.pipeline(resource_id)
        if row.state == JobState.REJECTED.value:
            first = next(j for j in jobs if (j.reason or "").startswith("denied by rule "))
            denied = PolicyDenied.from_record(first.reason or "", pipeline_id=row.id)
    if denied is not None:
        raise ApiError(
            403, "rejected", str(denied), field=denied.field, headers={REPLAYED_HEADER: "true"}
        )


@router.post("/jobs", status_code=201, response_model=JobView, tags=["jobs"])
def create_job(
    body: JobCreate,
    pool: PoolDep,
    token: SubmitToken,
    who: SubmitterDep,
    raw: Annotated[Any, Depends(json_body)],
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobView:
    """Submit one job (the rules of ``ci-pool submit``); 201 with the job as it stands
    (queued, or already taken by a runner that was quicker than this answer).

    A job that policy denies is recorded ``rejected`` and answered 403 naming the rule."""

    def create() -> str:
        spec = parse_job_spec(
            body.model_dump(exclude_none=True), allow_local_repos=pool.settings.allow_local_repos
        )
        return pool.submit(spec, who).id

    job_id = once(pool, token.name, idempotency_key, "job", raw, response, create)
    return public(job_id, pool, token)


def _cursor(job: Any) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, job_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(at), str(job_id)
    except (ValueError, TypeError, binascii.Error):
        raise InputError(
            "not a cursor from this API; pass next_cursor of the previous page", field="cursor"
        ) from None


@router.get("/jobs", response_model=JobsPublic, tags=["jobs"])
def list_jobs(
    pool: PoolDep,
    token: ReadToken,
    state: Annotated[list[JobState] | None, Query()] = None,
    capability: str | None = None,
    repo: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobsPublic:
    """The newest jobs first, filtered by states, capability or repository, a page at a
    time: pass ``next_cursor`` back as ``cursor`` for the next page. A token limited to
    some capabilities or repositories sees only those jobs, in the pages and in the
    cursors alike."""
    after = _after(cursor) if cursor else None
    page: list[Any] = []
    size = max(limit + 1, _SCAN_BATCH)
    while len(page) <= limit:
        batch = pool.store.list_jobs(
            states=state or (),
            capability=capability,
            repo=repo,
            limit=size,
            after=after,
            capabilities=token.capabilities,
        )
        page += [j for j in batch if access.may_touch(token, j)]
        if len(batch) < size:
            break
        after = (batch[-1].created_at, batch[-1].id)
    data = [access.shown(job_view(j), pool, token, j) for j in page[:limit]]
    more = len(page) > limit
    return JobsPublic(
        data=data, count=len(data), next_cursor=_cursor(page[limit - 1]) if more else None
    )


@router.get("/jobs/{job_id}", response_model=JobView, tags=["jobs"])
def get_job(job_id: str, pool: PoolDep, token: ReadToken) -> JobView:
    """One job with its history, artifacts and why it waits (if it does)."""
    return public(job_id, pool, token)


async def _sse(request: Request, pool: Pool, job_id: str) -> AsyncIterator[str]:
    """Server-Sent Events: one ``line`` event per log line, then ``end`` with the outcome.

    Each blocking read lasts at most about a second and runs in the thread pool, so a
    client that leaves is noticed within a second and holds no thread; an idle stream
    gets a keep-alive comment every second."""
    lines = pool.follow_ticking(job_id)
    while True:
        item = await run_in_threadpool(next, lines, _END)
        if item is _END:
            break
        if await request.is_disconnected():
            lines.close()
            return
        if item is None:
            yield ": keep-alive\n\n"
            continue
        stamp, line = item
        yield f"event: line\ndata: {json.dumps({'t': stamp, 'line': line})}\n\n"
    job = await run_in_threadpool(pool.get, job_id)
    end = {"state": job.state, "exit_code": job.exit_code, "reason": job.reason}
    yield f"event: end\ndata: {json.dumps(end)}\n\n"


@router.get(
    "/jobs/{job_id}/logs",
    response_class=PlainTextResponse,
    responses={
        **ERRORS_AS_JSON,
        200: {"content": {"text/plain": {}, "text/event-stream": {}}},
    },
    tags=["jobs"],
)
def get_logs(
    request: Request,
    job_id: str,
    pool: PoolDep,
    token: ReadToken,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    follow: Annotated[bool, Query(description="Stream as Server-Sent Events.")] = False,
) -> Response:
    """The stored log of one attempt (default: the latest that wrote any); with
    ``follow=1``, the live log as Server-Sent Events until the job ends."""
    # 404 for an unknown job (or one outside the token's limits) rather than an empty log
    access.job_for(pool, token, job_id)
    if follow:
        return StreamingResponse(
            _sse(request, pool, job_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return PlainTextResponse(pool.store.read_log(job_id, attempt))


@router.post("/jobs/{job_id}/cancel", response_model=JobView | JobAck, tags=["jobs"])
def cancel_job(job_id: str, pool: PoolDep, token: CancelToken) -> JobView | JobAck:
    """Queued: cancelled at once. Running: its worker stops it (state follows). A token
    without ``read`` gets the id and state back, not the job."""
    access.job_for(pool, token, job_id)
    pool.cancel(job_id, by=f"api token {token.name}")
    return acknowledged(job_id, pool, token)


@router.post("/jobs/{job_id}/retry", response_model=JobView | JobAck, tags=["jobs"])
def retry_job(job_id: str, pool: PoolDep, token: SubmitToken) -> JobView | JobAck:
    """Run a failed, timed-out, cancelled or errored job again as a new attempt (a
    pipeline job: its pipeline's failed jobs and their dependents run again; 403 naming
    the first of those outside the token's limits, and nothing runs). A token without
    ``read`` gets the id and state back, not the job."""
    job = access.job_for(pool, token, job_id)
    access.check_every(token, access.touched_by_retry(pool, job), "retry")
    pool.retry_job(job_id)
    return acknowledged(job_id, pool, token)


@router.get("/jobs/{job_id}/artifacts", response_model=ArtifactsPublic, tags=["artifacts"])
def list_artifacts(
    job_id: str,
    pool: PoolDep,
    token: ReadToken,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> ArtifactsPublic:
    """The artifacts of one attempt (default: the latest that has any), with sha256."""
    access.job_for(pool, token, job_id)
    return ArtifactsPublic(
        data=[
            ArtifactView(path=a.path, size=a.size, sha256=a.sha256, attempt=a.attempt)
            for a in pool.store.artifacts(job_id, attempt)
        ]
    )


@router.get(
    "/jobs/{job_id}/artifacts/{name:path}",
    response_class=FileResponse,
    responses={**ERRORS_AS_JSON, 200: {"content": {"application/octet-stream": {}}}},
    tags=["artifacts"],
)
def get_artifact(
    job_id: str,
    name: str,
    pool: PoolDep,
    token: ReadToken,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> FileResponse:
    """One artifact's bytes; its sha256 is in the ``Digest`` and ``ETag`` headers."""
    access.job_for(pool, token, job_id)
    art = pool.artifact(job_id, name, attempt)
    path = pool.artifact_path(art)
    if not path.is_file():
        raise NotFound(f"artifact {name} of job {job_id} is missing from the artifact store")
    digest = base64.b64encode(bytes.fromhex(art.sha256)).decode()
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=path.name,
        headers={"Digest": f"sha-256={digest}", "ETag": f'"{art.sha256}"'},
    )


@router.get("/queues", response_model=QueuesPublic, tags=["queues"])
def queues(pool: PoolDep, token: ReadToken) -> QueuesPublic:
    """Per capability: depth, oldest wait, running, workers, last hour's jobs (a token
    limited to some capabilities: those alone)."""
    mine = token.capabilities
    rows = [r for r in pool.status() if mine is None or r.capability in mine]
    return QueuesPublic.model_validate({"data": [r.model_dump() for r in rows]})
