"""``/v1/pipelines``: workflows submitted whole, then inspected, cancelled or retried."""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Response

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
from ci_pool.api.routes_jobs import ERRORS, once
from ci_pool.api.schemas import PipelineAck, PipelineCreate
from ci_pool.service.job_views import PipelineView, pipeline_view
from ci_pool.service.pool import Pool
from ci_pool.store.tokens import ApiToken

router = APIRouter(prefix="/v1", responses=ERRORS, tags=["pipelines"])


def public(pipeline_id: str, pool: Pool, token: ApiToken | None = None) -> PipelineView:
    """The pipeline's view; with ``token``, of the jobs within its limits alone (404 when
    there are none)."""
    if token is None:
        return pipeline_view(*pool.pipeline(pipeline_id))
    return pipeline_view(*access.pipeline_for(pool, token, pipeline_id))


def acknowledged(pipeline_id: str, pool: Pool, token: ApiToken) -> PipelineView | PipelineAck:
    if token.allows("read"):
        return public(pipeline_id, pool, token)
    return PipelineAck(id=pipeline_id, state=pool.pipeline(pipeline_id)[0].state)


@router.post("/pipelines", status_code=201, response_model=PipelineView)
def create_pipeline(
    body: PipelineCreate,
    pool: PoolDep,
    token: SubmitToken,
    who: SubmitterDep,
    raw: Annotated[Any, Depends(json_body)],
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> PipelineView:
    """Run a workflow (Actions syntax, as YAML text or the same structure as JSON) from a
    repository and ref: its jobs are checked, written and their roots queued. Errors in
    the workflow come back with file:line:column. A workflow policy denies is recorded
    ``rejected`` and answered 403 naming the rule."""
    text = (
        body.workflow
        if isinstance(body.workflow, str)
        else yaml.safe_dump(body.workflow, sort_keys=False)
    )

    def create() -> str:
        return pool.submit_pipeline(
            text,
            body.file,
            body.repo,
            body.ref,
            body.event,
            who=who,
            inputs=body.inputs,
            sync=body.sync,
            runner=body.runner,
        ).id

    return public(once(pool, token.name, idempotency_key, "pipeline", raw, response, create), pool)


@router.get("/pipelines/{pipeline_id}", response_model=PipelineView)
def get_pipeline(pipeline_id: str, pool: PoolDep, token: ReadToken) -> PipelineView:
    """The pipeline and each of its jobs: state, runner, exit code, outputs (a token
    limited to some capabilities or repositories: the jobs within them)."""
    return public(pipeline_id, pool, token)


@router.post("/pipelines/{pipeline_id}/cancel", response_model=PipelineView | PipelineAck)
def cancel_pipeline(
    pipeline_id: str, pool: PoolDep, token: CancelToken
) -> PipelineView | PipelineAck:
    """Cancel every job that has not ended (403 naming the first outside the token's
    limits, and nothing is cancelled)."""
    jobs = access.jobs_of_pipeline(pool, token, pipeline_id)
    access.check_every(token, access.touched_by_cancel(jobs), "cancel")
    pool.cancel_pipeline(pipeline_id, by=f"api token {token.name}")
    return acknowledged(pipeline_id, pool, token)


@router.post("/pipelines/{pipeline_id}/retry", response_model=PipelineView | PipelineAck)
def retry_pipeline(
    pipeline_id: str, pool: PoolDep, token: SubmitToken
) -> PipelineView | PipelineAck:
    """Run the failed, cancelled and skipped jobs again; jobs that passed keep their result
    (403 naming the first to run again outside the token's limits, and nothing runs)."""
    jobs = access.jobs_of_pipeline(pool, token, pipeline_id)
    access.check_every(token, access.retryable(jobs), "retry")
    pool.retry_pipeline(pipeline_id)
    return acknowledged(pipeline_id, pool, token)
