"""Upgrading a lane's existing runners in place. Changing a profile's user-data does not
re-run cloud-init in containers that exist, so apply brings a runner to the desired state
itself: drain it (waiting, bounded, for its running job), push the rendered unit, drop-in,
worker environment and sudo rule, install the ci-pool package (and the lane's Debian
packages when the profile changed), restart the worker, then run the readiness check.

What was applied is kept on the container as config keys (``user.ci-pool.version``, the
unit and profile digests); plan reads them back and shows ``upgrade`` with why. A runner
whose readiness check fails after the restart is left drained and the keys keep the old
state, so the next plan shows the upgrade again."""

from __future__ import annotations

import re
from typing import Any

from ci_pool.broker.runners import RunnerRegistry, drain_key
from ci_pool.exceptions import NotFound, ProvisioningError
from ci_pool.provision import templates
from ci_pool.provision.credentials import HeartbeatWait, live_runner_keys, start_worker
from ci_pool.provision.incus import KEY_PROFILE, KEY_UNIT, KEY_VERSION, Incus
from ci_pool.provision.readiness import WORKER_ENV, check_ready
from ci_pool.provision.remove import drain_container
from ci_pool.service.pool import Pool

UNIT_DIR = "/etc/systemd/system"
#: Seconds pip and apt-get may take on the runner (a slow mirror makes this minutes).
INSTALL_TIMEOUT = 900.0
_PINNED = re.compile(r"^ci-pool==(?P<version>[A-Za-z0-9.+!\-]+)$")


def applied_record(rendered: templates.Rendered) -> dict[str, str]:
    """The config keys that say what ``rendered`` put on a runner container."""
    return {
        KEY_VERSION: rendered.package,
        KEY_UNIT: rendered.unit_digest,
        KEY_PROFILE: rendered.profile_digest,
    }


def version_text(package: str | None) -> str:
    """``ci-pool==1.0`` -> ``1.0``; any other requirement as it is; unknown when unset."""
    if not package:
        return "unknown"
    m = _PINNED.match(package)
    return m.group("version") if m else package


def upgrade_reasons(config: dict[str, str], record: dict[str, str]) -> list[str]:
    """Why a runner whose config keys are ``config`` differs from ``record`` (empty: it
    does not). A runner made before these keys existed differs in all three."""
    reasons = []
    if config.get(KEY_VERSION) != record[KEY_VERSION]:
        reasons.append(
            f"ci-pool {version_text(config.get(KEY_VERSION))} -> "
            f"{version_text(record[KEY_VERSION])}"
        )
    if config.get(KEY_UNIT) != record[KEY_UNIT]:
        reasons.append("unit changed")
    if config.get(KEY_PROFILE) != record[KEY_PROFILE]:
        reasons.append("profile changed")
    return reasons


def _update(
    incus: Incus, name: str, cap: str, rendered: templates.Rendered, packages: bool
) -> None:
    """Push the rendered files, install the package (and Debian packages), reload systemd."""
    incus.push_file(name, f"{UNIT_DIR}/{templates.UNIT_TEMPLATE}", rendered.unit.encode())
    dropin = f"{UNIT_DIR}/{templates.unit_name(cap)}.d/lane.conf"
    incus.push_file(name, dropin, rendered.dropin.encode())
    incus.push_file(name, WORKER_ENV, rendered.worker_env.encode())
    if rendered.sudoers is not None:
        sudoers = f"{templates.SUDOERS_DIR}/ci-pool-{cap}"
        incus.push_file(name, sudoers, rendered.sudoers.encode(), mode="0440")
    if packages:
        incus.exec(name, "apt-get", "update", "-q", timeout=INSTALL_TIMEOUT)
        incus.exec(
            name,
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            *rendered.packages,
            timeout=INSTALL_TIMEOUT,
        )
    pip = templates.VENV + "/bin/pip"
    incus.exec(
        name,
        pip,
        "install",
        "--no-input",
        "--disable-pip-version-check",
        rendered.package,
        timeout=INSTALL_TIMEOUT,
    )
    incus.exec(name, "systemctl", "daemon-reload")


def upgrade_runner(
    pool: Pool,
    incus: Incus,
    name: str,
    cap: str,
    rendered: templates.Rendered,
    *,
    config: dict[str, str],
    wait: HeartbeatWait,
    heartbeat_timeout: float,
    drain_timeout: float,
) -> dict[str, Any]:
    """Drain, update, restart, readiness, then record what was applied; the steps taken
    come back in order. ProvisioningError (the runner left drained) when it is not ready."""
    record = applied_record(rendered)
    steps: list[str] = []
    old = drain_container(pool, name, drain_timeout, verb="apply")
    steps.append("drain")
    _update(incus, name, cap, rendered, packages=config.get(KEY_PROFILE) != record[KEY_PROFILE])
    steps.append("update")
    before = {name: live_runner_keys(pool.redis, pool.settings.runner_ttl, name)}
    start_worker(incus, name, cap)
    new_id = wait(before, cap, heartbeat_timeout)[name]
    steps.append("restart")
    _forget(pool, old - {new_id})
    # A restarted worker keeps its name: the drain was the old process's, not the new one's.
    pool.redis.delete(drain_key(new_id))
    try:
        checks = check_ready(incus, name, cap)
    except ProvisioningError as exc:
        try:
            pool.drain(new_id)
        except NotFound:
            pass
        raise ProvisioningError(
            f"{exc}. {name} was upgraded but is not ready: its worker {new_id} stays drained "
            "(no new jobs). Fix it, then plan and apply again (or ci-pool undrain "
            f"{new_id} to take jobs as it is)"
        ) from None
    steps.append("readiness")
    incus.run("config", "set", name, *(f"{k}={v}" for k, v in sorted(record.items())))
    return {"steps": steps, "runner_id": new_id, "doctor": checks, "drained": sorted(old)}


def _forget(pool: Pool, runner_ids: set[str]) -> None:
    """The drained workers were replaced by the restart: unregister them, drop their drain."""
    registry = RunnerRegistry(pool.redis, pool.settings.runner_ttl)
    for rid in runner_ids:
        registry.unregister(rid)
        pool.redis.delete(drain_key(rid))
