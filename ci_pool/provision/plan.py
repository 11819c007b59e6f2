"""``ci-pool provision plan``: observe a runner host over SSH and decide what to do.

A plan compares the desired state (capability, count, rendered profile, ci-pool package)
with what the host has (``incus list``/``incus profile list``, and what was applied to each
runner, kept in its ``user.ci-pool.*`` keys) and lists actions (create | adopt | reconcile |
restart | upgrade | remove, or keep) or blockers (fail closed). Its id is a hash of both states, so
``apply`` can tell when the host changed since. Planning reads no credential and changes
nothing on the host; it saves the plan and an audit record locally.

Runner names are ``<host>-<capability>-<n>`` with the lowest free ``n``; a name whose runner
identity was revoked is never used again (the store says which), so a runner removed for
good is replaced under the next name, and a container still holding a revoked name is
planned for removal.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ci_pool.core.runner_names import host_label
from ci_pool.exceptions import ConfigError, InputError, ProvisioningError
from ci_pool.provision import templates
from ci_pool.provision.incus import (
    KEY_CAPABILITY,
    KEY_MANAGED,
    Incus,
    container_name,
    valid_instance_name,
)
from ci_pool.provision.records import Records, Redactor, now_iso
from ci_pool.provision.ssh import SshError, SshSession, SshTarget
from ci_pool.provision.upgrade import applied_record, upgrade_reasons
from ci_pool.settings import Settings

DEFAULT_IMAGE = "images:debian/12/cloud"
MAX_COUNT = 64
_HOST = re.compile(r"^[A-Za-z0-9_.:\[\]][A-Za-z0-9_.:\-\[\]]{0,252}$")
_USER = re.compile(r"^[a-z_][a-z0-9_\-]{0,31}$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/\-]{0,199}$")
#: Actions in the order apply runs them; ``keep`` changes nothing.
ACTIONS = ("reconcile", "adopt", "restart", "upgrade", "create", "remove", "keep")


@dataclass(frozen=True)
class PlanRequest:
    """What the operator asked for (the desired state and how to reach the host)."""

    host: str
    capability: str
    count: int
    port: int = 22
    user: str = "root"
    known_hosts: Path = Path("~/.ssh/known_hosts")
    identity: Path = Path("~/.ssh/id_ed25519")
    credentials: Path = Path("credentials.env")
    image: str = DEFAULT_IMAGE
    package: str = ""
    templates: Path = templates.TEMPLATES_DIR

    def checked(self) -> PlanRequest:
        """Validate every field (InputError names it); paths made absolute."""
        if not _HOST.match(self.host):
            raise InputError(f"{self.host!r} is not a host name or address", field="--host")
        if not 1 <= self.port <= 65535:
            raise InputError("a TCP port is 1-65535", field="--port")
        if not _USER.match(self.user):
            raise InputError(f"{self.user!r} is not a user name", field="--user")
        if not 0 <= self.count <= MAX_COUNT:
            raise InputError(f"give 0 to {MAX_COUNT} runners", field="--count")
        if not _IMAGE.match(self.image):
            raise InputError(f"{self.image!r} is not an Incus image name", field="--image")
        known_hosts = self.known_hosts.expanduser().absolute()
        identity = self.identity.expanduser().absolute()
        if not known_hosts.is_file():
            raise InputError(f"{known_hosts} does not exist", field="--known-hosts")
        if not identity.is_file():
            raise InputError(f"{identity} does not exist", field="--identity")
        package = templates.check_package(self.package or templates.default_package())
        return PlanRequest(
            host=self.host,
            capability=self.capability,
            count=self.count,
            port=self.port,
            user=self.user,
            known_hosts=known_hosts,
            identity=identity,
            credentials=self.credentials.expanduser().absolute(),
            image=self.image,
            package=package,
            templates=self.templates.expanduser().absolute(),
        )

    def target(self) -> SshTarget:
        return SshTarget(self.host, self.port, self.user, self.known_hosts, self.identity)


def _action(kind: str, target: str, detail: str) -> dict[str, str]:
    return {"kind": kind, "target": target, "detail": detail}


def _blocker(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def normalize_instance(raw: dict[str, Any]) -> dict[str, Any]:
    """The parts of an ``incus list`` entry a plan depends on (volatile keys dropped)."""
    config = raw.get("config") or {}
    return {
        "name": str(raw.get("name", "")),
        "status": str(raw.get("status", "")),
        "type": str(raw.get("type", "container")),
        "profiles": [str(p) for p in raw.get("profiles") or []],
        "config": {k: str(v) for k, v in config.items() if k.startswith("user.ci-pool.")},
    }


def normalize_profile(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": str(raw.get("description", "")),
        "config": {k: str(v) for k, v in (raw.get("config") or {}).items()},
        "devices": {
            name: {k: str(v) for k, v in (dev or {}).items()}
            for name, dev in (raw.get("devices") or {}).items()
        },
    }


def observe(incus: Incus, capability: str) -> dict[str, Any]:
    """What the host has that concerns this capability's runners."""
    label = re.escape(host_label(incus.session.target.host))
    pattern = re.compile(rf"^(ci-pool|{label})-{re.escape(capability)}-[0-9]+$")
    instances = [
        normalize_instance(raw)
        for raw in incus.instances()
        if pattern.match(str(raw.get("name", "")))
        or (raw.get("config") or {}).get(KEY_CAPABILITY) == capability
    ]
    wanted = templates.profile_name(capability)
    profile = next((p for p in incus.profiles() if p.get("name") == wanted), None)
    return {
        "host_key": incus.session.host_key,
        "incus": True,
        "instances": sorted(instances, key=lambda i: i["name"]),
        "profile": normalize_profile(profile) if profile is not None else None,
    }


