"""Dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ci_pool import defaults
from ci_pool.api.errors import ApiError
from ci_pool.core.policy import (
    SIGNATURE_HEADER,
    SIGNATURE_MAX_AGE,
    Submitter,
    signature_mac,
    verify_signature,
)
from ci_pool.exceptions import AccessDenied
from ci_pool.service.pool import Pool
from ci_pool.store import Store, tokens
from ci_pool.store.tokens import ApiToken

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


async def json_body(request: Request) -> Any:
    """The request body as parsed JSON (what a signature covers), or None."""
    raw = await request.body()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None  # the body model reports it, with the field


async def submitter(
    request: Request, token: SubmitToken, pool: PoolDep, body: Annotated[Any, Depends(json_body)]
) -> Submitter:
    """The token's identity and limits, and the key id of a valid signature if one came."""
    header = request.headers.get(SIGNATURE_HEADER)
    signed_by = None
    if header is not None:
        signed_by = verify_signature(header, body, pool.settings.signing_keys)
        # Accepted once: a captured request cannot be sent again while its time is valid.
        seen = defaults.SIGNATURE_SEEN_KEY.format(mac=signature_mac(header))
        if not pool.redis.set(seen, token.name, nx=True, ex=2 * SIGNATURE_MAX_AGE + 60):
            raise AccessDenied(
                "this signature was used already; sign each submission anew", field="signature"
            )
    return limits_of(token, signed_by)


def limits_of(token: ApiToken, signed_by: str | None = None) -> Submitter:
    """A token as a submitter: its name and its capability and repository limits."""
    return Submitter(
        name=f"token {token.name!r}",
        capabilities=None if token.capabilities is None else tuple(token.capabilities),
        repos=None if token.repos is None else tuple(token.repos),
        signed_by=signed_by,
        operator=False,
    )


SubmitterDep = Annotated[Submitter, Depends(submitter)]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Same key and body: the first result again. Same key, other body: 409.",
    ),
]
ReadToken = Annotated[ApiToken, Depends(require("read"))]
CancelToken = Annotated[ApiToken, Depends(require("cancel"))]
