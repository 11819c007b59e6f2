"""Job logs: each line to a Redis stream as it happens, and in chunks to the store."""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import redis

from ci_pool import defaults
from ci_pool.store import Store


def stream_key(job_id: str) -> str:
    return defaults.LOG_STREAM_KEY.format(job_id=job_id)


class LogWriter:
    """Splits raw output into lines, publishes them live, and persists them in chunks.

    Thread-safe: the executor writes while the job's monitor thread flushes."""

    def __init__(
        self,
        client: redis.Redis | None,
        store: Store,
        job_id: str,
        attempt: int,
        *,
        flush_interval: float = defaults.LOG_FLUSH_INTERVAL,
        flush_bytes: int = defaults.LOG_FLUSH_BYTES,
    ):
        self.redis = client
        self.store = store
        self.job_id = job_id
        self.attempt = attempt
        self.flush_interval = flush_interval
        self.flush_bytes = flush_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._buffer: list[str] = []
        self._buffered = 0
        self._seq = 0
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self._tail: list[str] = []
        self.redis_failed = False

    def write(self, data: bytes) -> None:
        """Raw output from the job; complete lines go out at once."""
        with self._lock:
            text = self._partial + self._decoder.decode(data)
            *lines, self._partial = text.split("\n")
            for line in lines:
                self._emit(line.removesuffix("\r"))
            self._maybe_flush()

    def line(self, text: str) -> None:
        """A line of ci-pool's own (step markers, errors)."""
        with self._lock:
            for part in text.split("\n"):
                self._emit(part)
            self._maybe_flush()

    def _emit(self, line: str) -> None:
        self._buffer.append(line + "\n")
        self._buffered += len(line) + 1
        self._tail.append(line)
        if len(self._tail) > 50:
            del self._tail[:25]
        if self.redis is not None and not self.redis_failed:
            try:
                self.redis.xadd(
                    stream_key(self.job_id),
                    {"a": str(self.attempt), "t": _now(), "l": line},
                    maxlen=defaults.LOG_STREAM_MAXLEN,
                    approximate=True,
                )
            except redis.RedisError:
                # The store copy is authoritative; a broker hiccup must not fail the build.
                self.redis_failed = True

    def _maybe_flush(self) -> None:
        due = time.monotonic() - self._last_flush >= self.flush_interval
        if self._buffer and (due or self._buffered >= self.flush_bytes):
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._buffer:
            self.store.append_log(self.job_id, self.attempt, self._seq, "".join(self._buffer))
            self._seq += 1
            self._buffer.clear()
            self._buffered = 0
        self._last_flush = time.monotonic()

    def flush(self) -> None:
        """Persist what is buffered (the monitor thread calls this every second)."""
        with self._lock:
            self._flush_locked()

    def tail(self, lines: int = 20) -> str:
        with self._lock:
            return "\n".join(self._tail[-lines:])

    def close(self) -> None:
        """Flush the partial last line, mark the live stream finished, persist the rest."""
        with self._lock:
            rest = self._partial + self._decoder.decode(b"", final=True)
            self._partial = ""
            if rest:
                self._emit(rest)
            self._flush_locked()
            if self.redis is not None and not self.redis_failed:
                try:
                    key = stream_key(self.job_id)
                    self.redis.xadd(key, {"a": str(self.attempt), "t": _now(), "eof": "1"})
                    self.redis.expire(key, defaults.LOG_STREAM_TTL)
                except redis.RedisError:
                    self.redis_failed = True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def follow_stream(
    client: redis.Redis, job_id: str, *, block_ms: int = 1000, last_id: str = "0-0"
) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield (entry id, fields) from a job's live stream; ends at each read's timeout
    so the caller can check the store between blocks."""
    resp: Any = client.xread({stream_key(job_id): last_id}, block=block_ms, count=500)
    for _key, entries in resp or []:
        for entry_id, fields in entries:
            yield (
                _s(entry_id),
                {_s(k): _s(v) for k, v in fields.items()},
            )


def _s(v: bytes | str) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v
