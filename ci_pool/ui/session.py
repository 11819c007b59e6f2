"""Browser sessions: an API token exchanged for a random session id kept server-side (in
Redis, with the token's digest and the session's CSRF value).

Every request resolves the session to the token's row again, so a token revoked or expired
ends its sessions at once; logout deletes the session, so a copied cookie dies with it."""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from ipaddress import ip_address

import redis
from fastapi import Request, Response
from sqlalchemy import select

from ci_pool import defaults
from ci_pool.service.pool import Pool
from ci_pool.store.tokens import ApiToken, digest
from ci_pool.store.tokens import verify as verify_token


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: its id, its CSRF value and the token it stands for."""

    sid: str
    csrf: str
    token: ApiToken


def _key(sid: str) -> str:
    return defaults.UI_SESSION_KEY.format(sid=digest(sid))


def start(pool: Pool, plaintext: str) -> tuple[str, ApiToken] | None:
    """A new session id for a valid token; None for a token unknown, expired or revoked."""
    token = verify_token(pool.store, plaintext.strip())
    if token is None:
        return None
    sid = secrets.token_urlsafe(32)
    record = {"sha256": token.sha256, "csrf": secrets.token_urlsafe(32)}
    pool.redis.set(_key(sid), json.dumps(record), ex=defaults.UI_SESSION_TTL)
    return sid, token


def resolve(pool: Pool, sid: str | None) -> Session | None:
    """The session behind a cookie value, with its token's current row; None when there is
    no such session or its token no longer works."""
    if not sid or len(sid) > 200:
        return None
    key = _key(sid)
    raw = pool.redis.get(key)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
        sha, csrf = str(record["sha256"]), str(record["csrf"])
    except (ValueError, KeyError, TypeError):
        return None
    with pool.store.session(write=False) as s:
        token = s.scalar(select(ApiToken).where(ApiToken.sha256 == sha))
    if token is None or not token.is_active():
        pool.redis.delete(key)
        return None
    pool.redis.expire(key, defaults.UI_SESSION_TTL)
    return Session(sid, csrf, token)


def end(pool: Pool, sid: str | None) -> None:
    if sid:
        try:
            pool.redis.delete(_key(sid))
        except redis.RedisError:
            pass


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def loopback(request: Request) -> bool:
    """Whether the request came to a loopback host on a loopback socket (then the cookie
    may go without TLS); a proxy on the same host forwarding a public name is not."""
    server = request.scope.get("server")
    bound = server is None or _is_loopback(str(server[0]))
    return bound and _is_loopback(request.url.hostname or "")


def needs_tls(request: Request) -> bool:
    """Plain HTTP off loopback: the browser would never send a Secure cookie back."""
    return request.url.scheme != "https" and not loopback(request)


def set_cookie(request: Request, response: Response, name: str, value: str, path: str) -> None:
    response.set_cookie(
        name,
        value,
        max_age=defaults.UI_SESSION_TTL,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or not loopback(request),
    )


def clear_cookie(request: Request, response: Response, name: str, path: str) -> None:
    response.delete_cookie(
        name,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or not loopback(request),
    )
