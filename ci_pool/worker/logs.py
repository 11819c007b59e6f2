"""Job logs: each line to a Redis stream as it happens, and in chunks to the store; the
workflow commands in a step's output (``::add-mask::``, ``::group::``, ``::error::``...)
applied on the way."""

from __future__ import annotations

import codecs
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

import redis

from ci_pool import defaults
from ci_pool.broker.logstream import stream_key
from ci_pool.core.commands import Annotation, CommandReader
from ci_pool.core.masking import Masker
from ci_pool.exceptions import RunnerCutOff
from ci_pool.store.lifecycle import FinalChunk
from ci_pool.worker.runner_store import RunnerStore


class LogWriter:
    """Splits raw output into lines, masks secrets, publishes lines live, and persists
    them in chunks. Over ``max_bytes`` the middle is dropped: the head stays, a visible
    marker says how much was cut, and the last ``max_bytes / 2`` are kept.

    ci-pool's own lines (``line``) may be held for at most ``hold`` seconds while a
    watcher (the job's monitor, through ``on_hold``) is there to release them: lines the
    runner writes back to back then go to the stream in one round trip, at the latest
    when the next step's output starts. A step's own output is never held.

    Thread-safe: the executor writes while the job's monitor thread flushes."""

    def __init__(
        self,
        client: redis.Redis | None,
        store: RunnerStore,
        job_id: str,
        attempt: int,
        *,
        masker: Masker | None = None,
        max_bytes: int = defaults.LOG_MAX_BYTES,
        flush_interval: float = defaults.LOG_FLUSH_INTERVAL,
        flush_bytes: int = defaults.LOG_FLUSH_BYTES,
        debug: bool = False,
        capability: str = "",
        hold: float = defaults.LOG_LIVE_HOLD,
    ):
        self.redis = client
        self.stream = stream_key(capability, job_id)
        self.store = store
        #: The API refused the runner's credential: the log is no longer stored.
        self.cut_off = False
        self.job_id = job_id
        self.attempt = attempt
        self.masker = masker or Masker()
        #: Reads the workflow commands of the job's output (not of ci-pool's own lines).
        self.commands = CommandReader(self.masker, debug=debug)
        self.head_limit = max_bytes // 2
        self.tail_limit = max_bytes - self.head_limit
        self.flush_interval = flush_interval
        self.flush_bytes = flush_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._buffer: list[str] = []
        self._buffered = 0
        self._persisted = 0
        self._tail: deque[str] = deque()
        self._tail_bytes = 0
        self.dropped_bytes = 0
        self._seq = 0
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self._recent: deque[str] = deque(maxlen=50)
        self.redis_failed = False
        self.hold = hold
        #: Called (under the writer's lock; it must not block) when a line starts being
        #: held; without it nothing is held.
        self.on_hold: Callable[[], None] | None = None
        self._held: list[dict[str, str]] = []
        self._held_at = 0.0
        #: The log's commands, packed once (RESP): XADD's fixed arguments, and EXPIRE.
        self._xadd_args = _pack_args({"XADD": self.stream, "MAXLEN": "~"}) + _pack_args(
            {str(defaults.LOG_STREAM_MAXLEN): "*"}
        )
        self._heads: dict[int, bytes] = {}
        self._expire = (
            b"*3\r\n" + _pack_args({"EXPIRE": self.stream}) + _bulk(str(defaults.LOG_STREAM_TTL))
        )

    def write(self, data: bytes) -> None:
        """Raw output from the job; complete lines go out at once."""
        with self._lock:
            text = self._partial + self._decoder.decode(data)
            *lines, self._partial = text.split("\n")
            if len(self._partial) > defaults.LOG_MAX_LINE:
                # A line without end (progress bars): cut it, keeping enough back that a
                # secret not yet whole is seen whole next time.
                keep = max(self.masker.longest, 1)
                cut = self.masker.safe_cut(self._partial, len(self._partial) - keep)
                lines.append(self._partial[:cut])
                self._partial = self._partial[cut:]
            shown: list[str] = []
            for line in lines:
                for piece in self._pieces(line):
                    shown += self.commands.feed(piece.removesuffix("\r"))
            self._emit(shown)
            self._maybe_flush()

    def _pieces(self, line: str) -> list[str]:
        """``line`` in pieces of at most ``LOG_MAX_LINE`` characters, never cut inside a
        secret (each piece is masked on its own)."""
        limit = defaults.LOG_MAX_LINE
        pieces: list[str] = []
        while len(line) > limit:
            cut = self.masker.safe_cut(line, limit)
            if cut <= 0:  # a secret longer than the limit starts the line: keep it whole
                break
            pieces.append(line[:cut])
            line = line[cut:]
        pieces.append(line)
        return pieces

    def line(self, text: str) -> None:
        """A line of ci-pool's own (step markers, errors)."""
        with self._lock:
            self._emit(text.split("\n"), own=True)
            self._maybe_flush()

    def begin_step(self, index: int) -> None:
        """Output from now on is step ``index``'s (its annotations name it). The lines held
        so far go out ahead of its first output, or when their hold is up: a step without
        output (most steps of a short job) then costs no round trip of its own."""
        with self._lock:
            self._emit(self.commands.begin_step(index))

    def held_until(self) -> float | None:
        """When the oldest held line must be published (``time.monotonic``), or None."""
        with self._lock:
            return self._held_at + self.hold if self._held else None

    def release(self, now: float | None = None) -> None:
        """Publish the held lines (with ``now``: only once their time is up)."""
        with self._lock:
            if self._held and (now is None or now >= self._held_at + self.hold):
                self._release_locked()

    def _release_locked(self) -> None:
        if self._held:
            held, self._held = self._held, []
            self._publish(held)

    def end_step(self) -> list[Annotation]:
        """The step's output ended: its last line even without a newline, the end of its
        open group; the annotations it made."""
        with self._lock:
            rest, self._partial = self._partial, ""
            if rest:
                self._emit(self.commands.feed(rest.removesuffix("\r")))
            self._emit(self.commands.end_step())
            return self.commands.take()

    def _emit(self, lines: list[str], *, own: bool = False) -> None:
        if not lines:
            return
        lines = [self.masker.mask(line) for line in lines]
        for line in lines:
            self._keep(line + "\n")
            self._recent.append(line)
        at, attempt = _now(), str(self.attempt)
        entries = [{"a": attempt, "t": at, "l": line} for line in lines]
        if own and self.on_hold is not None and self.hold > 0:
            if not self._held:
                self._held_at = time.monotonic()
                self.on_hold()
            self._held += entries
            return
        if self._held:
            entries = self._held + entries
            self._held = []
        self._publish(entries)

    def _keep(self, text: str) -> None:
        size = len(text.encode())
        if self._persisted + self._buffered + size <= self.head_limit and not self._tail:
            self._buffer.append(text)
            self._buffered += size
            return
        self._tail.append(text)
        self._tail_bytes += size
        while self._tail_bytes > self.tail_limit and len(self._tail) > 1:
            dropped = self._tail.popleft()
            self._tail_bytes -= len(dropped.encode())
            self.dropped_bytes += len(dropped.encode())

    def _publish(self, entries: list[dict[str, str]], *, last: bool = False) -> None:
        """Add ``entries`` to the live stream (``last``: and set its expiry) in one round
        trip, packed here (redis-py's generic packing costs more CPU than the round trip)."""
        if self.redis is None or self.redis_failed:
            return
        packed = [self._xadd_head(len(fields)) + _pack_args(fields) for fields in entries]
        if last:
            packed.append(self._expire)
        for attempt in range(2):
            try:
                self._send(self.redis, packed)
                return
            except (redis.ConnectionError, redis.TimeoutError):
                if attempt:  # one retry on a new connection, as redis-py's own commands do
                    break
            except redis.RedisError:
                break
        # The store copy is authoritative; a broker hiccup must not fail the build.
        self.redis_failed = True

    @staticmethod
    def _send(client: redis.Redis, packed: list[bytes]) -> None:
        """Send the packed commands on one pooled connection and read every reply."""
        pool = client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(packed)])  # type: ignore[no-untyped-call]
            for _ in packed:
                conn.read_response()
        except BaseException:
            # Replies may be left unread: the connection is never reused.
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(conn)

    def _xadd_head(self, fields: int) -> bytes:
        """``XADD <stream> MAXLEN ~ <n> *`` for an entry of ``fields`` fields, packed."""
        head = self._heads.get(fields)
        if head is None:
            head = self._heads[fields] = b"*%d\r\n" % (6 + 2 * fields) + self._xadd_args
        return head

    def _maybe_flush(self) -> None:
        due = time.monotonic() - self._last_flush >= self.flush_interval
        if self._buffer and (due or self._buffered >= self.flush_bytes):
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._buffer:
            if not self.cut_off:
                self.store_chunk(FinalChunk(self._seq, "".join(self._buffer)))
            self._seq += 1
            self._persisted += self._buffered
            self._buffer.clear()
            self._buffered = 0
        self._last_flush = time.monotonic()

    def store_chunk(self, chunk: FinalChunk) -> None:
        """Store one chunk of the log; once the API refuses the runner, nothing more is."""
        try:
            self.store.append_log(self.job_id, self.attempt, chunk.seq, chunk.data)
        except RunnerCutOff:
            # Revoked: nothing of this attempt can be recorded any more; the attempt is
            # stopped and its outcome refused the same way.
            self.cut_off = True

    def flush(self) -> None:
        """Persist what is buffered (the monitor thread calls this every second)."""
        with self._lock:
            self._flush_locked()

    def tail(self, lines: int = 20) -> str:
        with self._lock:
            return "\n".join(list(self._recent)[-lines:])

    def close(self) -> None:
        """Flush the partial last line, persist the kept tail behind the truncation
        marker, and mark the live stream finished."""
        chunk = self.close_with_chunk()
        if chunk is not None:
            self.store_chunk(chunk)

    def close_with_chunk(self) -> FinalChunk | None:
        """``close``, except that the last chunk is returned for the caller to store (with
        the attempt's outcome, in one transaction) instead of being stored here."""
        with self._lock:
            rest = self._partial + self._decoder.decode(b"", final=True)
            self._partial = ""
            if rest:
                self._emit(self.commands.feed(rest))
            if self.dropped_bytes:
                self._buffer.append(
                    f"##[ci-pool] log truncated: {self.dropped_bytes} bytes over the "
                    f"{self.head_limit + self.tail_limit} byte cap were dropped here; "
                    "the last part of the log follows\n"
                )
            self._buffer.extend(self._tail)
            self._tail.clear()
            chunk = None
            if self._buffer and not self.cut_off:
                chunk = FinalChunk(self._seq, "".join(self._buffer))
            if self._buffer:
                self._seq += 1
                self._persisted += self._buffered
                self._buffer.clear()
                self._buffered = 0
            held, self._held = self._held, []
            self.on_hold = None  # nothing is held after the end: nobody would release it
            self._publish([*held, {"a": str(self.attempt), "t": _now(), "eof": "1"}], last=True)
            return chunk


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _bulk(value: str) -> bytes:
    data = value.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _pack_args(fields: dict[str, str]) -> bytes:
    """Keys and values of ``fields`` in order, as RESP bulk strings."""
    return b"".join(_bulk(k) + _bulk(v) for k, v in fields.items())
