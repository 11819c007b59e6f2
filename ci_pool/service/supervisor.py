"""The child processes of ``ci-pool up`` (workers, API, beat, Flower): which capabilities
can run on this machine, one lock per home, starting each child in its own process group
with its log in the home, and stopping them all."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ci_pool.settings import Settings


@dataclass(frozen=True)
class Skipped:
    """A capability ``up`` starts no worker for, why, and what fixes it."""

    capability: str
    why: str
    fix: str


def _engine(settings: Settings) -> tuple[Any, str | None]:
    """(docker client, None) when an engine answers here, else (None, why)."""
    from ci_pool import container_engine

    try:
        client = container_engine.connect(settings, timeout=10, ping=True)
    except Exception as exc:
        return None, str(exc)
    return client, None


def runnable(settings: Settings) -> tuple[list[str], list[Skipped]]:
    """Capabilities that can run here (host mode, or their image is on the engine) and
    the ones that cannot, each with its fix."""
    client: Any = None
    down: str | None = None
    able: list[str] = []
    skipped: list[Skipped] = []
    for name, cap in sorted(settings.capabilities.items()):
        if cap.mode == "host":
            able.append(name)
            continue
        if client is None and down is None:
            client, down = _engine(settings)
        if down is not None:
            skipped.append(
                Skipped(name, down, "start dockerd or Podman's service, then restart ci-pool up")
            )
            continue
        try:
            client.images.get(cap.image)
        except Exception:
            skipped.append(
                Skipped(name, f"image {cap.image} is not here", f"ci-pool images build {name}")
            )
            continue
        able.append(name)
    if client is not None:
        client.close()
    return able, skipped


class HomeLock:
    """An exclusive lock on ``<home>/up.lock``, held while one ``up`` serves the home."""

    def __init__(self, home: Path):
        self.path = home / "up.lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> bool:
        fh = self.path.open("a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


@dataclass
class Child:
    """One process of the pool, in a process group of its own."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


class Supervisor:
    """Starts ``ci-pool`` subcommands as children and stops every one of them."""

    def __init__(self, logs: Path, env: dict[str, str]):
        self.logs = logs
        self.env = env
        self.children: list[Child] = []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ci_pool", *args],
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches up only; up stops the children
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def exited(self) -> list[Child]:
        return [c for c in self.children if not c.alive()]

    def stop(self, grace: float) -> None:
        """SIGTERM to every child's group (workers finish their running job), SIGKILL to
        what still runs after ``grace`` seconds; no child is left behind."""
        for child in self.children:
            if child.alive():
                child.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in self.children:
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for child in self.children:
            # the group too: a worker's pool processes outlive a killed main process
            child.signal(signal.SIGKILL)
            if child.alive():
                child.proc.wait()
