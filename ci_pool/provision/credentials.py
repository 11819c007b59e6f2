"""A runner's credentials: the pool's broker and store URLs (from the operator's credential
file) plus the runner's own API token, delivered as one root-only file over stdin and
revoked when the runner goes. Only ``apply`` and ``rotate`` read the credential file."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import redis

from ci_pool.broker.runners import RunnerInfo, RunnerRegistry
from ci_pool.exceptions import NotFound, ProvisioningError
from ci_pool.provision import templates
from ci_pool.provision.incus import CREDENTIALS_DIR, CREDENTIALS_PATH, Incus
from ci_pool.provision.records import Redactor
from ci_pool.store import Store, tokens

_LINE = re.compile(r"^(CI_POOL_[A-Z0-9_]+)=(.*)$")
#: Scopes of a runner's own token: it reads the pool, it cannot submit or cancel.
RUNNER_SCOPES = ("read",)


def read_credentials(path: Path, redact: Redactor) -> dict[str, str]:
    """Parse ``CI_POOL_KEY=value`` lines; every value is registered with ``redact``.
    Errors name the line, never its value."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ProvisioningError(f"cannot read the credential file {path}: {exc.strerror}") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise ProvisioningError(f"{path}:{number}: not a CI_POOL_KEY=value line")
        value = m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if "'" in value:
            raise ProvisioningError(f"{path}:{number}: {m.group(1)} holds a single quote")
        redact.add(value)
        values[m.group(1)] = value
    if "CI_POOL_BROKER_URL" not in values:
        raise ProvisioningError(f"{path}: CI_POOL_BROKER_URL is missing (workers need it)")
    return values


def credential_file(values: dict[str, str], token: str) -> bytes:
    """The runner's EnvironmentFile: shared URLs plus its own token, single-quoted."""
    lines = ["# ci-pool runner credentials: root-only, written by ci-pool provision"]
    lines += [f"{k}='{v}'" for k, v in sorted(values.items())]
    lines.append(f"CI_POOL_API_TOKEN='{token}'")
    return ("\n".join(lines) + "\n").encode()


def issue_token(store: Store, container: str, suffix: str, redact: Redactor) -> tuple[str, str]:
    """A fresh token for one runner: (name, plaintext); the plaintext is redacted from now."""
    name = f"runner-{container}-{suffix}"
    plaintext, _row = tokens.create_token(store, name, RUNNER_SCOPES)
    redact.add(plaintext)
    return name, plaintext


def revoke_tokens(store: Store, names: Iterable[str]) -> list[str]:
    """Revoke each token; ones already gone are skipped. Returns the names revoked."""
    done = []
    for name in names:
        try:
            tokens.revoke(store, name)
        except NotFound:
            continue
        done.append(name)
    return done


def deliver(incus: Incus, container: str, content: bytes) -> None:
    """Write the credential file (0600 root, in a 0700 directory) and (re)start the worker."""
    incus.exec(
        container, "install", "-d", "-m", "0700", "-o", "root", "-g", "root", CREDENTIALS_DIR
    )
    incus.push_secret(container, CREDENTIALS_PATH, content)


def start_worker(incus: Incus, container: str, capability: str) -> None:
    incus.exec(container, "systemctl", "restart", templates.unit_name(capability))


#: Waits for new workers: {container: worker processes live before (``live_runner_keys``)}
#: -> {container: the new worker's runner id}.
HeartbeatWait = Callable[[dict[str, set[str]], str, float], dict[str, str]]


def live_runner_ids(client: redis.Redis, ttl: float, container: str) -> set[str]:
    return {r.runner_id for r in RunnerRegistry(client, ttl).live() if r.host == container}


def _process_key(r: RunnerInfo) -> str:
    """One worker process: a runner's name outlives it (a restart keeps the name)."""
    return f"{r.runner_id}|{r.pid}|{r.started_at!r}"


def live_runner_keys(client: redis.Redis, ttl: float, container: str) -> set[str]:
    """The worker processes live on a container (what a restart must replace)."""
    return {_process_key(r) for r in RunnerRegistry(client, ttl).live() if r.host == container}


def registry_wait(client: redis.Redis, ttl: float) -> HeartbeatWait:
    """The default wait: poll the runner registry for a new worker process on each
    container (a worker's host name is its container's name, and so is its runner name; a
    restarted worker keeps the name, with a new pid and start time)."""

    def wait(before: dict[str, set[str]], capability: str, timeout: float) -> dict[str, str]:
        registry = RunnerRegistry(client, ttl)
        deadline = time.monotonic() + timeout
        found: dict[str, str] = {}
        while True:
            for r in registry.live(capability):
                new = _process_key(r) not in before.get(r.host, set())
                if r.host in before and r.host not in found and new:
                    found[r.host] = r.runner_id
            missing = sorted(set(before) - set(found))
            if not missing:
                return found
            if time.monotonic() >= deadline:
                raise ProvisioningError(
                    f"no heartbeat within {timeout:g}s from {', '.join(missing)}: check "
                    f"`incus exec {missing[0]} -- journalctl -u "
                    f"{templates.unit_name(capability)}` and `ci-pool runners`"
                )
            time.sleep(0.5)

    return wait