def _profile_action(
    capability: str, have: dict[str, Any] | None, want: dict[str, Any]
) -> dict[str, str]:
    target = "profile:" + templates.profile_name(capability)
    if have is None:
        return _action("reconcile", target, "create the profile")
    if have == normalize_profile(want):
        return _action("keep", target, "the profile is up to date")
    keys = sorted(
        k
        for part in ("config", "devices")
        for k in set(have[part]) | set(want[part])
        if have[part].get(k) != normalize_profile(want)[part].get(k)
    )
    if have["description"] != want["description"]:
        keys.append("description")
    return _action("reconcile", target, "update the profile (" + ", ".join(keys) + " differ)")


def runner_names(host: str, capability: str, count: int, retired: Iterable[str] = ()) -> list[str]:
    """The ``count`` container (and runner) names wanted, skipping ``retired`` ones."""
    skip = set(retired)
    names: list[str] = []
    index = 1
    while len(names) < count:
        name = container_name(host, capability, index)
        if name not in skip:
            names.append(name)
        index += 1
    return names


def retired_names(settings: Settings) -> list[str]:
    """Names of revoked runner identities in the operator's store (never reused); none
    when the store has no identities yet."""
    from sqlalchemy.exc import SQLAlchemyError

    from ci_pool.store import Store
    from ci_pool.store.identities import list_runners

    url = settings.resolved_store_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return []  # no store yet: nothing was ever registered (and plan creates none)
    store = Store(url)
    try:
        return sorted(r.name for r in list_runners(store) if not r.active)
    except SQLAlchemyError:
        return []
    finally:
        store.close()


