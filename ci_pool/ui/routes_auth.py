"""Logging in with an API token, and out. The login form's CSRF value is a random value
also set as a cookie of its own (there is no session yet to bind it to)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ci_pool import defaults
from ci_pool.api.deps import PoolDep
from ci_pool.ui import session as sessions
from ci_pool.ui.web import PREFIX, SessionDep, check_csrf, page, safe_next

router = APIRouter(prefix=PREFIX, include_in_schema=False)

_LOGIN_PATH = f"{PREFIX}/login"
_NEEDS_TLS = (
    "this address is served over plain HTTP off loopback, where the session cookie "
    "(Secure) cannot work: serve the API over TLS (--tls-cert/--tls-key or a TLS proxy)"
)


def _login_form(
    request: Request, next_path: str, status: int = 200, error: str | None = None
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(32)
    response = page(
        request,
        "login.html",
        None,
        status=status,
        title="Log in",
        login_csrf=nonce,
        next_path=safe_next(next_path),
        error=error or (_NEEDS_TLS if sessions.needs_tls(request) else None),
    )
    sessions.set_cookie(request, response, defaults.UI_LOGIN_COOKIE, nonce, _LOGIN_PATH)
    return response


@router.get("", response_class=RedirectResponse)
def root() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/", status_code=307)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    """The login form: paste an API token (``ci-pool token create --scope read``)."""
    return _login_form(request, next or f"{PREFIX}/")


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    pool: PoolDep,
    token: Annotated[str, Form(max_length=500)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """A valid token with the ``read`` scope: a session cookie and on to ``next``."""
    expected = request.cookies.get(defaults.UI_LOGIN_COOKIE) or ""
    if not expected and sessions.needs_tls(request):
        return _login_form(request, next, 403, _NEEDS_TLS)
    if not expected or not sessions.csrf_ok(expected, csrf):
        return _login_form(
            request, next, 403, "the form expired or its CSRF value is wrong; log in again"
        )
    started = sessions.start(pool, token) if token.strip() else None
    if started is None:
        return _login_form(request, next, 401, "the token is unknown, expired or revoked")
    sid, row = started
    if not row.allows("read"):
        sessions.end(pool, sid)
        return _login_form(
            request,
            next,
            403,
            f"token {row.name!r} lacks the 'read' scope the web view needs "
            f"(it has: {', '.join(row.scopes)})",
        )
    response = RedirectResponse(safe_next(next), status_code=303)
    sessions.set_cookie(request, response, defaults.UI_SESSION_COOKIE, sid, f"{PREFIX}/")
    sessions.clear_cookie(request, response, defaults.UI_LOGIN_COOKIE, _LOGIN_PATH)
    return response


@router.post("/logout")
def logout(
    request: Request,
    pool: PoolDep,
    session: SessionDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """End the session (server-side: the cookie is worthless afterwards)."""
    check_csrf(session, csrf)
    sessions.end(pool, session.sid)
    response = RedirectResponse(_LOGIN_PATH, status_code=303)
    sessions.clear_cookie(request, response, defaults.UI_SESSION_COOKIE, f"{PREFIX}/")
    return response
