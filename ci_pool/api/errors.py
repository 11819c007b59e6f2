"""One error shape for every failure, and no stack trace ever reaches a client."""

from __future__ import annotations

import logging

import redis
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ci_pool.api.schemas import ErrorBody, ErrorDetail
from ci_pool.exceptions import (
    AccessDenied,
    CIPoolError,
    ConfigError,
    InfraError,
    InputError,
    NotFound,
    PolicyDenied,
    ProvisioningError,
    TooLarge,
)
from ci_pool.store.idempotency import KeyConflict

log = logging.getLogger("ci_pool.api")


class ApiError(Exception):
    """An error the API answers with on purpose (auth, scopes)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


#: (exception class, HTTP status, code); the first that matches wins.
_STATUS: list[tuple[type[CIPoolError], int, str]] = [
    (TooLarge, 413, "too_large"),
    (InputError, 422, "invalid_input"),
    (PolicyDenied, 403, "rejected"),
    (AccessDenied, 403, "forbidden"),
    (KeyConflict, 409, "conflict"),
    (NotFound, 404, "not_found"),
    (InfraError, 503, "infra_unavailable"),
    (ProvisioningError, 503, "provisioning_failed"),
    (ConfigError, 500, "config_error"),
]


def _cipool_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CIPoolError)
    for cls, status, code in _STATUS:
        if isinstance(exc, cls):
            if isinstance(exc, InputError):
                # The field is in its own key; the message does not repeat it.
                message = str(exc).removeprefix(f"{exc.field}: ") if exc.field else str(exc)
                return error_response(status, code, message, exc.field)
            if isinstance(exc, PolicyDenied | AccessDenied | KeyConflict):
                return error_response(status, code, str(exc), exc.field)
            if isinstance(exc, ConfigError):
                log.error("configuration error serving %s: %s", request.url.path, exc)
                return error_response(status, code, "the server is misconfigured")
            return error_response(status, code, str(exc))
    log.error("unclassified ci-pool error serving %s: %r", request.url.path, exc)
    return error_response(500, "internal_error", "internal server error")


def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    return error_response(422, "invalid_input", message, ".".join(loc) or None)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
    return error_response(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        str(exc.detail),
        headers=dict(exc.headers) if exc.headers else None,
    )


def _store_down(request: Request, exc: Exception) -> JSONResponse:
    log.error("store unreachable serving %s: %s", request.url.path, exc)
    return error_response(503, "store_unavailable", "the store is unreachable")


def _broker_down(request: Request, exc: Exception) -> JSONResponse:
    log.error("broker unreachable serving %s: %s", request.url.path, exc)
    return error_response(503, "broker_unavailable", "the broker is unreachable")


class CatchAll:
    """Outermost safety net: an unexpected exception is logged here and the client gets a
    generic 500 in the error shape (never a traceback)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error serving %s %s", scope.get("method"), scope.get("path"))
            if not started:
                response = error_response(500, "internal_error", "internal server error")
                await response(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(CIPoolError, _cipool_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(sqlalchemy.exc.OperationalError, _store_down)
    app.add_exception_handler(redis.RedisError, _broker_down)
    app.add_middleware(CatchAll)
