"""``/v1/runners`` and ``/v1/queues/{capability}/scale``: the runners of the pool, and the
operator's levers on them (drain, undrain, scale). Reads need ``read``; levers ``admin``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from ci_pool import defaults
from ci_pool.api.deps import PoolDep, ReadToken, require
from ci_pool.api.routes_jobs import ERRORS
from ci_pool.core.diagnostics import DiagnosticRecord, DiagnosticResult
from ci_pool.service.views import RunnerStatus
from ci_pool.store.tokens import ApiToken

router = APIRouter(prefix="/v1", responses=ERRORS, tags=["runners"])

AdminToken = Annotated[ApiToken, Depends(require("admin"))]


class RunnersPublic(BaseModel):
    data: list[RunnerStatus]


class RunnerAction(BaseModel):
    runner_id: str
    message: str = Field(description="What happened, in one line.")


class ScaleRequest(BaseModel):
    slots: int = Field(ge=0, le=10_000, description="Jobs the capability runs at once.")


class ScaleResult(BaseModel):
    capability: str
    #: One line per worker: "<runner>: <before> -> <after> ok|no answer".
    lines: list[str]


@router.get("/runners", response_model=RunnersPublic)
def list_runners(pool: PoolDep, token: ReadToken) -> RunnersPublic:
    """Every runner heard from: online, busy, draining or lost, with its running jobs. A
    token limited to capabilities sees only their runners."""
    rows = pool.runner_statuses()
    if token.capabilities is not None:
        rows = [r for r in rows if r.capability in token.capabilities]
    return RunnersPublic(data=rows)


@router.post("/runners/{runner_id}/drain", response_model=RunnerAction)
def drain_runner(runner_id: str, pool: PoolDep, token: AdminToken) -> RunnerAction:
    """The runner takes no new job, finishes the running one, then exits."""
    return RunnerAction(runner_id=runner_id, message=pool.drain(runner_id))


@router.post("/runners/{runner_id}/undrain", response_model=RunnerAction)
def undrain_runner(runner_id: str, pool: PoolDep, token: AdminToken) -> RunnerAction:
    """Cancel a drain that has not finished yet: the runner takes jobs again."""
    return RunnerAction(runner_id=runner_id, message=pool.undrain(runner_id))


@router.post("/queues/{capability}/scale", response_model=ScaleResult)
def scale_queue(
    capability: str, body: ScaleRequest, pool: PoolDep, token: AdminToken
) -> ScaleResult:
    """Spread ``slots`` concurrent jobs over the capability's live workers."""
    return ScaleResult(capability=capability, lines=pool.scale(capability, body.slots))


class RunnerExecRequest(BaseModel):
    argv: list[str] = Field(
        min_length=1,
        max_length=defaults.RUNNER_EXEC_MAX_ARGS,
        description="The program and its arguments (no shell).",
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        le=defaults.RUNNER_EXEC_MAX_TIMEOUT,
        description="Seconds it may run (default: the pool's runner_exec_timeout).",
    )


class RunnerExecsPublic(BaseModel):
    data: list[DiagnosticRecord]


@router.post("/runners/{name}/exec", response_model=DiagnosticResult)
def exec_on_runner(
    name: str, body: RunnerExecRequest, pool: PoolDep, token: AdminToken
) -> DiagnosticResult:
    """Run one diagnostic command on a live runner through the pool (audited): its exit
    code and output, bounded; 403 on a strict lane, 404 for an unknown or offline runner,
    503 when the runner does not answer."""
    return pool.runner_exec(name, body.argv, by=f"api token {token.name}", timeout=body.timeout)


@router.get("/runner-execs", response_model=RunnerExecsPublic)
def runner_execs(
    pool: PoolDep,
    token: AdminToken,
    runner: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RunnerExecsPublic:
    """The audit of diagnostic commands (who, runner, command, when, outcome), newest first."""
    return RunnerExecsPublic(data=pool.runner_exec_log(runner, limit))
