"""Runner registry in Redis: each worker registers, heartbeats, and expires when silent."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from ci_pool import defaults
from ci_pool.broker.keys import (
    RUNNER_KEYS_MATCH,
    SEEN_KEYS_MATCH,
    drain_key,
    runner_key,
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


class RunnerRegistry:
    """Registration hashes with a TTL; a runner that stops heartbeating disappears. Each
    runner writes only keys that carry its name (its Redis user may touch no other)."""

    def __init__(self, client: redis.Redis, ttl: float = defaults.RUNNER_TTL):
        self.redis = client
        self.ttl = ttl

    def heartbeat(self, info: RunnerInfo) -> None:
        """Register or refresh a runner."""
        key = runner_key(info.runner_id)
        data = info.to_redis()
        data["last_seen"] = repr(time.time())
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping=data)  # type: ignore[arg-type]
        pipe.pexpire(key, int(self.ttl * 1000))
        pipe.set(seen_key(info.runner_id), json.dumps(data), ex=SEEN_KEEP)
        pipe.execute()

    def unregister(self, runner_id: str) -> None:
        pipe = self.redis.pipeline()
        pipe.delete(runner_key(runner_id))
        pipe.delete(seen_key(runner_id))  # a clean exit is not a loss
        pipe.execute()

    def forget(self, runner_id: str) -> None:
        """Drop every trace of a runner (revoked: it shows as gone, not as lost)."""
        self.redis.delete(runner_key(runner_id), seen_key(runner_id), drain_key(runner_id))

    def lost(self, keep: float = 86400) -> list[RunnerInfo]:
        """Runners that stopped heartbeating without unregistering (killed, host lost),
        within the last ``keep`` seconds; older ones are forgotten."""
        live = {r.runner_id for r in self.live()}
        found = []
        keys = sorted(self.redis.scan_iter(match=SEEN_KEYS_MATCH, count=500))
        for key, raw in zip(keys, self.redis.mget(keys) if keys else [], strict=True):
            if raw is None:
                continue
            info = RunnerInfo.from_redis(json.loads(raw))
            if info.runner_id in live:
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
        for raw in pipe.execute() if keys else []:
            if not raw:  # expired between the scan and the read
                continue
            info = RunnerInfo.from_redis({_text(k): _text(v) for k, v in raw.items()})
            if capability is None or info.capability == capability:
                found.append(info)
        return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
