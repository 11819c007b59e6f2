"""The runner registry in Redis (fakeredis): heartbeat, live(), unregister, expiry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import fakeredis
import pytest

from ci_pool import defaults
from ci_pool.broker.runners import RunnerInfo, RunnerRegistry


@pytest.fixture
def client() -> Iterator[fakeredis.FakeRedis]:
    c = fakeredis.FakeRedis()
    yield c
    c.close()


def info(runner_id: str = "linux@host1", capability: str = "linux", **kw: object) -> RunnerInfo:
    base = RunnerInfo(
        runner_id=runner_id,
        capability=capability,
        queue=capability,
        host="host1",
        pid=1234,
        concurrency=2,
        version="0.1.0",
        started_at=1_700_000_000.25,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_heartbeat_registers(client: fakeredis.FakeRedis) -> None:
    reg = RunnerRegistry(client, ttl=30)
    before = time.time()
    reg.heartbeat(info(extra={"docker": "27.0"}))
    [got] = reg.live()
    assert got.runner_id == "linux@host1"
    assert (got.capability, got.queue, got.host, got.pid, got.concurrency, got.version) == (
        "linux",
        "linux",
        "host1",
        1234,
        2,
        "0.1.0",
    )
    assert got.started_at == 1_700_000_000.25
    assert got.extra == {"docker": "27.0"}
    assert before <= got.last_seen <= time.time()
    assert client.exists(defaults.RUNNER_KEY.format(runner_id="linux@host1"))
    ttl_ms = client.pttl(defaults.RUNNER_KEY.format(runner_id="linux@host1"))
    assert 0 < ttl_ms <= 30_000


def test_repeated_heartbeat_refreshes_one_entry(client: fakeredis.FakeRedis) -> None:
    reg = RunnerRegistry(client, ttl=30)
    reg.heartbeat(info())
    first = reg.live()[0].last_seen
    time.sleep(0.01)
    reg.heartbeat(info(concurrency=4))
    [got] = reg.live()
    assert got.concurrency == 4
    assert got.last_seen > first


def test_live_filters_by_capability(client: fakeredis.FakeRedis) -> None:
    reg = RunnerRegistry(client, ttl=30)
    reg.heartbeat(info("linux@a", "linux"))
    reg.heartbeat(info("linux@b", "linux"))
    reg.heartbeat(info("android@a", "android"))
    assert [r.runner_id for r in reg.live("linux")] == ["linux@a", "linux@b"]
    assert [r.runner_id for r in reg.live("android")] == ["android@a"]
    assert reg.live("iso") == []
    assert {r.runner_id for r in reg.live()} == {"linux@a", "linux@b", "android@a"}


def test_unregister_removes(client: fakeredis.FakeRedis) -> None:
    reg = RunnerRegistry(client, ttl=30)
    reg.heartbeat(info("linux@a"))
    reg.heartbeat(info("linux@b"))
    reg.unregister("linux@a")
    assert [r.runner_id for r in reg.live()] == ["linux@b"]
    assert not client.exists(defaults.RUNNER_KEY.format(runner_id="linux@a"))
    assert not client.exists(defaults.RUNNER_KEY.format(runner_id="linux@a"))
    reg.unregister("never-registered")  # no error


def test_expired_runner_disappears(client: fakeredis.FakeRedis) -> None:
    short = RunnerRegistry(client, ttl=0.1)
    long = RunnerRegistry(client, ttl=30)
    short.heartbeat(info("linux@silent"))
    long.heartbeat(info("linux@alive"))
    assert {r.runner_id for r in long.live()} == {"linux@silent", "linux@alive"}
    time.sleep(0.25)
    assert [r.runner_id for r in long.live()] == ["linux@alive"]
    # The silent runner's key expired: it is gone from Redis too.
    assert not client.exists(defaults.RUNNER_KEY.format(runner_id="linux@silent"))
    assert client.exists(defaults.RUNNER_KEY.format(runner_id="linux@alive"))


def test_heartbeat_keeps_a_runner_alive(client: fakeredis.FakeRedis) -> None:
    reg = RunnerRegistry(client, ttl=0.3)
    reg.heartbeat(info())
    for _ in range(3):
        time.sleep(0.15)
        reg.heartbeat(info())
    assert [r.runner_id for r in reg.live()] == ["linux@host1"]


def test_bytes_and_text_clients_agree() -> None:
    server = fakeredis.FakeServer()
    raw = fakeredis.FakeRedis(server=server)
    text = fakeredis.FakeRedis(server=server, decode_responses=True)
    try:
        RunnerRegistry(raw, ttl=30).heartbeat(info())
        [got] = RunnerRegistry(text, ttl=30).live()
        assert got == RunnerRegistry(raw, ttl=30).live()[0]
    finally:
        raw.close()
        text.close()


def test_runner_info_round_trip() -> None:
    original = info(last_seen=1_700_000_100.5, extra={"a": [1, 2]})
    assert RunnerInfo.from_redis(original.to_redis()) == original


def test_a_name_is_held_by_one_process_and_freed_by_its_exit(client: fakeredis.FakeRedis) -> None:
    import os
    import subprocess

    reg = RunnerRegistry(client, ttl=30)
    assert reg.claim("build1-linux-1", "build1", 100) is None
    assert reg.claim("build1-linux-1", "build1", 100) is None  # its own name again
    assert reg.claim("build1-linux-1", "build2", 200) == "build1|100"  # another host
    # A live process of this host holds it: refused, with or without take-over.
    me = os.getpid()
    assert reg.claim("here-linux-1", "here", me) is None
    assert reg.claim("here-linux-1", "here", me + 1) == f"here|{me}"
    # Its process is gone (a crash): a fixed name is taken over, a default one is not.
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert reg.claim("here-linux-2", "here", dead.pid) is None
    assert reg.claim("here-linux-2", "here", me, take_over=False) == f"here|{dead.pid}"
    assert reg.claim("here-linux-2", "here", me) is None
    # The heartbeat keeps the hold; a clean exit frees the name.
    reg.heartbeat(info("here-linux-2", host="here", pid=me))
    assert reg.holder("here-linux-2") == f"here|{me}"
    reg.unregister("here-linux-2")
    assert reg.holder("here-linux-2") == ""
    assert reg.claim("here-linux-2", "elsewhere", 1) is None


def test_an_entry_written_by_hand_is_skipped_not_fatal(client: fakeredis.FakeRedis) -> None:
    """A runner's Redis user may write its own registry entries: garbage, or an entry that
    names another runner, is ignored by every reader instead of breaking it."""
    reg = RunnerRegistry(client, ttl=30)
    reg.heartbeat(info("good-linux-1"))
    client.hset(defaults.RUNNER_KEY.format(runner_id="bad-linux-1"), "x", "1")
    spoof = info("victim-linux-1").to_redis()
    client.hset(defaults.RUNNER_KEY.format(runner_id="bad-linux-2"), mapping=spoof)
    client.set(defaults.RUNNER_SEEN_KEY.format(runner_id="bad-linux-3"), "not json")
    client.set(defaults.RUNNER_SEEN_KEY.format(runner_id="bad-linux-4"), "[1, 2]")
    assert [r.runner_id for r in reg.live()] == ["good-linux-1"]
    assert reg.lost() == []


def test_a_killed_process_not_yet_reaped_frees_its_name(client: fakeredis.FakeRedis) -> None:
    import os
    import signal
    import socket
    import subprocess

    host = socket.gethostname()
    proc = subprocess.Popen(["sleep", "60"])
    try:
        registry = RunnerRegistry(client, ttl=30)
        assert registry.claim("h-linux-1", host, proc.pid) is None
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        stat = Path(f"/proc/{proc.pid}/stat")
        while stat.read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # A zombie (its parent has not waited for it yet) runs no more: a restart takes over.
        assert registry.claim("h-linux-1", host, os.getpid()) is None
    finally:
        proc.kill()
        proc.wait()
