"""Where the home is: one per user or machine, the same for every command and directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ci_pool import defaults, home
from ci_pool.home import UpRecord, default_home, legacy_notice, read_up_record
from ci_pool.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No CI_POOL_* or XDG variable of the calling shell leaks in; HOME is a tmp dir and
    no system home exists."""
    for key in list(os.environ):
        if key.startswith("CI_POOL_") or key in ("XDG_DATA_HOME", "STATE_DIRECTORY"):
            monkeypatch.delenv(key)
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.setenv("HOME", str(user))
    monkeypatch.setattr(defaults, "SYSTEM_HOME", str(tmp_path / "no-system-home"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return user


def test_default_is_under_the_user_data_dir(clean_env: Path) -> None:
    assert default_home() == clean_env / ".local" / "share" / "ci-pool"
    assert default_home({"HOME": "/h", "XDG_DATA_HOME": "/data"}) == Path("/data/ci-pool")
    # the XDG spec ignores a relative XDG_DATA_HOME
    assert default_home({"HOME": "/h", "XDG_DATA_HOME": "rel"}) == Path("/h/.local/share/ci-pool")


def test_system_service_homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"HOME": "/h", "STATE_DIRECTORY": "/var/lib/ci-pool"}
    assert default_home(env) == Path("/var/lib/ci-pool")  # systemd StateDirectory=ci-pool
    other = {"HOME": "/h", "STATE_DIRECTORY": "/var/lib/other"}
    assert default_home(other) == Path("/h/.local/share/ci-pool")  # not ours
    system = tmp_path / "var-lib-ci-pool"
    system.mkdir()
    monkeypatch.setattr(defaults, "SYSTEM_HOME", str(system))
    assert default_home({"HOME": "/h"}) == system  # a machine with a system pool


def test_settings_use_the_same_home_from_any_directory(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_settings()
    monkeypatch.chdir(tmp_path)
    second = load_settings()
    want = clean_env / ".local" / "share" / "ci-pool"
    assert first.home == second.home == want
    assert first.resolved_store_url == f"sqlite:///{want.resolve() / 'ci-pool.db'}"
    assert not want.exists()  # reading settings creates nothing
    monkeypatch.setenv("CI_POOL_HOME", str(tmp_path / "elsewhere"))
    assert load_settings().home == tmp_path / "elsewhere"


def test_config_file_in_the_home_is_read(clean_env: Path) -> None:
    h = clean_env / ".local" / "share" / "ci-pool"
    h.mkdir(parents=True)
    (h / "ci-pool.toml").write_text("max_attempts = 7\n")
    assert load_settings().max_attempts == 7
    Path("ci-pool.toml").write_text("max_attempts = 2\n")  # ./ci-pool.toml comes first
    assert load_settings().max_attempts == 2


def test_legacy_store_in_the_current_directory_is_pointed_at(tmp_path: Path) -> None:
    cwd = tmp_path / "project"
    (cwd / ".ci-pool").mkdir(parents=True)
    the_home = tmp_path / "home"
    assert legacy_notice(cwd, the_home) is None  # an empty directory: nothing to say
    (cwd / ".ci-pool" / "ci-pool.db").write_bytes(b"")
    notice = legacy_notice(cwd, the_home)
    assert notice is not None and "\n" not in notice
    assert str(cwd / ".ci-pool") in notice and str(the_home) in notice
    assert f"mv {cwd / '.ci-pool'} {the_home}" in notice and "CI_POOL_HOME=" in notice
    assert legacy_notice(cwd, cwd / ".ci-pool") is None  # it is the home: nothing to say


def test_get_settings_prints_the_legacy_notice(tmp_path: Path) -> None:
    (tmp_path / ".ci-pool").mkdir()
    (tmp_path / ".ci-pool" / "ci-pool.db").write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
    env.update(HOME=str(tmp_path / "user"), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    res = subprocess.run(
        [sys.executable, "-c", "from ci_pool.settings import get_settings; get_settings()"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"note: {tmp_path / '.ci-pool'} holds a store" in res.stderr
    assert str(tmp_path / "user" / ".local" / "share" / "ci-pool") in res.stderr


def record(pid: int, the_home: Path) -> UpRecord:
    rec = UpRecord(
        pid=pid,
        broker_url="redis://127.0.0.1:7/0",
        api_url="http://127.0.0.1:8/",
        token_file=str(the_home / "up-token"),
        allow_local_repos=True,
        started_at=time.time(),
    )
    rec.write(the_home)
    return rec


def test_up_record_gives_the_broker_to_every_command(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = default_home()
    h.mkdir(parents=True)
    rec = record(os.getpid(), h)
    assert (h / "up.json").stat().st_mode & 0o777 == 0o600
    assert read_up_record(h) == rec
    s = load_settings()
    assert s.broker_url == "redis://127.0.0.1:7/0" and s.allow_local_repos
    (h / "ci-pool.toml").write_text('broker_url = "redis://127.0.0.1:9/0"\n')
    assert load_settings().broker_url == "redis://127.0.0.1:9/0"  # the file comes first
    monkeypatch.setenv("CI_POOL_BROKER_URL", "redis://127.0.0.1:10/0")
    assert load_settings().broker_url == "redis://127.0.0.1:10/0"  # the environment too


def test_up_record_of_a_dead_process_is_ignored(clean_env: Path) -> None:
    h = default_home()
    h.mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    record(int(proc.stdout), h)
    assert read_up_record(h) is None
    assert load_settings().broker_url == "redis://127.0.0.1:6379/0"
    (h / "up.json").write_text("{not json")
    assert home.read_up_record(h) is None
