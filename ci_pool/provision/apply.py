"""``ci-pool provision apply --plan-id ID --confirm``: carry out exactly the plan that was
shown. The host is observed again first: if it (or the desired state) changed since the
plan, apply refuses. New and adopted runners get, over stdin, a one-time registration
token bound to their name and capability (``provision.credentials``); their workers
register through the API, must heartbeat under their name and pass ``ci-pool doctor`` (run
inside the container) before apply reports success. Outdated runners are upgraded one at a
time (``provision.upgrade``: drain, update, restart, readiness; the runner keeps its
identity). Every outcome is an audit record."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import redis

from ci_pool.exceptions import CIPoolError, InputError, ProvisioningError
from ci_pool.provision import templates
from ci_pool.provision.credentials import (
    HeartbeatWait,
    PoolAddress,
    deliver,
    issue_registration,
    live_runner_keys,
    read_credentials,
    registration_lifetime,
    registry_wait,
    runner_file,
    start_worker,
    undo_registrations,
)
from ci_pool.provision.incus import KEY_CAPABILITY, KEY_MANAGED, KEY_PLAN, Incus
from ci_pool.provision.plan import PlanRequest, desired_state, observe, plan_id
from ci_pool.provision.readiness import check_ready
from ci_pool.provision.records import Records, Redactor, now_iso
from ci_pool.provision.remove import retire
from ci_pool.provision.ssh import SshSession
from ci_pool.provision.upgrade import applied_record, upgrade_runner
from ci_pool.service.pool import Pool
from ci_pool.settings import Settings

HEARTBEAT_TIMEOUT = 300.0
#: cloud-init installs packages and the worker; a slow mirror makes this minutes.
BOOT_TIMEOUT = 900.0
DRAIN_TIMEOUT = 3600.0


def request_of(plan: dict[str, Any]) -> PlanRequest:
    """The PlanRequest a saved plan was made from."""
    d = plan["desired"]
    kw: dict[str, Any] = {}
    for f in fields(PlanRequest):
        kw[f.name] = Path(d[f.name]) if f.type in ("Path", Path) else d[f.name]
    return PlanRequest(**kw)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = [k for k in sorted(set(old) | set(new)) if k != "instances" and old.get(k) != new.get(k)]
    old_i = {i["name"]: i for i in old.get("instances", [])}
    new_i = {i["name"]: i for i in new.get("instances", [])}
    out += [
        f"instance {n}" for n in sorted(set(old_i) | set(new_i)) if old_i.get(n) != new_i.get(n)
    ]
    return out


class _Run:
    """One apply: the plan, the open host, what was issued and started."""

    def __init__(
        self, settings: Settings, plan: dict[str, Any], pool: Pool, incus: Incus, redact: Redactor
    ):
        self.settings, self.plan, self.pool, self.incus = settings, plan, pool, incus
        self.redact = redact
        self.req = request_of(plan)
        self.cap = self.req.capability
        self.pname = templates.profile_name(self.cap)
        self.observed = {i["name"]: i for i in plan["observed"]["instances"]}
        #: Runner name -> the registration token it was given (never recorded).
        self.issued: dict[str, str] = {}
        self.before: dict[str, set[str]] = {}
        self.removed: list[dict[str, Any]] = []
        self.upgraded: dict[str, dict[str, Any]] = {}
        self.address = PoolAddress("", "")
        self.wait: HeartbeatWait = registry_wait(pool.redis, settings.runner_ttl)
        self.heartbeat_timeout = HEARTBEAT_TIMEOUT
        self.drain_timeout = DRAIN_TIMEOUT

    def _start_tracking(self, name: str) -> None:
        self.before[name] = live_runner_keys(self.pool.redis, self.settings.runner_ttl, name)

    def _credentials(self, name: str, *, forget: bool = False) -> None:
        lifetime = registration_lifetime(self.heartbeat_timeout)
        token = issue_registration(self.pool, name, self.cap, lifetime, self.redact, "apply")
        self.issued[name] = token
        deliver(self.incus, name, runner_file(self.address, name, token), forget=forget)
        self._start_tracking(name)
        start_worker(self.incus, name, self.cap)

    def step(self, action: dict[str, str], rendered: templates.Rendered) -> None:
        kind, name = action["kind"], action["target"]
        inst = self.observed.get(name)
        if kind == "reconcile" and name.startswith("profile:"):
            exists = self.plan["observed"]["profile"] is not None
            self.incus.put_profile(self.pname, rendered.profile_yaml, exists=exists)
        elif kind == "reconcile":
            self.incus.run("profile", "add", name, self.pname)
        elif kind == "adopt":
            assert inst is not None
            self.incus.run(
                "config",
                "set",
                name,
                f"{KEY_MANAGED}=true",
                f"{KEY_PLAN}={self.plan['id']}",
                *(f"{k}={v}" for k, v in sorted(applied_record(rendered).items())),
            )
            if self.pname not in inst["profiles"]:
                self.incus.run("profile", "add", name, self.pname)
            # Whatever identity it kept is replaced: it registers with the new token.
            self._credentials(name, forget=True)
        elif kind == "restart":
            assert inst is not None
            self._start_tracking(name)
            if inst["status"] == "Stopped":
                self.incus.run("start", name)
            else:
                self.incus.run("restart", "--force", name)
        elif kind == "create":
            self.incus.launch(
                self.req.image,
                name,
                ["default", self.pname],
                {
                    KEY_CAPABILITY: self.cap,
                    KEY_MANAGED: "true",
                    KEY_PLAN: self.plan["id"],
                    **applied_record(rendered),
                },
            )
            # 2: done with recoverable errors (deprecated keys and the like): still usable.
            self.incus.run(
                "exec",
                name,
                "--",
                "cloud-init",
                "status",
                "--wait",
                timeout=BOOT_TIMEOUT,
                ok=(0, 2),
            )
            self._credentials(name)
        elif kind == "upgrade":
            assert inst is not None
            self.upgraded[name] = upgrade_runner(
                self.pool,
                self.incus,
                name,
                self.cap,
                rendered,
                config=inst["config"],
                wait=self.wait,
                heartbeat_timeout=self.heartbeat_timeout,
                drain_timeout=self.drain_timeout,
            )
        elif kind == "remove":
            self.removed.append(retire(self.pool, self.incus, name, self.redact, DRAIN_TIMEOUT))


def _load(records: Records, plan_id_: str, confirm: bool) -> dict[str, Any]:
    plan = records.load_plan(plan_id_)
    if not confirm:
        raise InputError(
            f"apply changes {plan['desired']['host']}; review the plan (ci-pool provision "
            f"plan ... prints it, {records.plans / (plan_id_ + '.json')} keeps it), then "
            "add --confirm",
            field="--confirm",
        )
    if plan["blockers"]:
        raise ProvisioningError(
            f"plan {plan_id_} is blocked ("
            + "; ".join(b["code"] for b in plan["blockers"])
            + "); fix the blockers and plan again"
        )
    return plan


def apply(
    settings: Settings,
    plan_id_: str,
    *,
    confirm: bool,
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
    wait: HeartbeatWait | None = None,
    pool: Pool | None = None,
    drain_timeout: float = DRAIN_TIMEOUT,
) -> dict[str, Any]:
    """Apply a saved plan; returns the audit record written (state ``completed``)."""
    records = Records(settings.home)
    plan = _load(records, plan_id_, confirm)
    done = [r for r in records.audit_records(plan_id_) if r.get("event") == "apply"]
    if any(r["state"] == "completed" for r in done):
        return {**next(r for r in done if r["state"] == "completed"), "already_applied": True}
    pool = pool or Pool(settings)
    redact = Redactor()
    req = request_of(plan)
    base = {"event": "apply", "plan_id": plan_id_, "host": req.host, "capability": req.capability}
    with SshSession(req.target()) as session:
        incus = Incus(session, redact)
        run = _Run(settings, plan, pool, incus, redact)
        run.wait = wait or run.wait
        run.heartbeat_timeout, run.drain_timeout = heartbeat_timeout, drain_timeout
        try:
            desired, _profile, _blockers = desired_state(settings, req)
            observed = observe(incus, req.capability)
            if plan_id(desired, observed) != plan_id_:
                what = _differences(plan["desired"], desired) + _differences(
                    plan["observed"], observed
                )
                raise ProvisioningError(
                    f"plan {plan_id_} is stale: {', '.join(what) or 'the state'} changed on "
                    f"{req.host} or in the templates since it was made; nothing was changed. "
                    "Run ci-pool provision plan again and review the new plan"
                )
            run.address = read_credentials(req.credentials, redact)
            rendered = templates.render(
                settings, settings.capabilities[req.capability], req.package, req.templates
            )
            for action in plan["actions"]:
                if action["kind"] != "keep":
                    run.step(action, rendered)
            started = run.wait(run.before, req.capability, heartbeat_timeout) if run.before else {}
            # The readiness gate: each runner that got a credential passes doctor.
            doctor = {name: check_ready(incus, name, run.cap) for name in run.issued}
        except (CIPoolError, redis.RedisError) as exc:
            message = redact(str(exc))
            if isinstance(exc, redis.RedisError):
                message = f"the broker is unreachable while waiting for heartbeats: {message}"
            try:
                revoked = undo_registrations(pool, run.issued)
            except (CIPoolError, redis.RedisError) as undo:
                revoked = []
                message += f"; withdrawing its registration tokens failed too: {redact(str(undo))}"
            if revoked:
                message += (
                    f" (runner(s) {', '.join(revoked)} had registered and are revoked; plan "
                    "again to replace them under new names)"
                )
            records.audit(
                {**base, "state": "failed", "error": message, "evidence": incus.evidence}, redact
            )
            if incus.evidence and any(e["command"][1] != "list" for e in incus.evidence[2:]):
                message += f" (apply stopped part way: {records.audit_path} lists what ran)"
            raise ProvisioningError(message) from None
    _remember(records, plan, run, started)
    return records.audit(
        {
            **base,
            "state": "completed",
            "actions": plan["actions"],
            "runners": started,
            "registered": sorted(run.issued),
            "removed": run.removed,
            "upgraded": run.upgraded,
            "doctor": doctor,
            "evidence": incus.evidence,
        },
        redact,
    )


def _remember(records: Records, plan: dict[str, Any], run: _Run, started: dict[str, str]) -> None:
    d = plan["desired"]
    inventory = records.inventory()
    for name in run.issued:
        old = inventory.get(name, {})
        records.set_runner(
            name,
            {
                **{k: d[k] for k in ("host", "port", "user", "known_hosts", "identity")},
                "credentials": d["credentials"],
                "capability": d["capability"],
                "plan_id": plan["id"],
                # API tokens of runners provisioned before runner identities.
                "tokens": old.get("tokens", []),
                "runner_id": started.get(name, name),
                "created_at": old.get("created_at", now_iso()),
            },
        )
    for name, item in run.upgraded.items():
        if name in inventory:
            records.set_runner(name, {**inventory[name], "runner_id": item["runner_id"]})
    for item in run.removed:
        records.set_runner(item["container"], None)


def result_text(record: dict[str, Any]) -> str:
    """One line per thing apply did, for people."""
    if record.get("already_applied"):
        return f"plan {record['plan_id']} was applied already at {record['at']}; nothing to do"
    lines = [f"plan {record['plan_id']} applied on {record['host']}"]
    lines += [f"  {name}: worker {rid} heartbeating" for name, rid in record["runners"].items()]
    for name, checks in record.get("doctor", {}).items():
        warned = [c["name"] for c in checks if c["status"] == "warn"]
        lines.append(
            f"  {name}: ci-pool doctor passed ({len(checks)} checks"
            + (f"; warnings: {', '.join(warned)})" if warned else ")")
        )
    lines += [
        f"  {name}: upgraded ({', '.join(u['steps'])}); worker {u['runner_id']} heartbeating, "
        "ci-pool doctor passed"
        for name, u in record.get("upgraded", {}).items()
    ]
    lines += [f"  {r['container']}: removed" for r in record["removed"]]
    lines += [
        f"  {name}: registered through the API with a one-time token (its credential is kept "
        "on the runner only)"
        for name in record.get("registered", [])
    ]
    return "\n".join(lines)


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)
