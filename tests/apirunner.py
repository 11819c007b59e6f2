"""A pool whose runners reach the store only through the API: its own store and config
(one capability that no other worker of the session consumes), a real uvicorn API on
loopback, and workers started with only the broker URL, the API URL and a credential."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx

from ci_pool.core.specs import JobSpec, StepSpec
from ci_pool.embedded import RedisServer
from ci_pool.service.pool import Pool
from ci_pool.store import identities
from tests.conftest import FAST_TIMINGS, GitServer, Harness, Worker, write_config


@dataclass
class ApiPool:
    """The pool, its API and the credentials registered in it."""

    harness: Harness
    api_url: str
    capability: str
    credentials: dict[str, str] = field(default_factory=dict)

    def register(self, name: str, *capabilities: str) -> str:
        """A runner credential, exchanged as a runner's first start would."""
        store = self.harness.pool().store
        token, _ = identities.create_registration(
            store, capabilities or (self.capability,), timedelta(hours=1), created_by="test"
        )
        credential, _ = identities.register(store, token, name, host="test-host")
        self.credentials[name] = credential
        return credential

    def client(self, credential: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url + "/v1/runner",
            headers={"Authorization": f"Bearer {credential}"},
            timeout=30,
        )

    def worker_env(self, home: Path, credential: str) -> dict[str, str]:
        """Only the config (capabilities), the broker, the API and the credential file."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
        home.mkdir(parents=True, exist_ok=True)
        cred = home / "runner-credential"
        cred.write_text(credential + "\n")
        cred.chmod(0o600)
        env.update(
            CI_POOL_CONFIG=str(self.harness.config),
            CI_POOL_BROKER_URL=self.harness.redis_url,
            CI_POOL_HOME=str(home),
            CI_POOL_API_URL=self.api_url,
        )
        for key, value in self.harness.overrides.items():
            env["CI_POOL_" + key.upper()] = str(value)
        return env

    def start_worker(self, home: Path, credential: str, *args: str) -> Worker:
        """``ci-pool worker`` in API mode; returns once it registered with the broker."""
        h = self.harness
        log = home.parent / f"{home.name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ci_pool", "worker", "--capability", self.capability,
                 "--loglevel", "INFO", *args],
                env=self.worker_env(home, credential),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        worker = Worker(proc, self.capability, log)
        h.workers.append(worker)
        pool = h.pool()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}:\n{log.read_text()}")
            mine = [r for r in pool.runners(self.capability) if r.pid == proc.pid]
            if mine:
                worker.runner_id = mine[0].runner_id
                return worker
            time.sleep(0.1)
        raise RuntimeError(f"worker did not register within 60s:\n{log.read_text()}")

    @cached_property
    def pool(self) -> Pool:
        return self.harness.pool()

    def submit(self, git: GitServer, run: str, capability: str | None = None) -> str:
        """A job of one step at main, submitted as ``ci-pool submit`` does (in-process)."""
        spec = JobSpec(
            repo=git.url(),
            ref="main",
            capability=capability or self.capability,
            steps=(StepSpec(run=run),),
        )
        return self.pool.submit(spec).id


@contextmanager
def api_pool(
    root: Path,
    redis: RedisServer,
    image: str,
    git: GitServer,
    capability: str,
    **overrides: Any,
) -> Iterator[ApiPool]:
    """The pool on Redis db 0 (its capability's queue is its own) with its API running."""
    from ci_pool.api.server import make_server, running
    from ci_pool.embedded import free_port

    root.mkdir()
    actions_url = git.url("").rstrip("/")
    h = Harness(root, redis.url, {**FAST_TIMINGS, "actions_url": actions_url, **overrides})
    write_config(h.config, image, extra=f'\n[capabilities.{capability}]\nimage = "{image}"\n')
    h.pool().store.init_schema()
    port = free_port()
    try:
        with running(make_server(h.settings(), "127.0.0.1", port, log_level="warning")):
            yield ApiPool(h, f"http://127.0.0.1:{port}", capability)
    finally:
        h.stop()
