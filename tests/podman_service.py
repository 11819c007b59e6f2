"""A throwaway rootful Podman API service for the tests: ``podman system service`` on a
socket of its own, with its own storage, run and tmp dirs, so it shares nothing with a
Podman the machine may have, and stopping it removes everything it made."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: This machine's facts: no systemd to manage cgroups (cgroupfs), and a hard open-files
#: limit below Podman's default container ulimits, which runc then cannot set.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


@dataclass
class PodmanService:
    top: Path
    proc: subprocess.Popen[bytes]
    url: str

    @property
    def flags(self) -> list[str]:
        """podman's global flags for this service's storage and state."""
        return [
            "--root", str(self.top / "root"),
            "--runroot", str(self.top / "run"),
            "--tmpdir", str(self.top / "tmp"),
        ]  # fmt: skip

    @classmethod
    def start(cls, timeout: float = 30) -> PodmanService:
        """The service, answering on its socket (the dir is short: conmon's sockets live
        under it and a unix socket path has ~108 bytes)."""
        top = Path(tempfile.mkdtemp(prefix="ci-pool-podman-", dir="/tmp"))
        (top / "containers.conf").write_text(CONTAINERS_CONF)
        sock = top / "podman.sock"
        env = {**os.environ, "CONTAINERS_CONF": str(top / "containers.conf")}
        log = (top / "service.log").open("wb")
        proc = subprocess.Popen(
            ["podman", "--root", str(top / "root"), "--runroot", str(top / "run"),
             "--tmpdir", str(top / "tmp"), "system", "service", "--time=0", f"unix://{sock}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        service = cls(top, proc, f"unix://{sock}")
        deadline = time.monotonic() + timeout
        while not service.answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                why = (top / "service.log").read_text(errors="replace")[-2000:]
                service.stop()
                raise RuntimeError(f"podman system service did not answer: {why}")
            time.sleep(0.1)
        return service

    def client(self, timeout: int = 60) -> Any:
        import docker

        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def answers(self) -> bool:
        try:
            with contextlib.closing(self.client(timeout=5)) as c:
                return bool(c.ping())
        except Exception:
            return False

    def stop(self) -> None:
        """Remove every container and image the service made, stop it, delete its dirs."""
        env = {**os.environ, "CONTAINERS_CONF": str(self.top / "containers.conf")}
        if self.proc.poll() is None:
            for what in (["rm", "--all", "--force"], ["rmi", "--all", "--force"]):
                subprocess.run(
                    ["podman", *self.flags, *what], env=env, capture_output=True, timeout=120,
                    check=False,
                )  # fmt: skip
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._end_monitors()
        shutil.rmtree(self.top, ignore_errors=True)

    def _end_monitors(self) -> None:
        """End the conmon monitors of this service's exec sessions: Podman keeps each for
        five minutes after its exec ended (``--exit-delay 300``), outliving the service."""
        mark = str(self.top).encode()
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.split(b"\0", 1)[0].endswith(b"conmon") and mark in cmdline:
                with contextlib.suppress(OSError):
                    os.kill(int(proc.name), signal.SIGKILL)
