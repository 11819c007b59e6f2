"""The runner's identity files: 0600, written atomically, refused when open to others."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ci_pool.exceptions import ConfigError
from ci_pool.settings import Settings
from ci_pool.worker.identity import join, load, redis_file, runner_secrets, write_private


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(home=tmp_path / "home", runner_credential_file=tmp_path / "cred", **kw)  # type: ignore[arg-type]


def _saved(tmp_path: Path) -> Settings:
    s = _settings(tmp_path, runner_id="h1-linux-1")
    write_private(tmp_path / "cred", "circ_abc\n")
    write_private(
        redis_file(tmp_path / "cred"),
        json.dumps(
            {
                "name": "h1-linux-1",
                "capabilities": ["linux"],
                "redis_username": "runner-h1-linux-1",
                "redis_password": "pw",
            }
        ),
    )
    return s


def test_saved_identity_is_read_and_gives_the_runner_broker_url(tmp_path: Path) -> None:
    s = _saved(tmp_path)
    assert stat.S_IMODE((tmp_path / "cred").stat().st_mode) == 0o600
    assert s.runner_credential_value() == "circ_abc"
    got = runner_secrets(s, "linux")
    assert got is not None and got.credential == "circ_abc"
    assert got.broker_url("redis://10.0.0.2:6379/0") == (
        "redis://runner-h1-linux-1:pw@10.0.0.2:6379/0"
    )
    assert list(tmp_path.glob(".*tmp")) == []  # no temporary file left behind


def test_files_open_to_others_are_refused_with_the_fix(tmp_path: Path) -> None:
    s = _saved(tmp_path)
    (tmp_path / "cred").chmod(0o640)
    with pytest.raises(ConfigError, match=r"mode 0640.*chmod 600"):
        load(s)


def test_a_capability_it_was_not_registered_for_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="registered for linux, not 'iso'"):
        runner_secrets(_saved(tmp_path), "iso")


def test_no_identity_and_no_token_keeps_the_configured_broker(tmp_path: Path) -> None:
    assert runner_secrets(_settings(tmp_path), "linux") is None


def test_join_refuses_plain_http_off_loopback_before_connecting(tmp_path: Path) -> None:
    s = _settings(
        tmp_path,
        runner_id="h1-linux-1",
        registration_token="cirt_x",
        api_url="http://192.0.2.1:8080",
    )
    with pytest.raises(ConfigError, match="refusing plain http://"):
        join(s, ["linux"])
    with pytest.raises(ConfigError, match="CI_POOL_RUNNER_ID"):
        join(_settings(tmp_path, registration_token="cirt_x", api_url="https://p"), ["linux"])
