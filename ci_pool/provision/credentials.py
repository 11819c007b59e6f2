"""A runner's credentials. The operator's credential file says where runners reach the pool
(``CI_POOL_API_URL``, ``CI_POOL_BROKER_URL``); a runner is shipped only the API URL, the
broker's address without its password, its name and a one-time registration token bound to
that name and its capability. At its first start the worker exchanges the token, through
the API, for its own credential and Redis user (``ci_pool.worker.identity``). It never gets
a store URL or the shared Redis password. Only ``apply`` and ``rotate`` read the file."""

from __future__ import annotations

import getpass
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import redis

from ci_pool import defaults
from ci_pool.addresses import is_loopback
from ci_pool.broker.keys import broker_url_without_credentials
from ci_pool.broker.runners import RunnerInfo, RunnerRegistry
from ci_pool.exceptions import NotFound, ProvisioningError
from ci_pool.provision import templates
from ci_pool.provision.incus import CREDENTIALS_DIR, CREDENTIALS_PATH, Incus
from ci_pool.provision.records import Redactor
from ci_pool.service import identities
from ci_pool.service.pool import Pool
from ci_pool.store import Store, tokens
from ci_pool.store import identities as identity_rows

_LINE = re.compile(r"^(CI_POOL_[A-Z0-9_]+)=(.*)$")
#: The runner's saved identity (``runner_credential_file`` and its ``.redis`` companion):
#: removed before a re-registration so the worker joins with its new token.
IDENTITY_FILES = (
    defaults.PROVISION_RUNNER_HOME + "/runner-credential",
    defaults.PROVISION_RUNNER_HOME + "/runner-credential.redis",
)


@dataclass(frozen=True)
class PoolAddress:
    """Where runners reach the pool: the API and the broker (no password in it)."""

    api_url: str
    broker_url: str


