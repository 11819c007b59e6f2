"""Rendering provisioning/: profiles per capability, cloud-init user-data, the worker unit
and environment; and reading the operator's credential file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ci_pool.exceptions import InputError, ProvisioningError
from ci_pool.provision.credentials import read_credentials, runner_file
from ci_pool.provision.records import Redactor
from ci_pool.provision.templates import render, render_unit, render_worker_env
from ci_pool.settings import Settings, load_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(None, home=tmp_path / "home", broker_url="redis://127.0.0.1:1/0")


@pytest.mark.parametrize("cap", ["linux", "android", "flutter-web", "deploy", "iso"])
def test_every_capability_has_a_profile_with_limits(settings: Settings, cap: str) -> None:
    rendered = render(settings, settings.capabilities[cap], "ci-pool==0.1.0")
    config = rendered.profile["config"]
    assert config["limits.cpu"] and config["limits.memory"]
    assert config["security.privileged"] == ("true" if cap == "iso" else "false")
    assert config["security.nesting"] == ("false" if cap == "iso" else "true")
    assert all(isinstance(v, str) for v in config.values())
    user_data = yaml.safe_load(config["cloud-init.user-data"])
    assert config["cloud-init.user-data"].startswith("#cloud-config\n")
    files = {f["path"]: f for f in user_data["write_files"]}
    assert files["/etc/systemd/system/ci-pool-worker@.service"]["content"] == rendered.unit
    dropin = files[f"/etc/systemd/system/ci-pool-worker@{cap}.service.d/lane.conf"]
    assert dropin["content"] == rendered.dropin
    assert ("docker.io" in user_data["packages"]) == (cap != "iso")
    assert ["systemctl", "enable", f"ci-pool-worker@{cap}.service"] in user_data["runcmd"]
    assert [
        "/opt/ci-pool/bin/pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "ci-pool==0.1.0",
    ] in user_data["runcmd"]
    assert "CI_POOL_BROKER_URL" not in config["cloud-init.user-data"]


def test_unit_is_hardened_and_reads_the_credential_from_a_root_only_file() -> None:
    unit = render_unit(exec_path="/x/ci-pool", stop_timeout=99)
    assert "ExecStart=/x/ci-pool worker --capability %i --name %H" in unit
    assert "User=ci-pool" in unit and "TimeoutStopSec=99s" in unit
    assert "EnvironmentFile=/etc/ci-pool/private/credentials.env" in unit
    for option in (
        "Restart=always",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=",
    ):
        assert option in unit


def test_worker_env_carries_the_capability_table_and_no_secret(settings: Settings) -> None:
    env = render_worker_env(settings, settings.capabilities["linux"])
    lines = dict(line.split("=", 1) for line in env.splitlines() if not line.startswith("#"))
    caps = json.loads(lines["CI_POOL_CAPABILITIES"].strip("'"))
    assert caps["linux"]["image"] == settings.capabilities["linux"].image
    assert "CI_POOL_BROKER_URL" not in lines and "CI_POOL_STORE_URL" not in lines
    assert lines["CI_POOL_LEASE_TTL"] == f"'{settings.lease_ttl}'"


def test_bad_package_is_refused(settings: Settings) -> None:
    with pytest.raises(InputError, match="--package"):
        render(settings, settings.capabilities["linux"], "ci-pool\nruncmd: [evil]")


def test_credential_file_errors_never_show_the_value(tmp_path: Path) -> None:
    path = tmp_path / "creds"
    path.write_text("CI_POOL_BROKER_URL=redis://:pw-one@h/0\nnot a line with pw-two\n")
    with pytest.raises(ProvisioningError) as info:
        read_credentials(path, Redactor())
    assert ":2: not a CI_POOL_KEY=value line" in str(info.value)
    assert "pw-two" not in str(info.value)
    path.write_text(
        '# c\nCI_POOL_API_URL=https://api:8443\nCI_POOL_BROKER_URL="redis://:pw-one@h/0"\n'
        "CI_POOL_STORE_URL=sqlite:///x\n"
    )
    redact = Redactor()
    address = read_credentials(path, redact)
    assert address.broker_url == "redis://h/0" and address.api_url == "https://api:8443"
    content = runner_file(address, "h-linux-1", "cirt_tokenvalue123").decode()
    assert "CI_POOL_BROKER_URL='redis://h/0'" in content
    assert "CI_POOL_REGISTRATION_TOKEN='cirt_tokenvalue123'" in content
    assert "pw-one" not in content and "sqlite" not in content
    assert redact("sqlite:///x redis://:pw-one@h/0 pw-one") == "*** *** ***"
    path.write_text("CI_POOL_API_URL=https://api:8443\nCI_POOL_STORE_URL=sqlite:///x\n")
    with pytest.raises(ProvisioningError, match="CI_POOL_BROKER_URL is missing"):
        read_credentials(path, Redactor())
