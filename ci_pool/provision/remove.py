"""``ci-pool provision remove RUNNER`` and ``rotate RUNNER``: retire a runner container
(drain its workers, wait for their running jobs, delete it, revoke its runner identity:
credential and Redis user, audited with who) or re-key it (a registration token bound to
its name, its saved identity removed, the worker restarted: it registers again and its old
credential stops working at once). Without ``confirm`` both only say what they would do."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import redis

from ci_pool.broker.runners import RunnerRegistry, drain_key
from ci_pool.core.specs import JobState
from ci_pool.exceptions import CIPoolError, NotFound, ProvisioningError
from ci_pool.provision.credentials import (
    HeartbeatWait,
    deliver,
    issue_registration,
    live_runner_ids,
    live_runner_keys,
    read_credentials,
    registration_lifetime,
    registry_wait,
    revoke_identity,
    revoke_tokens,
    runner_file,
    start_worker,
    withdraw,
)
from ci_pool.provision.incus import KEY_MANAGED, Incus
from ci_pool.provision.records import Records, Redactor
from ci_pool.provision.ssh import SshSession, SshTarget
from ci_pool.service.pool import Pool
from ci_pool.settings import Settings


def resolve_runner(records: Records, pool: Pool, runner: str) -> tuple[str, dict[str, Any]]:
    """A container name or a live runner id -> (container, its inventory entry)."""
    inventory = records.inventory()
    if runner in inventory:
        return runner, inventory[runner]
    try:
        live = pool.runners()
    except redis.RedisError:
        live = []
    for r in live:
        if r.runner_id == runner and r.host in inventory:
            return r.host, inventory[r.host]
    raise NotFound(
        f"{runner!r} is neither a runner container provisioned from here (see "
        f"{records.inventory_path}) nor a live runner on one (see ci-pool runners)"
    )


def target_of(entry: dict[str, Any]) -> SshTarget:
    return SshTarget(
        entry["host"],
        int(entry["port"]),
        entry["user"],
        Path(entry["known_hosts"]),
        Path(entry["identity"]),
    )


def _running_jobs(pool: Pool, container: str, runner_ids: set[str]) -> list[str]:
    return [
        j.id
        for j in pool.store.list_jobs(states=[JobState.RUNNING], limit=10_000)
        if j.runner_id in runner_ids or j.runner_id == container
    ]


def drain_container(
    pool: Pool, container: str, timeout: float, *, verb: str = "remove", poll: float = 0.5
) -> set[str]:
    """Drain the container's workers and wait (at most ``timeout`` s) for their running
    jobs; returns their runner ids. On timeout it stays drained and says so."""
    runner_ids = live_runner_ids(pool.redis, pool.settings.runner_ttl, container)
    for rid in sorted(runner_ids):
        try:
            pool.drain(rid)
        except NotFound:  # it exited between the two looks
            continue
    deadline = time.monotonic() + timeout
    while running := _running_jobs(pool, container, runner_ids):
        if time.monotonic() >= deadline:
            raise ProvisioningError(
                f"{container} still runs job(s) {', '.join(running)} after {timeout:g}s; it "
                f"stays drained (no new jobs). Run {verb} again once they end, or cancel them "
                "with ci-pool cancel JOB"
            )
        time.sleep(poll)
    return runner_ids


def retire(
    pool: Pool, incus: Incus, container: str, redact: Redactor, timeout: float, poll: float = 0.5
) -> dict[str, Any]:
    """Drain, wait for running jobs, delete the container, revoke its identity (and the
    API tokens of a runner provisioned before identities)."""
    runner_ids = drain_container(pool, container, timeout, poll=poll)
    exists = any(i.get("name") == container for i in incus.instances())
    if exists:
        incus.delete(container)
    registry = RunnerRegistry(pool.redis, pool.settings.runner_ttl)
    for rid in runner_ids:
        registry.unregister(rid)
        pool.redis.delete(drain_key(rid))
    entry = Records(pool.settings.home).inventory().get(container, {})
    revoked = [container] if revoke_identity(pool, container, "remove") else []
    revoked += revoke_tokens(pool.store, entry.get("tokens", []))
    return {
        "container": container,
        "drained": sorted(runner_ids),
        "deleted": exists,
        "revoked": revoked,
    }


def _check_managed(incus: Incus, container: str) -> None:
    for inst in incus.instances():
        if inst.get("name") == container:
            if (inst.get("config") or {}).get(KEY_MANAGED) != "true":
                raise ProvisioningError(
                    f"{container} on {incus.session.target.host} is not marked "
                    f"{KEY_MANAGED}=true; refusing to touch an instance ci-pool does not manage"
                )
            return


def describe(container: str, entry: dict[str, Any], verb: str) -> str:
    host = f"{entry['user']}@{entry['host']}:{entry['port']}"
    if verb == "remove":
        return (
            f"remove {container} on {host}: drain its workers, wait for their running jobs, "
            f"incus delete --force {container}, revoke runner {container} (credential and "
            "Redis user)"
            + "".join(f", token {t}" for t in entry.get("tokens", []))
            + "\nnothing has changed yet; add --confirm to do it"
        )
    return (
        f"rotate {container} on {host}: issue a registration token for runner {container}, "
        "push it, remove the runner's saved credential, restart the worker; it registers "
        "again and its old credential stops working; wait for its heartbeat"
        + "".join(f", then revoke token {t}" for t in entry.get("tokens", []))
        + "\nnothing has changed yet; add --confirm to do it"
    )


def remove(
    settings: Settings,
    runner: str,
    *,
    confirm: bool,
    timeout: float = 3600.0,
    pool: Pool | None = None,
) -> dict[str, Any]:
    """Retire one runner container; returns the audit record (or a dry-run description)."""
    records = Records(settings.home)
    pool = pool or Pool(settings)
    container, entry = resolve_runner(records, pool, runner)
    if not confirm:
        return {"dry_run": True, "text": describe(container, entry, "remove")}
    redact = Redactor()
    base = {"event": "remove", "container": container, "host": entry["host"]}
    with SshSession(target_of(entry)) as session:
        incus = Incus(session, redact)
        try:
            _check_managed(incus, container)
            result = retire(pool, incus, container, redact, timeout)
        except (CIPoolError, redis.RedisError) as exc:
            records.audit(
                {**base, "state": "failed", "error": str(exc), "evidence": incus.evidence}, redact
            )
            raise ProvisioningError(redact(str(exc))) from None
    records.set_runner(container, None)
    return records.audit(
        {**base, "state": "completed", **result, "evidence": incus.evidence}, redact
    )


def rotate(
    settings: Settings,
    runner: str,
    *,
    confirm: bool,
    heartbeat_timeout: float = 300.0,
    wait: HeartbeatWait | None = None,
    pool: Pool | None = None,
) -> dict[str, Any]:
    """Re-key one runner: a registration token bound to its name and capability, pushed
    with its saved identity removed, then a restart; the worker registers again, which ends
    its old credential and Redis password. A revoked runner is refused (its name is never
    used again: remove it and plan a new one)."""
    records = Records(settings.home)
    pool = pool or Pool(settings)
    container, entry = resolve_runner(records, pool, runner)
    if not confirm:
        return {"dry_run": True, "text": describe(container, entry, "rotate")}
    redact = Redactor()
    base = {"event": "rotate", "container": container, "host": entry["host"]}
    token = ""
    with SshSession(target_of(entry)) as session:
        incus = Incus(session, redact)
        try:
            _check_managed(incus, container)
            address = read_credentials(Path(entry["credentials"]), redact)
            lifetime = registration_lifetime(heartbeat_timeout)
            cap = entry["capability"]
            token = issue_registration(pool, container, cap, lifetime, redact, "rotate")
            before = {container: live_runner_keys(pool.redis, settings.runner_ttl, container)}
            deliver(incus, container, runner_file(address, container, token), forget=True)
            start_worker(incus, container, cap)
            waiter = wait or registry_wait(pool.redis, settings.runner_ttl)
            started = waiter(before, cap, heartbeat_timeout)
        except (CIPoolError, redis.RedisError) as exc:
            withdraw(pool.store, [token] if token else [])
            records.audit(
                {**base, "state": "failed", "error": str(exc), "evidence": incus.evidence}, redact
            )
            raise ProvisioningError(redact(str(exc))) from None
    revoked = revoke_tokens(pool.store, entry.get("tokens", []))
    records.set_runner(
        container, {**entry, "tokens": [], "runner_id": started.get(container, container)}
    )
    return records.audit(
        {
            **base,
            "state": "completed",
            "registered": container,
            "revoked": revoked,
            "runners": started,
            "evidence": incus.evidence,
        },
        redact,
    )
