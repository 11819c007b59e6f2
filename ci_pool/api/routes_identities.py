"""Runner identities: ``/v1/runner-tokens`` (admin) makes one-time registration tokens,
``/v1/runners/register`` (the registration token is the only credential) exchanges one for
a runner's credential and Redis user, ``/v1/runners/{name}/revoke`` (admin) cuts it off."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from ci_pool.api.deps import PoolDep, require
from ci_pool.api.routes_jobs import ERRORS
from ci_pool.service import identities
from ci_pool.service.identities import (
    Registration,
    RunnerIdentitiesPublic,
    RunnerIdentityView,
    RunnerTokenPublic,
)
from ci_pool.store.tokens import ApiToken

router = APIRouter(prefix="/v1", responses=ERRORS, tags=["runner identities"])

AdminToken = Annotated[ApiToken, Depends(require("admin"))]


class RunnerTokenCreate(BaseModel):
    capabilities: list[str] = Field(min_length=1, max_length=64)
    #: "<n>m", "<n>h" or "<n>d".
    expires: str = Field(default="1h", max_length=16)
    #: Only this runner registers with it (and is re-keyed if registered already).
    name: str | None = Field(default=None, max_length=63)


class RunnerRegister(BaseModel):
    token: str = Field(max_length=200)
    name: str = Field(max_length=63)
    host: str = Field(default="", max_length=255)
    capabilities: list[str] = Field(default_factory=list, max_length=64)


@router.post("/runner-tokens", response_model=RunnerTokenPublic, status_code=201)
def create_runner_token(
    body: RunnerTokenCreate, pool: PoolDep, token: AdminToken
) -> RunnerTokenPublic:
    """A one-time registration token for one runner of these capabilities (shown once)."""
    return identities.create_token(
        pool,
        body.capabilities,
        identities.lifetime(body.expires),
        by=f"token:{token.name}",
        name=body.name,
    )


@router.post("/runners/register", response_model=Registration, status_code=201)
def register_runner(body: RunnerRegister, pool: PoolDep) -> Registration:
    """Exchange a registration token for the runner's credential and Redis user."""
    return identities.register(
        pool, body.token, body.name, host=body.host, capabilities=body.capabilities
    )


@router.post("/runners/{name}/revoke", response_model=RunnerIdentityView)
def revoke_runner(name: str, pool: PoolDep, token: AdminToken) -> RunnerIdentityView:
    """Revoke a runner: credential and Redis user gone, its connections dropped."""
    return identities.revoke(pool, name, by=f"token:{token.name}")


@router.get("/runner-identities", response_model=RunnerIdentitiesPublic)
def list_identities(pool: PoolDep, token: AdminToken) -> RunnerIdentitiesPublic:
    """Every registered runner, revoked ones with who revoked them and when."""
    return RunnerIdentitiesPublic(data=identities.identities_view(pool))
