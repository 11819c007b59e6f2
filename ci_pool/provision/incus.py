"""The ``incus`` commands provisioning runs on a runner host, over an SshSession. Every call
is kept as evidence (argv, whether stdin was used, exit code, redacted output sample);
stdin (profiles, credentials) is never recorded."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ci_pool.core.runner_names import host_label
from ci_pool.exceptions import ProvisioningError
from ci_pool.provision.records import Redactor
from ci_pool.provision.ssh import CommandResult, SshSession

#: Config keys ci-pool sets on the containers it manages.
KEY_CAPABILITY = "user.ci-pool.capability"
KEY_MANAGED = "user.ci-pool.managed"
KEY_PLAN = "user.ci-pool.plan"
#: What was last applied to a runner container (read back by plan to decide ``upgrade``):
#: the ci-pool package requirement and the digests of its unit files and of its profile.
KEY_VERSION = "user.ci-pool.version"
KEY_UNIT = "user.ci-pool.unit-sha256"
KEY_PROFILE = "user.ci-pool.profile-sha256"
SAMPLE = 500
#: Where the runner's credential file goes (a 0700 root directory made by cloud-init).
CREDENTIALS_DIR = "/etc/ci-pool/private"
CREDENTIALS_PATH = CREDENTIALS_DIR + "/credentials.env"
_INSTANCE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def container_name(host: str, capability: str, index: int) -> str:
    """``<host>-<capability>-<n>``: the container's name is its runner's name, unique
    pool-wide (two hosts' first linux runners differ)."""
    return f"{host_label(host)}-{capability}-{index}"


def valid_instance_name(name: str) -> bool:
    return bool(_INSTANCE_NAME.match(name)) and not name.endswith("-")


@dataclass
class Incus:
    """Runs incus on one host; raises ProvisioningError (with redacted stderr) on failure."""

    session: SshSession
    redact: Redactor
    evidence: list[dict[str, Any]] = field(default_factory=list)

    def run(
        self,
        *args: str,
        stdin: bytes | None = None,
        timeout: float | None = None,
        ok: tuple[int, ...] = (0,),
    ) -> CommandResult:
        argv = ("incus", *args)
        res = self.session.run(argv, stdin=stdin, timeout=timeout)
        self.evidence.append(
            {
                "command": [self.redact(a) for a in argv],
                "stdin": stdin is not None,
                "exit_code": res.exit_code,
                "stdout_sample": self.redact(res.stdout[:SAMPLE]),
                "stderr_sample": self.redact(res.stderr[:SAMPLE]),
            }
        )
        if res.exit_code not in ok:
            raise ProvisioningError(
                f"incus {' '.join(args[:2])} failed on {self.session.target.host} "
                f"(exit {res.exit_code}): {self.redact(res.stderr.strip()[:SAMPLE]) or '-'}"
            )
        return res

    # -- observe ------------------------------------------------------------------------

    def installed(self) -> bool:
        res = self.session.run(("sh", "-c", "command -v incus"))
        return res.exit_code == 0 and bool(res.stdout.strip())

    def instances(self) -> list[dict[str, Any]]:
        return _json_list(self.run("list", "--format", "json").stdout, "incus list")

    def profiles(self) -> list[dict[str, Any]]:
        return _json_list(self.run("profile", "list", "--format", "json").stdout, "profile list")

    # -- change -------------------------------------------------------------------------

    def put_profile(self, name: str, text: str, *, exists: bool) -> None:
        if not exists:
            self.run("profile", "create", name)
        self.run("profile", "edit", name, stdin=text.encode())

    def launch(self, image: str, name: str, profiles: list[str], config: dict[str, str]) -> None:
        args = ["launch", image, name]
        for p in profiles:
            args += ["--profile", p]
        for key, value in sorted(config.items()):
            args += ["--config", f"{key}={value}"]
        self.run(*args, timeout=600)

    def push_file(self, name: str, path: str, content: bytes, mode: str = "0644") -> None:
        """Write a root-owned file in the container (parent directories made)."""
        self.run(
            "file",
            "push",
            "--create-dirs",
            "--uid",
            "0",
            "--gid",
            "0",
            "--mode",
            mode,
            "-",
            f"{name}{path}",
            stdin=content,
        )

    def exec(self, name: str, *argv: str, timeout: float | None = None) -> CommandResult:
        return self.run("exec", name, "--", *argv, timeout=timeout)

    def push_secret(self, name: str, path: str, content: bytes) -> None:
        """Write a root-only file in the container; the content travels on stdin."""
        self.run(
            "file",
            "push",
            "--uid",
            "0",
            "--gid",
            "0",
            "--mode",
            "0600",
            "-",
            f"{name}{path}",
            stdin=content,
        )

    def delete(self, name: str) -> None:
        self.run("delete", name, "--force", timeout=300)


def _json_list(text: str, what: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text or "[]")
    except json.JSONDecodeError as exc:
        raise ProvisioningError(f"{what} did not print JSON: {exc}") from None
    if not isinstance(data, list):
        raise ProvisioningError(f"{what} did not print a JSON list")
    return [d for d in data if isinstance(d, dict)]
