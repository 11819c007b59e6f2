"""Render the provisioning templates: the Incus profile of a capability with its cloud-init
user-data, the ``ci-pool-worker@.service`` unit, its per-lane drop-in and the worker's
non-secret environment. Templates live in ``provisioning/`` and use ``string.Template``;
nothing here reads a credential."""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml

import ci_pool
from ci_pool import defaults
from ci_pool.core.capabilities import Capability
from ci_pool.exceptions import ConfigError, InputError
from ci_pool.settings import Settings

#: The templates of a source checkout: ``<repo>/provisioning``.
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "provisioning"
#: Where cloud-init puts the worker's virtualenv on the runner.
VENV = "/opt/ci-pool"
#: The ``ExecStart`` binary (a rendering parameter so a test can point it at a real file).
EXEC_PATH = VENV + "/bin/ci-pool"
UNIT_TEMPLATE = "ci-pool-worker@.service"
#: The profile key holding the cloud-init user-data.
USER_DATA_KEY = "cloud-init.user-data"
#: Settings a worker must share with the rest of the pool (timings, limits, checkout).
SHARED_SETTINGS = (
    "lease_ttl",
    "heartbeat_interval",
    "runner_ttl",
    "max_attempts",
    "retry_backoff",
    "max_job_timeout",
    "visibility_timeout",
    "stop_grace",
    "log_max_bytes",
    "checkout_filter",
    "mirror_cache",
    "tree_cache",
    "allow_local_repos",
    "git_url_rewrites",
    "git_hosts",
    "allow_loopback_git",
)
#: A pip requirement, wheel URL or path: no quotes, spaces or shell metacharacters.
#: A Debian package name (lanes/<capability>/packages).
_DEB_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.\-]{1,99}$")
#: Where a lane's sudo rule goes on the runner.
SUDOERS_DIR = "/etc/sudoers.d"
_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-\[\],<>=!~+:/@%]{0,299}$")


def unit_name(capability: str) -> str:
    return f"ci-pool-worker@{capability}.service"


def profile_name(capability: str) -> str:
    return f"ci-pool-{capability}"


def default_package() -> str:
    return f"ci-pool=={ci_pool.__version__}"


def check_package(package: str) -> str:
    if not _PACKAGE.match(package):
        raise InputError(
            "give a pip requirement (ci-pool==0.1.0) or a wheel URL, without spaces or quotes",
            field="--package",
        )
    return package


@dataclass(frozen=True)
class Rendered:
    """Everything one capability's runners are made from."""

    profile: dict[str, Any]
    user_data: str
    unit: str
    dropin: str
    worker_env: str
    package: str = ""
    packages: tuple[str, ...] = ()
    #: The lane's sudo rule (installed at /etc/sudoers.d/ci-pool-<capability>), if any.
    sudoers: str | None = None

    @property
    def profile_yaml(self) -> str:
        return yaml.safe_dump(self.profile, sort_keys=True, default_flow_style=False)

    @property
    def unit_digest(self) -> str:
        """sha256 of the files an upgrade pushes: unit, drop-in, worker.env, sudo rule."""
        parts = (self.unit, self.dropin, self.worker_env, self.sudoers or "")
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    @property
    def profile_digest(self) -> str:
        """sha256 of the profile without its user-data (limits, devices, security) and the
        lane's packages: what changes a runner beyond its unit and ci-pool package."""
        config = {k: v for k, v in self.profile["config"].items() if k != USER_DATA_KEY}
        body = {**self.profile, "config": config, "packages": list(self.packages)}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    @property
    def digest(self) -> str:
        """sha256 of the rendered profile (the user-data, unit and env are inside it)."""
        return hashlib.sha256(json.dumps(self.profile, sort_keys=True).encode()).hexdigest()


def _read(templates: Path, relative: str) -> str:
    path = templates / relative
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            "template not found; run from a ci-pool source checkout or pass --templates",
            file=str(path),
        ) from None


def render_unit(
    templates: Path = TEMPLATES_DIR, *, exec_path: str = EXEC_PATH, stop_timeout: int = 3600
) -> str:
    """The ``ci-pool-worker@.service`` unit (one file for every capability)."""
    text = _read(templates, f"systemd/{UNIT_TEMPLATE}")
    return Template(text).substitute(exec_path=exec_path, stop_timeout=f"{stop_timeout}s")


def render_dropin(cap: Capability, templates: Path = TEMPLATES_DIR) -> str:
    """The lane drop-in: Docker group for Docker lanes, /dev for host-mode lanes, then the
    capability's own ``systemd/<capability>-lane.conf`` where there is one (the iso lane's
    grants for live-build), so only that lane gets them."""
    name = "docker-lane.conf" if cap.mode == "docker" else "host-lane.conf"
    text = _read(templates, f"systemd/{name}")
    own = templates / "systemd" / f"{cap.name}-lane.conf"
    if own.is_file():
        text = text.rstrip("\n") + "\n\n" + own.read_text()
    return text


