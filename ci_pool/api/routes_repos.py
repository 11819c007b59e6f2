"""``/v1/repos``: repositories registered for schedules (``on.schedule`` run by
``ci-pool beat``). Reading needs ``read``; registering and removing need ``admin``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ci_pool.api.deps import PoolDep, ReadToken, require
from ci_pool.api.routes_jobs import ERRORS
from ci_pool.service import schedules
from ci_pool.store import schedules as stored
from ci_pool.store.tokens import ApiToken

router = APIRouter(prefix="/v1", responses=ERRORS, tags=["repositories"])

AdminToken = Annotated[ApiToken, Depends(require("admin"))]


class RepoCreate(BaseModel):
    url: str = Field(min_length=1, max_length=2048, description="The repository's clone URL.")
    ref: str = Field(default="main", min_length=1, max_length=255)


class ScheduleEntry(BaseModel):
    file: str
    cron: str


class RepoPublic(BaseModel):
    id: str
    url: str
    ref: str
    added_at: datetime
    added_by: str
    scanned_commit: str | None
    scanned_at: datetime | None
    schedules: list[ScheduleEntry]
    scan_error: str | None


class ReposPublic(BaseModel):
    data: list[RepoPublic]


def public(row: stored.Repository) -> RepoPublic:
    return RepoPublic(
        id=row.id,
        url=row.url,
        ref=row.ref,
        added_at=row.added_at,
        added_by=row.added_by,
        scanned_commit=row.scanned_commit,
        scanned_at=row.scanned_at,
        schedules=[ScheduleEntry(file=s.file, cron=s.cron) for s in stored.schedules_of(row)],
        scan_error=row.scan_error,
    )


@router.get("/repos", response_model=ReposPublic)
def list_repos(pool: PoolDep, token: ReadToken) -> ReposPublic:
    """Every registered repository with the schedules beat last read from it."""
    return ReposPublic(data=[public(r) for r in stored.list_repositories(pool.store)])


@router.post("/repos", status_code=201, response_model=RepoPublic)
async def add_repo(body: RepoCreate, pool: PoolDep, token: AdminToken) -> RepoPublic:
    """Register a repository: beat runs its workflows' ``on.schedule`` at ``ref``."""
    row = await run_in_threadpool(
        schedules.register, pool, body.url, body.ref, f"token {token.name}"
    )
    return public(row)


@router.delete("/repos/{key}", response_model=RepoPublic)
def remove_repo(key: str, pool: PoolDep, token: AdminToken) -> RepoPublic:
    """Unregister a repository (by id or URL); its schedules stop."""
    return public(stored.remove_repository(pool.store, key))
