"""A job's live log stream in Redis: its key, and reading it as it grows (the writer is the
worker's LogWriter; readers are ``logs --follow`` and the API's SSE endpoint)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis

from ci_pool.broker.keys import log_stream_key as stream_key

__all__ = ["follow_stream", "stream_key"]


def follow_stream(
    client: redis.Redis, capability: str, job_id: str, *, block_ms: int = 1000, last_id: str = "0-0"
) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield (entry id, fields) from a job's live stream; ends at each read's timeout
    so the caller can check the store between blocks."""
    resp: Any = client.xread({stream_key(capability, job_id): last_id}, block=block_ms, count=500)
    for _key, entries in resp or []:
        for entry_id, fields in entries:
            yield (
                _s(entry_id),
                {_s(k): _s(v) for k, v in fields.items()},
            )


def _s(v: bytes | str) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v