def lane_packages(cap: Capability, templates: Path = TEMPLATES_DIR) -> list[str]:
    """Debian packages the lane adds (``lanes/<capability>/packages``, one per line)."""
    path = templates / "lanes" / cap.name / "packages"
    if not path.is_file():
        return []
    names = [line.strip() for line in path.read_text().splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    for number, n in enumerate(names, 1):
        if not _DEB_PACKAGE.match(n):
            raise ConfigError(f"{n!r} is not a Debian package name", file=f"{path}:{number}")
    return names


def lane_sudoers(cap: Capability, templates: Path = TEMPLATES_DIR) -> str | None:
    """The lane's sudo rule (``lanes/<capability>/sudoers``), or None: no sudo at all."""
    path = templates / "lanes" / cap.name / "sudoers"
    return path.read_text() if path.is_file() else None


def _lane_files(cap: Capability, templates: Path) -> str:
    """Extra cloud-init ``write_files`` entries of the lane (its sudo rule)."""
    sudoers = lane_sudoers(cap, templates)
    if sudoers is None:
        return ""
    entry = (
        f"- path: {SUDOERS_DIR}/ci-pool-{cap.name}\n"
        "  owner: root:root\n"
        '  permissions: "0440"\n'
        "  content: |\n" + _block(sudoers, 4)
    )
    return "\n" + _block(entry, 2)


def _env_value(key: str, value: str) -> str:
    # Single quotes: systemd takes the value literally (no escapes, no ${} expansion).
    if "'" in value or "\n" in value:
        raise ConfigError("a value for the worker environment holds a quote or newline", key=key)
    return f"{key}='{value}'"


def render_worker_env(settings: Settings, cap: Capability) -> str:
    """The worker's non-secret settings as a systemd EnvironmentFile."""
    lines = [
        f"# ci-pool worker settings for capability {cap.name} (no secret: the API URL and",
        "# the runner's registration token are in /etc/ci-pool/private/credentials.env).",
        _env_value("CI_POOL_HOME", defaults.PROVISION_RUNNER_HOME),
    ]
    capabilities = json.dumps({cap.name: cap.model_dump(mode="json")}, sort_keys=True)
    lines.append(_env_value("CI_POOL_CAPABILITIES", capabilities.replace("'", "\\u0027")))
    for key in SHARED_SETTINGS:
        value = getattr(settings, key)
        text = (
            json.dumps(value, sort_keys=True).replace("'", "\\u0027")
            if isinstance(value, dict | list)
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
        lines.append(_env_value("CI_POOL_" + key.upper(), text))
    return "\n".join(lines) + "\n"


def _block(text: str, indent: int = 6) -> str:
    return textwrap.indent(text.rstrip("\n") + "\n", " " * indent).rstrip("\n")


def packages(cap: Capability, templates: Path = TEMPLATES_DIR) -> list[str]:
    """The Debian packages a runner of this lane needs (cloud-init and upgrades install them)."""
    names = ["git", "python3-venv", "ca-certificates"]
    if cap.mode == "docker":
        names.append("docker.io")
    return names + [p for p in lane_packages(cap, templates) if p not in names]


def render_user_data(
    settings: Settings,
    cap: Capability,
    package: str,
    templates: Path = TEMPLATES_DIR,
    *,
    exec_path: str = EXEC_PATH,
) -> str:
    """cloud-init user-data that installs the worker for one capability."""
    text = Template(_read(templates, "cloud-init/user-data.yaml")).substitute(
        capability=cap.name,
        packages=json.dumps(packages(cap, templates)),
        unit=_block(
            render_unit(templates, exec_path=exec_path, stop_timeout=stop_timeout(settings))
        ),
        dropin=_block(render_dropin(cap, templates)),
        worker_env=_block(render_worker_env(settings, cap)),
        lane_files=_lane_files(cap, templates),
        venv=json.dumps(VENV),
        pip=json.dumps(VENV + "/bin/pip"),
        package=json.dumps(check_package(package)),
        unit_name=json.dumps(unit_name(cap.name)),
    )
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"rendered user-data is not valid YAML: {exc}", file="user-data"
        ) from None
    return text


def stop_timeout(settings: Settings) -> int:
    """Long enough for the longest job to finish after SIGTERM (Celery's warm shutdown)."""
    return int(settings.max_job_timeout + settings.stop_grace + 60)


def render(
    settings: Settings,
    cap: Capability,
    package: str,
    templates: Path = TEMPLATES_DIR,
) -> Rendered:
    """The profile (with its cloud-init user-data) and the files it installs."""
    raw = yaml.safe_load(_read(templates, f"incus/profile-{cap.name}.yaml")) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
        raise ConfigError("a profile template needs a config table", file=f"profile-{cap.name}")
    for key, value in {**raw["config"], **_flat_devices(raw.get("devices") or {})}.items():
        if not isinstance(value, str):
            raise ConfigError(
                "quote every value: Incus stores strings", key=key, file=f"profile-{cap.name}"
            )
    user_data = render_user_data(settings, cap, package, templates)
    profile = {
        "description": str(raw.get("description", "")),
        "config": {**raw["config"], USER_DATA_KEY: user_data},
        "devices": raw.get("devices") or {},
    }
    return Rendered(
        profile=profile,
        user_data=user_data,
        unit=render_unit(templates, stop_timeout=stop_timeout(settings)),
        dropin=render_dropin(cap, templates),
        worker_env=render_worker_env(settings, cap),
        package=check_package(package),
        packages=tuple(packages(cap, templates)),
        sudoers=lane_sudoers(cap, templates),
    )


def _flat_devices(devices: dict[str, Any]) -> dict[str, Any]:
    return {
        f"devices.{name}.{key}": value
        for name, device in devices.items()
        for key, value in (device or {}).items()
    }


def has_profile_template(capability: str, templates: Path = TEMPLATES_DIR) -> bool:
    return (templates / "incus" / f"profile-{capability}.yaml").is_file()