def decide(
    capability: str,
    count: int,
    observed: dict[str, Any],
    profile: dict[str, Any],
    host: str,
    applied: dict[str, str] | None = None,
    retired: Iterable[str] = (),
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Actions that bring the host to ``count`` runners, or blockers; a pure function.
    With ``applied`` (the config keys a current runner has), a running runner whose keys
    differ is upgraded; ``retired`` names (revoked runners) are not wanted again."""
    actions: list[dict[str, str]] = []
    blockers: list[dict[str, str]] = []
    pname = templates.profile_name(capability)
    by_name = {i["name"]: i for i in observed["instances"]}
    wanted = runner_names(host, capability, count, retired)
    if count:
        actions.append(_profile_action(capability, observed["profile"], profile))
    for name in wanted:
        inst = by_name.get(name)
        if inst is None:
            actions.append(_action("create", name, "launch a new runner container"))
            continue
        owner = inst["config"].get(KEY_CAPABILITY)
        if owner != capability or inst["type"] != "container":
            blockers.append(
                _blocker(
                    "name_clash",
                    f"{host} already has an instance named {name} that is not a ci-pool "
                    f"{capability} runner ({inst['type']}, {KEY_CAPABILITY}="
                    f"{owner or 'unset'}); rename or delete it, or ask for fewer runners",
                )
            )
        elif inst["config"].get(KEY_MANAGED) != "true":
            actions.append(_action("adopt", name, "mark it managed, push credentials, restart"))
        elif pname not in inst["profiles"]:
            actions.append(_action("reconcile", name, f"attach profile {pname}"))
        elif inst["status"] != "Running":
            actions.append(_action("restart", name, f"it is {inst['status']}; start it"))
        elif applied and (reasons := upgrade_reasons(inst["config"], applied)):
            actions.append(_action("upgrade", name, ", ".join(reasons)))
        else:
            actions.append(_action("keep", name, "running"))
    for inst in observed["instances"]:
        managed = inst["config"].get(KEY_MANAGED) == "true"
        if (
            managed
            and inst["config"].get(KEY_CAPABILITY) == capability
            and inst["name"] not in wanted
        ):
            actions.append(_action("remove", inst["name"], "drain, delete, revoke its identity"))
    actions.sort(key=lambda a: (ACTIONS.index(a["kind"]), a["target"]))
    return actions, blockers


def plan_id(desired: dict[str, Any], observed: dict[str, Any]) -> str:
    text = json.dumps({"desired": desired, "observed": observed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def desired_state(
    settings: Settings, req: PlanRequest
) -> tuple[dict[str, Any], dict[str, Any] | None, list[dict[str, str]]]:
    """(desired state, rendered profile or None, blockers found without the host)."""
    desired: dict[str, Any] = {
        k: str(v) if isinstance(v, Path) else v for k, v in asdict(req).items()
    }
    blockers: list[dict[str, str]] = []
    cap = settings.capabilities.get(req.capability)
    profile: dict[str, Any] | None = None
    if cap is None:
        blockers.append(
            _blocker(
                "capability_unknown",
                f"no capability {req.capability!r} in this pool's settings; capabilities that "
                "exist: " + ", ".join(sorted(settings.capabilities)),
            )
        )
    elif not valid_instance_name(container_name(req.host, cap.name, MAX_COUNT)):
        blockers.append(
            _blocker(
                "capability_unknown",
                f"capability {cap.name!r} cannot name an Incus container (letters, digits, '-')",
            )
        )
    elif not templates.has_profile_template(cap.name, req.templates):
        blockers.append(
            _blocker(
                "no_profile_template",
                f"no Incus profile template for {cap.name!r}: add "
                f"{req.templates / 'incus' / f'profile-{cap.name}.yaml'}",
            )
        )
    else:
        rendered = templates.render(settings, cap, req.package, req.templates)
        profile = rendered.profile
        desired["applied"] = applied_record(rendered)
        desired["profile_sha256"] = hashlib.sha256(
            json.dumps(profile, sort_keys=True).encode()
        ).hexdigest()
    blockers += _credential_blockers(req.credentials)
    label = f"{host_label(req.host)}-{req.capability}-"
    desired["retired"] = [n for n in retired_names(settings) if n.startswith(label)]
    desired["names"] = runner_names(req.host, req.capability, req.count, desired["retired"])
    return desired, profile, blockers


def _credential_blockers(path: Path) -> list[dict[str, str]]:
    """The credential file must exist and be private; its content is not read here."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return [
            _blocker(
                "credentials_missing",
                f"{path} does not exist: write CI_POOL_API_URL=https://... and "
                "CI_POOL_BROKER_URL=redis://host:port/db there (mode 0600), or pass --credentials",
            )
        ]
    if not stat.S_ISREG(mode) or mode & 0o077:
        return [
            _blocker(
                "credentials_permissions",
                f"{path} must be a regular file readable only by its owner (chmod 600)",
            )
        ]
    return []


