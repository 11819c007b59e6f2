"""``POST /v1/pipelines/dispatch``: run a repository's workflow by hand
(``workflow_dispatch``) with inputs; needs ``submit``."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ci_pool.api.deps import PoolDep, SubmitterDep, SubmitToken
from ci_pool.api.routes_jobs import ERRORS
from ci_pool.api.routes_pipelines import public
from ci_pool.service.dispatch import MAX_INPUTS, dispatch
from ci_pool.service.job_views import PipelineView

router = APIRouter(prefix="/v1", responses=ERRORS, tags=["pipelines"])


class DispatchCreate(BaseModel):
    """What GitHub's dispatches endpoint takes, plus the repository."""

    model_config = ConfigDict(extra="forbid")

    repo: str = Field(min_length=1, max_length=2048)
    ref: str = Field(default="main", min_length=1, max_length=255)
    workflow: str = Field(
        min_length=1, max_length=500, description="The file's path in the repository or name."
    )
    inputs: dict[str, str] = Field(default_factory=dict, max_length=MAX_INPUTS)


@router.post("/pipelines/dispatch", status_code=201, response_model=PipelineView)
async def dispatch_pipeline(
    body: DispatchCreate, pool: PoolDep, token: SubmitToken, who: SubmitterDep
) -> PipelineView:
    """Read the workflow from the repository at ``ref`` and run it as a
    ``workflow_dispatch`` with ``inputs`` (undeclared names refused, defaults filled)."""
    row = await run_in_threadpool(
        dispatch, pool, body.repo, body.ref, body.workflow, body.inputs, who
    )
    return public(row.id, pool)
