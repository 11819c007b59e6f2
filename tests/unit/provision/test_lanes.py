"""Lanes are what they claim: the iso lane's unit grants what live-build needs and its
cloud-init installs live-build and a sudo rule for ``lb`` only; every other lane keeps the
base unit's sandbox (no new privileges, no capabilities, a read-only system)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ci_pool.provision.templates import render, render_dropin, render_unit, render_user_data
from ci_pool.settings import Settings, load_settings

#: What live-build (debootstrap, chroot, mounts, device nodes, setuid files) needs.
LIVE_BUILD_CAPS = {
    "CAP_SYS_ADMIN",
    "CAP_SYS_CHROOT",
    "CAP_MKNOD",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_CHOWN",
    "CAP_FOWNER",
    "CAP_DAC_OVERRIDE",
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(None, home=tmp_path / "home", broker_url="redis://127.0.0.1:1/0")


def effective_service(unit: str, dropin: str) -> dict[str, list[str]]:
    """The [Service] settings systemd ends up with for the unit plus its drop-in: each
    assignment is appended; an empty one resets the list (systemd's rule for list
    settings; for single-valued ones the last value wins)."""
    values: dict[str, list[str]] = {}
    for text in (unit, dropin):
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                section = line
                continue
            if section != "[Service]":
                continue
            key, _, value = line.partition("=")
            values[key] = [*values.get(key, []), value] if value else []
    return values


def last(values: dict[str, list[str]], key: str) -> str:
    return values.get(key, [""])[-1] if values.get(key) else ""


@pytest.mark.parametrize("cap", ["linux", "android", "flutter-web", "deploy", "audit"])
def test_other_lanes_keep_the_sandbox(settings: Settings, cap: str) -> None:
    service = effective_service(render_unit(), render_dropin(settings.capabilities[cap]))
    assert last(service, "NoNewPrivileges") == "yes"
    assert service["CapabilityBoundingSet"] == []  # the empty bounding set
    assert service["AmbientCapabilities"] == []
    assert last(service, "ProtectSystem") == "strict"
    assert last(service, "RestrictSUIDSGID") == "yes"
    assert "ReadWritePaths" not in service
    doc = yaml.safe_load(render_user_data(settings, settings.capabilities[cap], "ci-pool==0.1.0"))
    assert "live-build" not in doc["packages"] and "sudo" not in doc["packages"]
    assert not any(f["path"].startswith("/etc/sudoers") for f in doc["write_files"])


def test_a_host_mode_lane_other_than_iso_gets_no_live_build_grants(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        home=tmp_path / "home",
        capabilities={"metal": {"mode": "host", "labels": ["metal"]}},
    )
    service = effective_service(render_unit(), render_dropin(settings.capabilities["metal"]))
    assert last(service, "NoNewPrivileges") == "yes"
    assert service["CapabilityBoundingSet"] == []
    assert last(service, "PrivateDevices") == "no"  # host mode: loop devices


def test_the_iso_lane_can_run_live_build(settings: Settings) -> None:
    service = effective_service(render_unit(), render_dropin(settings.capabilities["iso"]))
    assert last(service, "NoNewPrivileges") == "no"  # sudo is setuid
    granted = {c for value in service["CapabilityBoundingSet"] for c in value.split()}
    assert granted >= LIVE_BUILD_CAPS
    assert not granted & {"CAP_SYS_MODULE", "CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_RAWIO"}
    assert service["AmbientCapabilities"] == []  # the worker itself holds none
    assert last(service, "RestrictSUIDSGID") == "no"
    # The system stays read-only except for the build directories.
    assert last(service, "ProtectSystem") == "strict"
    writable = {p for value in service["ReadWritePaths"] for p in value.split()}
    assert "/var/lib/ci-pool" in writable and not writable & {"/", "/etc", "/usr"}

    rendered = render(settings, settings.capabilities["iso"], "ci-pool==0.1.0")
    doc = yaml.safe_load(rendered.user_data)
    assert {"live-build", "sudo"} <= set(doc["packages"])
    sudoers = next(f for f in doc["write_files"] if f["path"] == "/etc/sudoers.d/ci-pool-iso")
    assert sudoers["permissions"] == "0440" and sudoers["owner"] == "root:root"
    rules = [
        line
        for line in sudoers["content"].splitlines()
        if line.strip() and not line.startswith(("#", "Defaults"))
    ]
    assert rules == ["ci-pool ALL=(root) NOPASSWD: /usr/bin/lb"]
    dropin = next(f for f in doc["write_files"] if f["path"].endswith("@iso.service.d/lane.conf"))
    assert "CAP_SYS_ADMIN" in dropin["content"]


def test_the_iso_sudo_rule_passes_visudo(settings: Settings, tmp_path: Path) -> None:
    visudo = shutil.which("visudo") or (
        "/usr/sbin/visudo" if Path("/usr/sbin/visudo").exists() else None
    )
    if visudo is None:
        pytest.skip("sudo is not installed here (no visudo to check the rule with)")
    doc = yaml.safe_load(render(settings, settings.capabilities["iso"], "x==1").user_data)
    content = next(f for f in doc["write_files"] if "sudoers" in f["path"])["content"]
    rule = tmp_path / "ci-pool-iso"
    rule.write_text(content)
    res = subprocess.run(
        [visudo, "-cf", str(rule)], capture_output=True, text=True, check=False, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr
    # A rule visudo refuses is caught: the check can fail.
    rule.write_text(content.replace("NOPASSWD:", "NOPASSWD"))
    bad = subprocess.run(
        [visudo, "-cf", str(rule)], capture_output=True, text=True, check=False, timeout=30
    )
    assert bad.returncode != 0
