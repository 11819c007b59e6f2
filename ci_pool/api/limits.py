"""Bounds of request bodies, enforced before any route reads or parses them.

A body over its limit is answered 413 naming the limit: at once when Content-Length says
so, else as soon as the bytes read (chunked bodies included) pass it, without reading the
rest. A JSON body nested deeper than ``MAX_JSON_DEPTH`` is answered 422 before a parser
recurses into it, and so is one holding a NUL character (``\\u0000``, which no field
accepts and PostgreSQL cannot store) outside webhook deliveries. A body within bounds is
handed on to the application unchanged.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ci_pool.api.errors import error_response
from ci_pool.core.jsontext import json_depth
from ci_pool.defaults import MAX_JSON_DEPTH, RUNNER_API_PREFIX, RUNNER_BODY_MAX

#: Where local changes are uploaded (``--sync``): raw bytes, bounded by ``sync_max_bytes``.
SYNC_PATH = "/v1/sync"


def streamed(method: str, path: str) -> bool:
    """A runner's artifact or cache upload: its route bounds the body as it streams."""
    if method != "PUT" or not path.startswith(RUNNER_API_PREFIX + "/"):
        return False
    return path.endswith("/artifacts") or path.endswith("/cache/archive")


def limit_for(path: str, max_body: int, sync_max: int | None = None) -> int:
    """Bytes a body to ``path`` may have: a workflow posted whole gets twice the setting,
    a webhook delivery (whole pushes) five times, a sync payload ``sync_max``, a runner's
    call (log chunks, summaries) ``RUNNER_BODY_MAX``."""
    if sync_max is not None and path.rstrip("/") == SYNC_PATH:
        return sync_max
    if path.startswith(RUNNER_API_PREFIX + "/"):
        return max(max_body, RUNNER_BODY_MAX)
    if path.rstrip("/") == "/v1/pipelines":
        return 2 * max_body
    if path.startswith("/v1/hooks/"):
        return 5 * max_body
    return max_body


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: reads each request body up to its limit, then replays it."""

    def __init__(self, app: ASGIApp, max_body: int, sync_max: int | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.sync_max = sync_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS")
            or streamed(scope["method"], scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope["path"], self.max_body, self.sync_max)
        setting = "sync_max_bytes" if limit == self.sync_max else "max_body_bytes"
        too_large = error_response(
            413,
            "too_large",
            f"the request body is over {limit} bytes, the limit for {scope['path']} "
            f"(setting {setting})",
        )
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await too_large(scope, receive, send)
            return
        try:
            body = await _read(receive, limit)
        except _TooLarge:
            await too_large(scope, receive, send)
            return
        problem = _problem(scope["path"], body)
        if problem is not None:
            await error_response(422, "invalid_input", problem, "body")(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _problem(path: str, body: bytes) -> str | None:
    if path.rstrip("/") == SYNC_PATH:
        return None  # bytes, not JSON
    if body and json_depth(body) > MAX_JSON_DEPTH:
        return f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels"
    if not path.startswith("/v1/hooks/") and (b"\x00" in body or b"\\u0000" in body.lower()):
        return "the body holds a NUL character (\\u0000); no field accepts one"
    return None


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client left: what came is handed on; no one reads the answer
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
