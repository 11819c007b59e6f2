"""``/v1/sync``: the local changes a job is submitted with (``submit/run --sync``), uploaded
as raw bytes before the job that names them by sha256."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from ci_pool.api.deps import PoolDep, SubmitToken
from ci_pool.api.routes_jobs import ERRORS
from ci_pool.core.sync import SyncSource
from ci_pool.exceptions import InputError

router = APIRouter(prefix="/v1", responses=ERRORS, tags=["jobs"])


@router.post("/sync", status_code=201, response_model=SyncSource)
async def upload_sync(
    request: Request,
    pool: PoolDep,
    token: SubmitToken,
    mode: Literal["patch", "snapshot"] = Query(description="patch or snapshot"),
) -> SyncSource:
    """Keep a patch (``git diff --binary``) or a gzipped tarball of a worktree; the answer
    goes in a job's ``checkout.sync`` (or a pipeline's ``sync``). The body is bounded by
    the setting ``sync_max_bytes``."""
    data = await request.body()
    if not data:
        raise InputError("the body is empty: send the patch or the snapshot", field="body")
    return await run_in_threadpool(pool.store.put_sync_payload, mode, data)