def _parse(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """``CI_POOL_KEY=value`` lines -> (values, their line numbers). Errors name the line,
    never its value."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ProvisioningError(f"cannot read the credential file {path}: {exc.strerror}") from None
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
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
        values[m.group(1)] = value
        lines[m.group(1)] = number
    return values, lines


def read_credentials(path: Path, redact: Redactor) -> PoolAddress:
    """The pool's address for runners, from the operator's credential file. Its other
    lines (a store URL from before runner identities, say) are never shipped; every value
    but the API URL is redacted from records."""
    values, lines = _parse(path)
    for key, value in values.items():
        if key != "CI_POOL_API_URL":
            redact.add(value)
            try:
                redact.add(urlsplit(value).password or "")
            except ValueError:
                pass
    for key in ("CI_POOL_API_URL", "CI_POOL_BROKER_URL"):
        if key not in values:
            raise ProvisioningError(
                f"{path}: {key} is missing: runners register through the pool's API "
                "(CI_POOL_API_URL=https://api-host:8000) and reach the broker as their own "
                "Redis user (CI_POOL_BROKER_URL=redis://broker-host:6379/0; a password in it "
                "is not shipped)"
            )
    api = urlsplit(values["CI_POOL_API_URL"])
    where = f"{path}:{lines['CI_POOL_API_URL']}"
    if api.scheme not in ("http", "https") or not api.hostname:
        raise ProvisioningError(f"{where}: CI_POOL_API_URL is not an http(s):// URL")
    if api.scheme == "http" and not is_loopback(api.hostname):
        raise ProvisioningError(
            f"{where}: CI_POOL_API_URL must be https:// (runners send their registration token "
            "and credential to it; plain http is for loopback only)"
        )
    broker = urlsplit(values["CI_POOL_BROKER_URL"])
    if broker.scheme not in ("redis", "rediss") or not broker.hostname:
        raise ProvisioningError(
            f"{path}:{lines['CI_POOL_BROKER_URL']}: CI_POOL_BROKER_URL is not a redis:// or "
            "rediss:// URL"
        )
    return PoolAddress(values["CI_POOL_API_URL"], broker_url_without_credentials(broker))


def runner_file(address: PoolAddress, name: str, registration_token: str) -> bytes:
    """The runner's EnvironmentFile (root-only): all the runner is given."""
    lines = [
        "# ci-pool runner: written by ci-pool provision, root-only. The registration token is",
        "# used once, at the worker's first start, for the runner's own credential",
        f"# ({IDENTITY_FILES[0]}, 0600); the broker URL holds no password.",
        f"CI_POOL_API_URL='{address.api_url}'",
        f"CI_POOL_BROKER_URL='{address.broker_url}'",
        f"CI_POOL_RUNNER_ID='{name}'",
        f"CI_POOL_REGISTRATION_TOKEN='{registration_token}'",
    ]
    return ("\n".join(lines) + "\n").encode()


def operator() -> str:
    """Who runs provisioning, for the identity audit (``revoked_by``, ``created_by``)."""
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local"


def registration_lifetime(heartbeat_timeout: float) -> timedelta:
    return timedelta(seconds=max(defaults.PROVISION_REGISTRATION_TTL, heartbeat_timeout + 60))


def issue_registration(
    pool: Pool, name: str, capability: str, lifetime: timedelta, redact: Redactor, verb: str
) -> str:
    """A one-time registration token for runner ``name`` of ``capability`` only; the
    plaintext is redacted from now on. A registered runner of that name is re-keyed by it;
    a revoked one is refused here, before anything changes on the host."""
    row = identity_rows.get_runner(pool.store, name)
    if row is not None and not row.active:
        raise ProvisioningError(
            f"runner {name} was revoked (by {row.revoked_by}); a revoked runner's name is "
            f"never used again: ci-pool provision remove {name} --confirm, then plan a new "
            "runner"
        )
    made = identities.create_token(
        pool, [capability], lifetime, by=f"provision {verb} ({operator()})", name=name
    )
    redact.add(made.token)
    return made.token


def withdraw(store: Store, plaintexts: Iterable[str]) -> None:
    """End the registration tokens no runner used (provisioning failed part way)."""
    for token in plaintexts:
        identity_rows.withdraw_registration(store, token)


def undo_registrations(pool: Pool, issued: dict[str, str]) -> list[str]:
    """After a failed apply: withdraw each unused token; revoke each runner that registered
    with its token (it did not pass the readiness gate; its name is not reused, so the next
    plan removes its container and creates the next name). Returns the runners revoked."""
    revoked = []
    for name, token in issued.items():
        if identity_rows.withdraw_registration(pool.store, token):
            continue
        if identity_rows.registration_user(pool.store, token) == name and revoke_identity(
            pool, name, "apply failed"
        ):
            revoked.append(name)
    return revoked


def revoke_identity(pool: Pool, name: str, verb: str) -> bool:
    """Revoke runner ``name`` (credential, Redis user, heartbeat), audited with who did it;
    False when it never registered."""
    try:
        identities.revoke(pool, name, by=f"provision {verb} ({operator()})")
    except NotFound:
        return False
    return True


def revoke_tokens(store: Store, names: Iterable[str]) -> list[str]:
    """Revoke API tokens provisioning issued before runner identities (inventory entries
    of that time keep their names); ones already gone are skipped."""
    done = []
    for name in names:
        try:
            tokens.revoke(store, name)
        except NotFound:
            continue
        done.append(name)
    return done


def deliver(incus: Incus, container: str, content: bytes, *, forget: bool = False) -> None:
    """Write the credential file (0600 root, in a 0700 directory); with ``forget``, remove
    the runner's saved identity too, so its worker registers again with the new token."""
    incus.exec(
        container, "install", "-d", "-m", "0700", "-o", "root", "-g", "root", CREDENTIALS_DIR
    )
    incus.push_secret(container, CREDENTIALS_PATH, content)
    if forget:
        incus.exec(container, "rm", "-f", *IDENTITY_FILES)


def start_worker(incus: Incus, container: str, capability: str) -> None:
    incus.exec(container, "systemctl", "restart", templates.unit_name(capability))


#: Waits for new workers: {container: worker processes live before (``live_runner_keys``)}
#: -> {container: the new worker's runner id}.
HeartbeatWait = Callable[[dict[str, set[str]], str, float], dict[str, str]]


def _on(r: RunnerInfo, container: str) -> bool:
    """Whether ``r`` is the container's worker: provisioning names the runner after its
    container (``CI_POOL_RUNNER_ID``), unique pool-wide; older workers only by host name."""
    return r.runner_id == container or r.host == container


def live_runner_ids(client: redis.Redis, ttl: float, container: str) -> set[str]:
    return {r.runner_id for r in RunnerRegistry(client, ttl).live() if _on(r, container)}


def _process_key(r: RunnerInfo) -> str:
    """One worker process: a runner's name outlives it (a restart keeps the name)."""
    return f"{r.runner_id}|{r.pid}|{r.started_at!r}"


def live_runner_keys(client: redis.Redis, ttl: float, container: str) -> set[str]:
    """The worker processes live on a container (what a restart must replace)."""
    return {_process_key(r) for r in RunnerRegistry(client, ttl).live() if _on(r, container)}


def registry_wait(client: redis.Redis, ttl: float) -> HeartbeatWait:
    """The default wait: poll the runner registry for a new worker process on each
    container, heartbeating under the runner's name (the container's; a restarted worker
    keeps the name, with a new pid and start time)."""

    def wait(before: dict[str, set[str]], capability: str, timeout: float) -> dict[str, str]:
        registry = RunnerRegistry(client, ttl)
        deadline = time.monotonic() + timeout
        found: dict[str, str] = {}
        while True:
            for r in registry.live(capability):
                for container in before:
                    new = _process_key(r) not in before[container]
                    if container not in found and _on(r, container) and new:
                        found[container] = r.runner_id
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
