"""The web view's plumbing: templates, the session a page needs, CSRF checks, the security
headers of every ``/ui/`` response, and errors shown as pages instead of JSON."""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Depends, FastAPI, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ci_pool import defaults
from ci_pool.api.deps import PoolDep
from ci_pool.exceptions import AccessDenied
from ci_pool.ui import render
from ci_pool.ui import session as sessions
from ci_pool.ui.session import Session

HERE = Path(__file__).parent
PREFIX = "/ui"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]

#: A year: how long a browser keeps a static file whose URL names its digest.
_IMMUTABLE = b"public, max-age=31536000, immutable"
_digests: dict[str, tuple[tuple[int, int], str]] = {}


def static_digest(name: str) -> str | None:
    """The first 16 hex digits of the sha256 of ``static/<name>`` (re-read when its size or
    mtime changes), or None when there is no such file directly in ``static/``."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = HERE / "static" / name
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            return None
        key = (st.st_mtime_ns, st.st_size)
        known = _digests.get(name)
        if known is None or known[0] != key:
            known = (key, hashlib.sha256(path.read_bytes()).hexdigest()[:16])
            _digests[name] = known
    except OSError:  # gone or unreadable: no digest, so no long-lived cache
        return None
    return known[1]


def static_url(name: str) -> str:
    """``/ui/static/<name>?v=<digest>``: the URL changes with the file's bytes, so a browser
    keeps the file for good and never asks again while a page loads (a stylesheet it has to
    revalidate holds the page's first paint until the server answers)."""
    return f"{PREFIX}/static/{name}?v={static_digest(name)}"


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.autoescape = True
templates.env.globals["log_html"] = render.log_html
templates.env.globals["static"] = static_url


class LoginRequired(Exception):
    """The request has no live session: the browser goes to the login form."""

    def __init__(self, next_path: str):
        self.next_path = next_path


def safe_next(value: str | None) -> str:
    """``value`` when it is a path of this web view, else ``/ui/`` (never another site)."""
    if not value or "\\" in value or any(ord(c) < 0x20 for c in value):
        return f"{PREFIX}/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith(f"{PREFIX}/"):
        return f"{PREFIX}/"
    if value.startswith("//") or "/../" in parts.path or parts.path.endswith("/.."):
        return f"{PREFIX}/"
    return value


def current_session(request: Request, pool: PoolDep) -> Session:
    found = sessions.resolve(pool, request.cookies.get(defaults.UI_SESSION_COOKIE))
    if found is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path)
    return found


SessionDep = Annotated[Session, Depends(current_session)]


def check_csrf(session: Session, given: str | None) -> None:
    if not sessions.csrf_ok(session.csrf, given):
        raise AccessDenied(
            "the form's CSRF value is missing or wrong; reload the page and submit it again",
            field="csrf",
        )


def require_scope(session: Session, scope: str, what: str) -> None:
    """AccessDenied unless the session's token carries ``scope`` (or ``admin``)."""
    token = session.token
    if not token.allows(scope):
        raise AccessDenied(
            f"token {token.name!r} may not {what}: it lacks the {scope!r} scope "
            f"(it has: {', '.join(token.scopes)})",
            field="scope",
        )


def acting(scope: str, what: str) -> Any:
    """The session of a form that changes something: its CSRF value checked first, then
    that its token carries ``scope`` (``what`` names the action in the refusal)."""

    def check(session: SessionDep, csrf: Annotated[str, Form(max_length=200)] = "") -> Session:
        check_csrf(session, csrf)
        require_scope(session, scope, what)
        return session

    return Depends(check)


def page(
    request: Request,
    name: str,
    session: Session | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    context.setdefault("title", "")
    response = templates.TemplateResponse(
        request,
        name,
        {"session": session, "csrf": session.csrf if session else "", "prefix": PREFIX, **context},
        status_code=status,
    )
    return response


def _immutable(scope: Scope, path: str) -> bool:
    """The request names a static file by its current digest (``?v=``, as ``static_url``
    writes it): its answer may be cached for good."""
    asked = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("v")
    name = path[len(f"{PREFIX}/static/") :]
    return asked is not None and asked[-1] == static_digest(name)


class SecurityHeaders:
    """The CSP and its companions on every ``/ui/`` response; pages are never cached, static
    files asked for by their digest are cached for good."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(f"{PREFIX}/"):
            await self.app(scope, receive, send)
            return
        static = path.startswith(f"{PREFIX}/static/")
        immutable = static and _immutable(scope, path)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] not in dict(_HEADERS)]
                headers += _HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                elif immutable and message.get("status") == 200:
                    headers.append((b"cache-control", _IMMUTABLE))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


Handler = Callable[[Request, Exception], Response | Awaitable[Response]]


def _as_page(handler: Handler) -> Handler:
    """The API's handler for an error, its status and message shown as a page on /ui/."""

    async def handle(request: Request, exc: Exception) -> Response:
        result = handler(request, exc)
        response = await result if isinstance(result, Awaitable) else result
        if not request.url.path.startswith(f"{PREFIX}/"):
            return response
        try:
            error = json.loads(bytes(response.body))["error"]
            message = str(error["message"])
            if error.get("field"):
                message = f"{error['field']}: {message}"
        except (ValueError, AttributeError, KeyError, TypeError):
            message = "the request failed"
        try:
            found = sessions.resolve(
                request.app.state.pool, request.cookies.get(defaults.UI_SESSION_COOKIE)
            )
        except Exception:  # the store or the broker is what failed: no session then
            found = None
        return page(
            request,
            "error.html",
            found,
            status=response.status_code,
            title=f"{response.status_code}",
            message=message,
        )

    return handle


def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    if request.headers.get("HX-Request"):
        # A live fragment's poll: the whole page goes to the login form, not the fragment.
        return Response(status_code=401, headers={"HX-Redirect": f"{PREFIX}/login"})
    return RedirectResponse(
        f"{PREFIX}/login?next={quote(safe_next(exc.next_path), safe='/')}", status_code=303
    )


def install(app: FastAPI) -> None:
    """Mount the web view on the API's app (after the API's error handlers exist)."""
    from ci_pool.ui import routes_auth, routes_jobs, routes_pipelines, routes_pool

    for exc_class, handler in list(app.exception_handlers.items()):
        app.add_exception_handler(exc_class, _as_page(handler))
    app.add_exception_handler(LoginRequired, _login_required)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    for module in (routes_auth, routes_pool, routes_pipelines, routes_jobs):
        app.include_router(module.router)
    app.add_middleware(SecurityHeaders)
