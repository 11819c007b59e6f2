"""LogWriter: line splitting, UTF-8 reassembly, the live Redis stream and the stored log."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import fakeredis
import pytest
import redis
from sqlalchemy import func, select

from ci_pool import defaults
from ci_pool.broker.logstream import follow_stream, stream_key
from ci_pool.core.masking import Masker
from ci_pool.embedded import free_port
from ci_pool.store import LogChunk, Store
from ci_pool.worker.logs import LogWriter


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path}/s.db")
    s.init_schema()
    yield s
    s.close()


@pytest.fixture
def client() -> Iterator[fakeredis.FakeRedis]:
    c = fakeredis.FakeRedis()
    yield c
    c.close()


@pytest.fixture
def job_id(store: Store) -> str:
    job = store.create_job(
        name="build",
        capability="linux",
        queue="linux",
        repo="https://git.example.com/org/app.git",
        ref="main",
        steps=[{"name": "run", "run": "make"}],
        env={},
        labels=["linux"],
        timeout_s=60,
        max_attempts=3,
    )
    return job.id


@pytest.fixture
def writer(client: fakeredis.FakeRedis, store: Store, job_id: str) -> LogWriter:
    # A long interval and a large size: nothing is persisted before flush()/close().
    return LogWriter(client, store, job_id, 1, flush_interval=3600, flush_bytes=1 << 20)


def entries(client: redis.Redis, job_id: str) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _id, fields in client.xrange(stream_key("", job_id))
    ]


def lines(client: redis.Redis, job_id: str) -> list[str]:
    return [e["l"] for e in entries(client, job_id) if "l" in e]


def test_complete_lines_go_out_at_once(writer: LogWriter, client: redis.Redis, job_id: str) -> None:
    writer.write(b"one\ntwo\nthr")
    assert lines(client, job_id) == ["one", "two"]
    writer.write(b"ee\n")
    assert lines(client, job_id) == ["one", "two", "three"]


def test_lines_split_across_writes_are_reassembled(
    writer: LogWriter, client: redis.Redis, store: Store, job_id: str
) -> None:
    for piece in (b"hel", b"lo wo", b"rld\nsec", b"ond", b"\n", b"\n", b"third\n"):
        writer.write(piece)
    writer.close()
    assert lines(client, job_id) == ["hello world", "second", "", "third"]
    assert store.read_log(job_id) == "hello world\nsecond\n\nthird\n"


def test_one_byte_at_a_time(
    writer: LogWriter, client: redis.Redis, store: Store, job_id: str
) -> None:
    text = "ñ line\n日本 line — ok\n🚀 done\n"
    for b in text.encode():
        writer.write(bytes([b]))
    writer.close()
    assert lines(client, job_id) == ["ñ line", "日本 line — ok", "🚀 done"]
    assert store.read_log(job_id) == text


def test_utf8_character_split_across_writes(
    writer: LogWriter, client: redis.Redis, store: Store, job_id: str
) -> None:
    data = "née €5 🚀\n".encode()
    euro = data.index("€".encode())
    rocket = data.index("🚀".encode())
    writer.write(data[: euro + 1])
    writer.write(data[euro + 1 : rocket + 2])
    writer.write(data[rocket + 2 :])
    writer.close()
    assert lines(client, job_id) == ["née €5 🚀"]
    assert store.read_log(job_id) == "née €5 🚀\n"
    assert "\ufffd" not in store.read_log(job_id)


def test_invalid_utf8_is_replaced(writer: LogWriter, client: redis.Redis, job_id: str) -> None:
    writer.write(b"bad \xff byte\n")
    writer.write(b"cut \xe2\x82")  # an incomplete character at the very end
    writer.close()
    assert lines(client, job_id) == ["bad \ufffd byte", "cut \ufffd"]


def test_crlf_line_endings(writer: LogWriter, client: redis.Redis, job_id: str) -> None:
    writer.write(b"a\r\nb\r")
    writer.write(b"\nc\n")
    assert lines(client, job_id) == ["a", "b", "c"]


def test_partial_last_line_flushed_on_close(
    writer: LogWriter, client: redis.Redis, store: Store, job_id: str
) -> None:
    writer.write(b"first\nno newline at the end")
    assert lines(client, job_id) == ["first"]
    writer.close()
    assert lines(client, job_id) == ["first", "no newline at the end"]
    assert store.read_log(job_id) == "first\nno newline at the end\n"


def test_stream_has_one_entry_per_line_and_an_eof(
    writer: LogWriter, client: redis.Redis, job_id: str
) -> None:
    writer.write(b"1\n2\n3")
    writer.line("##[ci-pool] done")
    writer.close()
    got = entries(client, job_id)
    assert len(got) == 5
    assert [e["l"] for e in got[:-1]] == ["1", "2", "##[ci-pool] done", "3"]
    assert all(e["a"] == "1" and e["t"] for e in got)
    assert got[-1]["eof"] == "1"
    assert "l" not in got[-1]
    ttl = client.ttl(stream_key("", job_id))
    assert 0 < ttl <= defaults.LOG_STREAM_TTL


def test_empty_log(writer: LogWriter, client: redis.Redis, store: Store, job_id: str) -> None:
    writer.close()
    got = entries(client, job_id)
    assert len(got) == 1 and got[0]["eof"] == "1"
    assert store.read_log(job_id) == ""


def test_read_log_returns_the_whole_text(client: redis.Redis, store: Store, job_id: str) -> None:
    # Small flush_bytes: the log is stored in several chunks.
    w = LogWriter(client, store, job_id, 1, flush_interval=3600, flush_bytes=20)
    expected = "".join(f"line {i:03d} {'x' * (i % 7)}\n" for i in range(200))
    data = expected.encode()
    for i in range(0, len(data), 37):
        w.write(data[i : i + 37])
    w.close()
    assert store.read_log(job_id) == expected
    assert store.read_log(job_id, attempt=1) == expected
    assert lines(client, job_id) == expected.splitlines()
    with store.session() as s:
        chunks = s.scalar(select(func.count()).select_from(LogChunk))
    assert chunks is not None and chunks > 10


def test_nothing_persisted_before_flush(writer: LogWriter, store: Store, job_id: str) -> None:
    writer.write(b"a\nb\n")
    assert store.read_log(job_id) == ""
    writer.flush()
    assert store.read_log(job_id) == "a\nb\n"
    writer.write(b"c\n")
    writer.close()
    assert store.read_log(job_id) == "a\nb\nc\n"


def test_flush_interval_zero_persists_each_write(
    client: redis.Redis, store: Store, job_id: str
) -> None:
    w = LogWriter(client, store, job_id, 1, flush_interval=0)
    w.write(b"a\n")
    assert store.read_log(job_id) == "a\n"
    w.close()


def test_attempts_are_kept_apart(client: redis.Redis, store: Store, job_id: str) -> None:
    w1 = LogWriter(client, store, job_id, 1, flush_interval=3600)
    w1.write(b"first attempt\n")
    w1.close()
    w2 = LogWriter(client, store, job_id, 2, flush_interval=3600)
    w2.write(b"second attempt\n")
    w2.close()
    assert store.read_log(job_id) == "second attempt\n"
    assert store.read_log(job_id, attempt=1) == "first attempt\n"
    assert [e["a"] for e in entries(client, job_id)] == ["1", "1", "2", "2"]


def test_line_splits_on_newlines(writer: LogWriter, client: redis.Redis, job_id: str) -> None:
    writer.line("a\nb")
    assert lines(client, job_id) == ["a", "b"]


def test_tail(writer: LogWriter) -> None:
    writer.write("".join(f"{i}\n" for i in range(100)).encode())
    assert writer.tail(3) == "97\n98\n99"
    assert writer.tail().splitlines() == [str(i) for i in range(80, 100)]


def test_without_redis_the_store_still_gets_the_log(store: Store, job_id: str) -> None:
    w = LogWriter(None, store, job_id, 1, flush_interval=3600)
    w.write(b"x\ny")
    w.close()
    assert store.read_log(job_id) == "x\ny\n"


def test_broken_redis_does_not_fail_the_build(store: Store, job_id: str) -> None:
    # A real client pointed at a port nothing listens on: every command fails to connect.
    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    w = LogWriter(dead, store, job_id, 1, flush_interval=3600)
    w.write(b"a\nb\n")
    w.close()
    assert w.redis_failed
    assert store.read_log(job_id) == "a\nb\n"


def test_an_error_reply_stops_the_live_log_and_leaves_the_client_usable(
    client: fakeredis.FakeRedis, store: Store, job_id: str
) -> None:
    # The stream's key holds a string: every XADD of the batch is refused (WRONGTYPE).
    client.set(stream_key("", job_id), "not a stream")
    w = LogWriter(client, store, job_id, 1, flush_interval=3600)
    w.write(b"a\nb\n")
    w.close()
    assert w.redis_failed
    assert store.read_log(job_id) == "a\nb\n"
    # No reply of the refused batch is left to be read as the answer to the next command.
    assert client.get(stream_key("", job_id)) == b"not a stream"
    assert client.ping() is True


def test_follow_stream(writer: LogWriter, client: redis.Redis, job_id: str) -> None:
    writer.write(b"a\nb\n")
    writer.close()
    got = list(follow_stream(client, "", job_id, block_ms=10))
    assert [f.get("l") for _id, f in got] == ["a", "b", None]
    assert got[-1][1]["eof"] == "1"
    last = got[0][0]
    assert [
        f.get("l") for _id, f in follow_stream(client, "", job_id, block_ms=10, last_id=last)
    ] == [
        "b",
        None,
    ]


# -- secrets and the size cap ------------------------------------------------------------

SECRET = "hunter2-Tok/en+42"


def test_secret_masked_in_plain_base64_and_url_forms_even_split_across_writes(
    client: redis.Redis, store: Store, job_id: str
) -> None:
    w = LogWriter(client, store, job_id, 1, masker=Masker([SECRET]), flush_interval=3600)
    b64 = base64.b64encode(f"user:{SECRET}".encode()).decode()
    url = quote(SECRET, safe="")
    text = f"plain {SECRET} b64 {b64} url https://u:{url}@h/ plus {quote_plus(SECRET)}\n"
    raw = text.encode()
    for i in range(0, len(raw), 3):  # three bytes at a time: every secret is split
        w.write(raw[i : i + 3])
    w.close()
    stored = store.read_log(job_id)
    live = "\n".join(lines(client, job_id))
    for out in (stored, live):
        assert SECRET not in out
        assert b64 not in out and base64.b64encode(SECRET.encode()).decode()[:8] not in out
        assert quote(SECRET, safe="") not in out and quote_plus(SECRET) not in out
        assert out.count("***") == 4


def test_multiline_secret_masked_line_by_line(
    client: redis.Redis, store: Store, job_id: str
) -> None:
    key = "-----BEGIN KEY-----\nAAAAB3NzaC1yc2E\n-----END KEY-----"
    w = LogWriter(client, store, job_id, 1, masker=Masker([key]))
    w.write(f"{key}\n".encode())
    w.close()
    assert "AAAAB3NzaC1yc2E" not in store.read_log(job_id)


def test_short_values_are_not_masked() -> None:
    assert Masker(["ab"]).mask("abc ab") == "abc ab"


def test_over_the_cap_the_middle_is_dropped_behind_a_marker(
    client: redis.Redis, store: Store, job_id: str
) -> None:
    w = LogWriter(client, store, job_id, 1, max_bytes=1000, flush_interval=0)
    for i in range(500):
        w.write(f"line {i:04d}\n".encode())
    w.close()
    stored = store.read_log(job_id)
    assert len(stored.encode()) < 1000 + 200  # the cap plus the marker line
    got = stored.splitlines()
    assert got[0] == "line 0000"
    assert got[-1] == "line 0499"
    marker = [ln for ln in got if ln.startswith("##[ci-pool] log truncated")]
    assert len(marker) == 1 and "bytes over the 1000 byte cap" in marker[0]
    # The live stream saw every line.
    assert len(lines(client, job_id)) == 500


@pytest.mark.parametrize("into", [1, 3, 10])
def test_a_secret_straddling_the_long_line_cut_is_masked(
    client: fakeredis.FakeRedis, store: Store, job_id: str, into: int
) -> None:
    """Masking happens before a line without end is cut at LOG_MAX_LINE: a secret that a
    cut would split is kept whole on one side and masked."""
    secret = "straddling-Secret-value"
    writer = LogWriter(
        client, store, job_id, 1, masker=Masker([secret]), flush_interval=3600, flush_bytes=1 << 20
    )
    total = defaults.LOG_MAX_LINE + 10
    cut = total - writer.masker.longest  # where a line without end is cut
    start = cut - into
    text = "x" * start + secret
    text += "y" * (total - len(text))
    writer.write(text.encode())
    writer.write(b"\n")
    writer.close()
    stored = store.read_log(job_id)
    assert stored.count("\n") == 2  # the line was cut in two
    assert secret not in stored.replace("\n", "")
    assert secret[:into] not in stored and "***" in stored
    live = "".join(lines(client, job_id))
    assert secret not in live


@pytest.mark.parametrize("chunk", [1 << 20, 4096])
def test_a_long_line_is_cut_whether_its_end_comes_in_the_same_read_or_later(
    client: fakeredis.FakeRedis, store: Store, job_id: str, chunk: int
) -> None:
    """A busy runner may read a whole long line, newline included, at once: it is cut the
    same as when it arrives in pieces, and no cut splits a secret."""
    secret = "back-to-back-Secret"
    writer = LogWriter(
        client, store, job_id, 1, masker=Masker([secret]), flush_interval=3600, flush_bytes=1 << 20
    )
    copies = 3 * defaults.LOG_MAX_LINE // len(secret)
    data = (secret * copies + "\n").encode()
    for i in range(0, len(data), chunk):
        writer.write(data[i : i + chunk])
    writer.close()
    stored = store.read_log(job_id).splitlines()
    assert len(stored) >= 3
    assert all(len(ln) <= defaults.LOG_MAX_LINE for ln in stored)
    assert "".join(stored) == "***" * copies


def test_a_mask_over_part_of_a_secret_cannot_leave_the_rest_readable() -> None:
    """Leftmost-first replacement would turn ``Zs3cre`` + secret into ``***t/Token...``."""
    secret = "s3cret/Token+for-tests"
    masker = Masker([secret])
    masker.add("Z" + secret[:5])
    masker.add(secret[5:] + "tail")
    assert masker.mask(f"one Z{secret}") == "one ***"
    assert masker.mask(f"two {secret}tail") == "two ***"
    assert masker.mask(secret * 3) == "*********"  # back to back: one mask each
    assert masker.safe_cut(f"ab Z{secret}", 6) == 3


def test_own_lines_are_held_until_output_then_go_out_in_order(
    writer: LogWriter, client: redis.Redis, store: Store, job_id: str
) -> None:
    woken: list[int] = []
    writer.on_hold = lambda: woken.append(1)
    writer.line("##[ci-pool] job starts")
    writer.line("##[ci-pool] checkout")
    assert lines(client, job_id) == []  # held, and the watcher told once
    assert woken == [1]
    assert writer.held_until() is not None
    writer.begin_step(1)
    assert lines(client, job_id) == []  # a step starting sends nothing by itself
    writer.write(b"first output\n")  # output never overtakes a held line
    assert lines(client, job_id) == [
        "##[ci-pool] job starts",
        "##[ci-pool] checkout",
        "first output",
    ]
    assert writer.held_until() is None
    writer.line("##[step] 1 exit 0")
    writer.write(b"late output\n")
    assert lines(client, job_id)[3:] == ["##[step] 1 exit 0", "late output"]
    assert woken == [1, 1]


def test_a_step_without_output_sends_its_lines_with_the_end_of_the_log(
    writer: LogWriter, client: redis.Redis, store: Store, job_id: str
) -> None:
    sent: list[int] = []
    publish = writer._publish

    def counting(entries: list[dict[str, str]], *, last: bool = False) -> None:
        sent.append(len(entries))
        publish(entries, last=last)

    writer._publish = counting  # type: ignore[method-assign]
    writer.on_hold = lambda: None
    writer.line("##[ci-pool] job starts")
    writer.line("##[step] 1 true")
    writer.begin_step(1)
    writer.end_step()
    writer.line("##[step] 1 exit 0 in 0.00s")
    writer.line("##[ci-pool] succeeded")
    writer.close()
    assert lines(client, job_id) == [
        "##[ci-pool] job starts",
        "##[step] 1 true",
        "##[step] 1 exit 0 in 0.00s",
        "##[ci-pool] succeeded",
    ]
    assert sent == [5]  # one round trip: the four lines and the end marker


def test_held_lines_go_out_when_their_time_is_up_or_at_close(
    client: redis.Redis, store: Store, job_id: str
) -> None:
    w = LogWriter(client, store, job_id, 1, flush_interval=3600, hold=0.05)
    w.on_hold = lambda: None
    w.line("first")
    due = w.held_until()
    assert due is not None
    w.release(due - 0.04)  # not yet
    assert lines(client, job_id) == []
    w.release(due)
    assert lines(client, job_id) == ["first"]
    w.line("second")
    chunk = w.close_with_chunk()
    got = entries(client, job_id)
    assert [e.get("l") for e in got] == ["first", "second", None]
    assert got[-1]["eof"] == "1"
    # The last chunk is handed back to go with the outcome, not stored here.
    assert chunk is not None and (chunk.seq, chunk.data) == (0, "first\nsecond\n")
    assert store.read_log(job_id) == ""
