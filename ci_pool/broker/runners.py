"""Runner registry in Redis: each worker registers, heartbeats, and expires when silent."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from ci_pool import defaults
from ci_pool.broker.keys import (
    RUNNER_KEYS_MATCH,
    SEEN_KEYS_MATCH,
    drain_key,
    name_key,
    runner_key,
    runner_queue,
    seen_key,
)

__all__ = ["RunnerInfo", "RunnerRegistry", "drain_key"]


@dataclass(frozen=True, slots=True)
class RunnerInfo:
    """What a worker says about itself."""

    runner_id: str
    capability: str
    queue: str
    host: str
    pid: int
    concurrency: int
    version: str
    started_at: float
    last_seen: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def node(self) -> str:
        """The Celery node name control commands go to (``<name>@<host>-<hex>``)."""
        return str(self.extra.get("node") or self.runner_id)

    @property
    def queues(self) -> tuple[str, str]:
        """The capability's queue and the runner's own (jobs sent to it by name)."""
        return self.queue, runner_queue(self.queue, self.runner_id)

    def to_redis(self) -> dict[str, str]:
        return {
            "runner_id": self.runner_id,
            "capability": self.capability,
            "queue": self.queue,
            "host": self.host,
            "pid": str(self.pid),
            "concurrency": str(self.concurrency),
            "version": self.version,
            "started_at": repr(self.started_at),
            "last_seen": repr(self.last_seen),
            "extra": json.dumps(self.extra, sort_keys=True),
        }

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> RunnerInfo:
        return cls(
            runner_id=raw["runner_id"],
            capability=raw["capability"],
            queue=raw["queue"],
            host=raw["host"],
            pid=int(raw["pid"]),
            concurrency=int(raw["concurrency"]),
            version=raw["version"],
            started_at=float(raw["started_at"]),
            last_seen=float(raw["last_seen"]),
            extra=json.loads(raw.get("extra") or "{}"),
        )


#: How long a runner's last registration is kept after it was last heard from.
SEEN_KEEP = 86400


def _gone(holder: str, host: str) -> bool:
    """Whether ``holder`` ("<host>|<pid>") is a process of this host that no longer runs."""
    held_host, _, pid = holder.rpartition("|")
    if held_host != host or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """A killed process its parent has not reaped yet (a restart can come first): it runs
    no more, so its name is free."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


class RunnerRegistry:
    """Registration hashes with a TTL; a runner that stops heartbeating disappears. Each
    runner writes only keys that carry its name (its Redis user may touch no other)."""

    def __init__(self, client: redis.Redis, ttl: float = defaults.RUNNER_TTL):
        self.redis = client
        self.ttl = ttl

    def claim(self, runner_id: str, host: str, pid: int, *, take_over: bool = True) -> str | None:
        """Take ``runner_id`` for the process ``pid`` on ``host``: None when it is now
        this process's, else who holds it ("<host>|<pid>"). With ``take_over``, a name
        held by a process of this host that is gone (a crash, then a restart) is taken;
        without, it stays the lost runner's until its hold expires."""
        key, me = name_key(runner_id), f"{host}|{pid}"
        for _ in range(3):
            held = self.holder(runner_id)
            if held and held != me and not (take_over and _gone(held, host)):
                return held
            if held and held != me:  # its process is gone: the name is free again
                self.redis.delete(key, runner_key(runner_id))
            if held == me or self.redis.set(key, me, nx=True, px=int(self.ttl * 1000)):
                return None
        return self.holder(runner_id) or None

    def holder(self, runner_id: str) -> str:
        """Who holds a name ("<host>|<pid>"), or a live registration of it by anyone."""
        held = _text(self.redis.get(name_key(runner_id)) or b"")
        if held:
            return held
        raw = self.redis.hgetall(runner_key(runner_id))
        if raw:
            info = {_text(k): _text(v) for k, v in raw.items()}
            return f"{info.get('host', '?')}|{info.get('pid', '?')}"
        return ""

    def heartbeat(self, info: RunnerInfo) -> None:
        """Register or refresh a runner (and its hold on its name)."""
        key = runner_key(info.runner_id)
        data = info.to_redis()
        data["last_seen"] = repr(time.time())
        pipe = self.redis.pipeline()
        pipe.set(name_key(info.runner_id), f"{info.host}|{info.pid}", px=int(self.ttl * 1000))
        pipe.hset(key, mapping=data)  # type: ignore[arg-type]
        pipe.pexpire(key, int(self.ttl * 1000))
        pipe.set(seen_key(info.runner_id), json.dumps(data), ex=SEEN_KEEP)
        pipe.execute()

    def unregister(self, runner_id: str) -> None:
        pipe = self.redis.pipeline()
        pipe.delete(runner_key(runner_id), name_key(runner_id))
        pipe.delete(seen_key(runner_id))  # a clean exit is not a loss
        pipe.execute()

    def forget(self, runner_id: str) -> None:
        """Drop every trace of a runner (revoked: it shows as gone, not as lost)."""
        self.redis.delete(
            runner_key(runner_id), seen_key(runner_id), drain_key(runner_id), name_key(runner_id)
        )

    def lost(self, keep: float = 86400) -> list[RunnerInfo]:
        """Runners that stopped heartbeating without unregistering (killed, host lost),
        within the last ``keep`` seconds; older ones are forgotten."""
        live = {r.runner_id for r in self.live()}
        found = []
        keys = sorted(self.redis.scan_iter(match=SEEN_KEYS_MATCH, count=500))
        for key, raw in zip(keys, self.redis.mget(keys) if keys else [], strict=True):
            if raw is None:
                continue
            info = _entry(key, raw, json.loads, seen_key)
            if info is None or info.runner_id in live:
                continue
            if time.time() - info.last_seen > keep:
                self.redis.delete(key)
                continue
            found.append(info)
        return sorted(found, key=lambda r: r.runner_id)

    def live(self, capability: str | None = None) -> list[RunnerInfo]:
        """Runners heard from within the TTL, optionally of one capability."""
        keys = sorted(self.redis.scan_iter(match=RUNNER_KEYS_MATCH, count=500))
        pipe = self.redis.pipeline()
        for key in keys:
            pipe.hgetall(key)
        found: list[RunnerInfo] = []
        for key, raw in zip(keys, pipe.execute() if keys else [], strict=True):
            if not raw:  # expired between the scan and the read
                continue
            info = _entry(key, raw, _fields, runner_key)
            if info is not None and (capability is None or info.capability == capability):
                found.append(info)
        return found


def _fields(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _entry(
    key: bytes | str, raw: Any, decode: Callable[[Any], Any], key_of: Callable[[str], str]
) -> RunnerInfo | None:
    """A registry entry; None when it is malformed or speaks for another runner than the one
    its key names. A runner's Redis user writes its own entries: one written by hand must
    not break the readers (status, targeting, the reaper) nor pass for another runner."""
    try:
        info = RunnerInfo.from_redis(decode(raw))
    except (KeyError, ValueError, TypeError, AttributeError):
        return None
    return info if key_of(info.runner_id) == _text(key) else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
