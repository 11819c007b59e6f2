"""Dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ci_pool import tokens
from ci_pool.api.errors import ApiError
from ci_pool.pool import Pool
from ci_pool.store import Store
from ci_pool.tokens import ApiToken

_bearer = HTTPBearer(auto_error=False, description="An API token from `ci-pool token create`.")


def get_pool(request: Request) -> Pool:
    pool: Pool = request.app.state.pool
    return pool


PoolDep = Annotated[Pool, Depends(get_pool)]


def get_store(pool: PoolDep) -> Store:
    return pool.store


StoreDep = Annotated[Store, Depends(get_store)]


def current_token(
    store: StoreDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiToken:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(
            401,
            "unauthorized",
            "an Authorization: Bearer <token> header is required",
            headers=challenge,
        )
    row = tokens.verify(store, credentials.credentials)
    if row is None:
        raise ApiError(
            401, "unauthorized", "the token is unknown, expired or revoked", headers=challenge
        )
    return row


CurrentToken = Annotated[ApiToken, Depends(current_token)]


def require(scope: str) -> Callable[[ApiToken], ApiToken]:
    """A dependency: the current token, which must carry ``scope`` (or ``admin``)."""

    def check(token: CurrentToken) -> ApiToken:
        if not token.allows(scope):
            raise ApiError(
                403,
                "forbidden",
                f"token {token.name!r} lacks the {scope!r} scope "
                f"(it has: {', '.join(token.scopes)})",
            )
        return token

    return check


SubmitToken = Annotated[ApiToken, Depends(require("submit"))]
ReadToken = Annotated[ApiToken, Depends(require("read"))]
CancelToken = Annotated[ApiToken, Depends(require("cancel"))]
