"""The runner's identity on its own disk: joining (a registration token exchanged once,
through the API, for the runner's credential and Redis user), the two 0600 files that
keep them, and the broker URL the worker uses as that Redis user.

``runner_credential_file`` holds only the credential (``circ_...``, what
``Settings.runner_credential_value`` reads); ``<that file>.redis`` holds the runner's
name, capabilities and Redis username/password as JSON.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ci_pool.addresses import is_loopback
from ci_pool.broker.keys import broker_url_as
from ci_pool.exceptions import AccessDenied, ConfigError, InfraError
from ci_pool.settings import Settings
from ci_pool.tls import client_verify, untrusted_message


@dataclass(frozen=True, slots=True)
class RunnerSecrets:
    name: str
    capabilities: list[str]
    credential: str
    redis_username: str
    redis_password: str

    def broker_url(self, url: str) -> str:
        return broker_url_as(url, self.redis_username, self.redis_password)


def redis_file(credential_file: Path) -> Path:
    return credential_file.with_name(credential_file.name + ".redis")


def check_private(path: Path) -> None:
    """Refuse a secret file others may read or write."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} is open to other users (mode {mode:04o}); it holds the runner's "
            f"credential: run `chmod 600 {path}` (and check who could have read it)",
            key="runner_credential_file",
        )


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as 0600, atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(settings: Settings) -> RunnerSecrets | None:
    """The runner's saved identity, or None if it has not joined."""
    cred_file = settings.resolved_runner_credential_file
    extra = redis_file(cred_file)
    if not extra.exists():
        return None
    check_private(extra)
    if settings.runner_credential is None:
        check_private(cred_file)
    credential = settings.runner_credential_value() or ""
    try:
        data = json.loads(extra.read_text())
        return RunnerSecrets(
            name=str(data["name"]),
            capabilities=[str(c) for c in data["capabilities"]],
            credential=credential,
            redis_username=str(data["redis_username"]),
            redis_password=str(data["redis_password"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{extra} is not a runner identity file ({exc}); remove it and {cred_file}, "
            "then register the runner again with a new token",
            key="runner_credential_file",
        ) from exc


def join(settings: Settings, capabilities: list[str]) -> RunnerSecrets:
    """Exchange ``registration_token`` for the runner's identity and save it."""
    import httpx

    token = settings.registration_token.get_secret_value() if settings.registration_token else ""
    if not settings.runner_id:
        raise ConfigError(
            "a registering runner needs its pool-wide name: set CI_POOL_RUNNER_ID "
            "(e.g. <host>-<capability>-1)",
            key="runner_id",
        )
    parts = urlsplit(settings.api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "a registering runner needs the pool's API: set CI_POOL_API_URL", key="api_url"
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"refusing plain http:// to {parts.hostname}: the runner's credential and Redis "
            "password would cross the network in clear; use https://",
            key="api_url",
        )
    body = {
        "token": token,
        "name": settings.runner_id,
        "host": socket.gethostname(),
        "capabilities": capabilities,
    }
    url = settings.api_url.rstrip("/") + "/v1/runners/register"
    try:
        res = httpx.post(url, json=body, timeout=30, verify=client_verify(settings, url))
    except httpx.HTTPError as exc:
        untrusted = untrusted_message(settings.api_url, exc)
        if untrusted is not None:
            raise ConfigError(untrusted, key="api_ca_file") from None
        raise InfraError(f"cannot reach the API at {settings.api_url} to register: {exc}") from exc
    if res.status_code != 201:
        try:
            message = res.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {res.status_code}"
        raise AccessDenied(f"registration of runner {settings.runner_id!r} refused: {message}")
    got = res.json()
    secrets = RunnerSecrets(
        name=got["name"],
        capabilities=list(got["capabilities"]),
        credential=got["credential"],
        redis_username=got["redis_username"],
        redis_password=got["redis_password"],
    )
    cred_file = settings.resolved_runner_credential_file
    # The Redis file first: the credential file is what says "registered".
    write_private(
        redis_file(cred_file),
        json.dumps(
            {
                "name": secrets.name,
                "capabilities": secrets.capabilities,
                "redis_username": secrets.redis_username,
                "redis_password": secrets.redis_password,
            }
        ),
    )
    write_private(cred_file, secrets.credential + "\n")
    return secrets


def runner_secrets(settings: Settings, capability: str) -> RunnerSecrets | None:
    """The identity this worker runs as: saved, else joined now with the registration
    token, else None (the embedded default: the broker URL as configured)."""
    secrets = load(settings)
    if secrets is None and settings.registration_token is not None:
        secrets = join(settings, [capability])
    if secrets is None:
        return None
    if settings.runner_id and settings.runner_id != secrets.name:
        raise ConfigError(
            f"CI_POOL_RUNNER_ID is {settings.runner_id!r} but this runner registered as "
            f"{secrets.name!r}; use that name, or register the new one with a new token",
            key="runner_id",
        )
    if capability not in secrets.capabilities:
        raise ConfigError(
            f"runner {secrets.name!r} is registered for {', '.join(secrets.capabilities)}, "
            f"not {capability!r}; register a runner for it with a new token",
            key="capability",
        )
    return secrets
