"""SSH to a runner host with paramiko, locked down: the host key must already be in the given
known_hosts file (``RejectPolicy``, no system files), key auth with one explicit key (no
agent, no key search), timeouts on connect, banner, auth and every command, and no agent
forwarding or pty."""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import paramiko

from ci_pool.exceptions import ProvisioningError

CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 120.0


class SshError(ProvisioningError):
    """The SSH connection could not be made or trusted; ``code`` names why."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in; the paths are the operator's, never a secret's content."""

    host: str
    port: int
    user: str
    known_hosts: Path
    identity: Path
    connect_timeout: float = CONNECT_TIMEOUT
    command_timeout: float = COMMAND_TIMEOUT

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str


class SshSession:
    """One authenticated connection; ``run`` executes an argv (shell-quoted) remotely."""

    def __init__(self, target: SshTarget):
        self.target = target
        self.client: paramiko.SSHClient | None = None
        self.host_key = ""

    def __enter__(self) -> SshSession:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        t = self.target
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(t.known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise SshError(
                "unknown_host_key", f"cannot read known_hosts {t.known_hosts}: {exc}"
            ) from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                t.host,
                port=t.port,
                username=t.user,
                key_filename=str(t.identity),
                allow_agent=False,
                look_for_keys=False,
                timeout=t.connect_timeout,
                banner_timeout=t.connect_timeout,
                auth_timeout=t.connect_timeout,
                channel_timeout=t.connect_timeout,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise SshError(
                "host_key_mismatch",
                f"the host key of {t.host}:{t.port} ({exc.key.get_name()} "
                f"{exc.key.fingerprint}) does not match the one pinned in {t.known_hosts}; "
                "refusing to connect (verify the host, then fix that file)",
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SshError(
                "auth_failed", f"{t.where} refused the key {t.identity}: {exc}"
            ) from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise SshError(
                    "unknown_host_key",
                    f"the host key of {t.host}:{t.port} is not in {t.known_hosts}; refusing "
                    f"to connect. Check its fingerprint out of band, then add it (ssh-keyscan "
                    f"-p {t.port} {t.host} >> {t.known_hosts})",
                ) from None
            raise SshError("ssh_failed", f"SSH to {t.where} failed: {exc}") from None
        except (OSError, EOFError) as exc:
            client.close()
            raise SshError("unreachable", f"cannot reach {t.where}: {exc}") from None
        transport = client.get_transport()
        assert transport is not None
        key = transport.get_remote_server_key()
        self.host_key = f"{key.get_name()} {key.fingerprint}"
        self.client = client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the host. ``stdin`` (e.g. a credential) goes over the channel,
        never into the command line. Raises SshError when ``timeout`` passes."""
        if self.client is None:
            raise ProvisioningError("the SSH session is not open")
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError("unreachable", f"the SSH connection to {self.target.where} dropped")
        limit = self.target.command_timeout if timeout is None else timeout
        command = shlex.join(argv)
        chan = transport.open_session(timeout=self.target.connect_timeout)
        try:
            chan.settimeout(limit)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = self._collect(chan, time.monotonic() + limit, argv[0], limit)
            code = chan.recv_exit_status()
        finally:
            chan.close()
        return CommandResult(
            tuple(argv), code, out.decode(errors="replace"), err.decode(errors="replace")
        )

    def _collect(
        self, chan: paramiko.Channel, deadline: float, what: str, limit: float
    ) -> tuple[bytes, bytes]:
        out, err = bytearray(), bytearray()
        while True:
            busy = False
            if chan.recv_ready():
                out += chan.recv(65536)
                busy = True
            if chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
                busy = True
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                return bytes(out), bytes(err)
            if time.monotonic() > deadline:
                raise SshError(
                    "timeout", f"{what} on {self.target.where} did not finish within {limit:g}s"
                )
            if not busy:
                time.sleep(0.01)