def observe_host(
    req: PlanRequest, capability: str, redact: Redactor
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Connect and observe; any failure to look is a blocker (fail closed)."""
    try:
        with SshSession(req.target()) as session:
            incus = Incus(session, redact)
            if not incus.installed():
                return {"host_key": session.host_key, "incus": False}, [
                    _blocker(
                        "incus_missing",
                        f"incus is not on the PATH of {req.user}@{req.host}; install Incus "
                        "there (and run incus admin init) first",
                    )
                ]
            return observe(incus, capability), []
    except SshError as exc:
        return {"error": exc.code}, [_blocker(exc.code, str(exc))]
    except ProvisioningError as exc:
        return {"error": "incus_error"}, [_blocker("incus_error", str(exc))]


def make_plan(settings: Settings, request: PlanRequest) -> dict[str, Any]:
    """Build, save and audit a plan; never changes the host."""
    req = request.checked()
    redact = Redactor()
    try:
        desired, profile, blockers = desired_state(settings, req)
    except ConfigError as exc:
        raise InputError(str(exc), field="--templates") from None
    actions: list[dict[str, str]] = []
    observed: dict[str, Any] = {}
    if profile is not None or req.capability in settings.capabilities:
        observed, found = observe_host(req, req.capability, redact)
        blockers += found
        if not found and profile is not None:
            actions, clashes = decide(
                req.capability,
                req.count,
                observed,
                profile,
                req.host,
                applied=desired.get("applied"),
                retired=desired["retired"],
            )
            blockers += clashes
    plan = {
        "id": plan_id(desired, observed),
        "created_at": now_iso(),
        "desired": desired,
        "observed": observed,
        "actions": [] if blockers else actions,
        "blockers": blockers,
    }
    records = Records(settings.home)
    records.save_plan(plan)
    records.audit(
        {
            "event": "plan",
            "state": "planned",
            "plan_id": plan["id"],
            "host": req.host,
            "capability": req.capability,
            "actions": plan["actions"],
            "blockers": blockers,
        },
        redact,
    )
    return plan


def changes(plan: dict[str, Any]) -> list[dict[str, str]]:
    return [a for a in plan["actions"] if a["kind"] != "keep"]


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as an operator reads it."""
    d = plan["desired"]
    lines = [
        f"plan {plan['id']}: {d['count']} {d['capability']} runner(s) on "
        f"{d['user']}@{d['host']}:{d['port']}"
        + (
            f" (host key {plan['observed']['host_key']})"
            if plan["observed"].get("host_key")
            else ""
        )
    ]
    if plan["blockers"]:
        lines.append("BLOCKED: nothing can be applied until these are fixed:")
        lines += [f"  blocker {b['code']}: {b['message']}" for b in plan["blockers"]]
        return "\n".join(lines)
    width = max((len(a["target"]) for a in plan["actions"]), default=0)
    lines += [f"  {a['kind']:<10} {a['target']:<{width}}  {a['detail']}" for a in plan["actions"]]
    if changes(plan):
        lines.append(
            f"nothing has changed yet; apply with: ci-pool provision apply --plan-id "
            f"{plan['id']} --confirm"
        )
    else:
        lines.append("nothing to do: the host matches the desired state")
    return "\n".join(lines)
