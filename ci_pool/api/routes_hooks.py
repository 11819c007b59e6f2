"""``/v1/hooks/gitea``, ``/v1/hooks/github`` and ``/v1/hooks/forgejo``: push and pull
request webhooks. No bearer token: the HMAC signature over the raw body is the
authentication, checked before the body is parsed."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ci_pool.api.deps import PoolDep
from ci_pool.api.errors import ApiError
from ci_pool.api.schemas import ErrorBody
from ci_pool.service import webhooks


class HookPipeline(BaseModel):
    file: str = Field(description="The workflow's path in the repository.")
    pipeline_id: str


class HookSkipped(BaseModel):
    file: str
    reason: str = Field(description="Why the workflow did not run for this push.")


class HookReceived(BaseModel):
    """What one delivery started, and which workflows it did not run and why."""

    delivery: str
    event: str
    message: str
    pipelines: list[HookPipeline]
    skipped: list[HookSkipped]


_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (401, 403, 409, 413, 422, 503)
}
_BODY = {
    "requestBody": {
        "required": True,
        "description": "The provider's event payload, as JSON (or GitHub's form-encoded "
        "payload field), signed with the webhook secret.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}

router = APIRouter(prefix="/v1/hooks", responses=_ERRORS, tags=["webhooks"])


async def _read_body(request: Request) -> bytes:
    """The raw body, refused past ``MAX_BODY`` without reading the rest."""
    too_big = ApiError(413, "too_large", f"the body is over {webhooks.MAX_BODY} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > webhooks.MAX_BODY:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > webhooks.MAX_BODY:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def _receive(
    provider: webhooks.Provider, request: Request, response: Response, pool: PoolDep
) -> HookReceived:
    body = await _read_body(request)
    try:
        result = await run_in_threadpool(
            webhooks.receive, pool, provider, dict(request.headers), body
        )
    except webhooks.HookRefused as exc:
        webhooks.log.warning("webhook %s refused: %s", provider, exc)
        raise ApiError(exc.status, exc.code, str(exc)) from None
    response.status_code = result.status
    return HookReceived(
        delivery=result.delivery,
        event=result.event,
        message=result.message,
        pipelines=[HookPipeline(file=f, pipeline_id=p) for f, p in result.pipelines],
        skipped=[HookSkipped(file=f, reason=r) for f, r in result.skipped],
    )


@router.post(
    "/gitea",
    status_code=202,
    response_model=HookReceived,
    responses={200: {"model": HookReceived, "description": "A ping: pong."}},
    openapi_extra=_BODY,
)
async def gitea_hook(request: Request, response: Response, pool: PoolDep) -> HookReceived:
    """A Gitea delivery signed in ``X-Gitea-Signature``; a push runs the matching workflows
    of ``.gitea/workflows/`` (else ``.github/workflows/``) at the pushed commit."""
    return await _receive("gitea", request, response, pool)


@router.post(
    "/github",
    status_code=202,
    response_model=HookReceived,
    responses={200: {"model": HookReceived, "description": "A ping: pong."}},
    openapi_extra=_BODY,
)
async def github_hook(request: Request, response: Response, pool: PoolDep) -> HookReceived:
    """A GitHub delivery signed in ``X-Hub-Signature-256``; a push runs the matching
    workflows of ``.github/workflows/`` at the pushed commit."""
    return await _receive("github", request, response, pool)


@router.post(
    "/forgejo",
    status_code=202,
    response_model=HookReceived,
    responses={200: {"model": HookReceived, "description": "A ping: pong."}},
    openapi_extra=_BODY,
)
async def forgejo_hook(request: Request, response: Response, pool: PoolDep) -> HookReceived:
    """A Forgejo delivery signed in ``X-Forgejo-Signature``; workflows are read from
    ``.forgejo/workflows/`` (else ``.gitea/``, else ``.github/``)."""
    return await _receive("forgejo", request, response, pool)
