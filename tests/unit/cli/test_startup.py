"""The CLI starts without its heavy dependencies: importing ``ci_pool.cli.main`` (what
``ci-pool --help`` and every command pay before they run) loads neither the store, the
broker, the API, Docker nor provisioning. Checked in a fresh interpreter, by module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("sqlalchemy", "celery", "kombu", "redis", "docker", "fastapi", "uvicorn", "paramiko")
HEAVY += ("httpx", "alembic", "pydantic_settings")


def loaded_after(code: str, **env_vars: str) -> set[str]:
    """Top-level packages in ``sys.modules`` after running ``code`` in a new interpreter."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
    env.update(env_vars)
    res = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env
    )
    assert res.returncode == 0, res.stderr
    return {name.split(".")[0] for name in json.loads(res.stdout.splitlines()[-1])}


def test_importing_the_cli_loads_no_heavy_dependency() -> None:
    loaded = loaded_after("import ci_pool.cli.main")
    assert "typer" in loaded  # the probe does see what was imported
    assert sorted(loaded & set(HEAVY)) == []


def test_help_loads_no_heavy_dependency() -> None:
    loaded = loaded_after(
        "import sys\nfrom ci_pool.cli.main import app\nsys.argv = ['ci-pool', '--help']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass"
    )
    assert sorted(loaded & set(HEAVY)) == []


def test_a_local_show_loads_neither_the_api_nor_docker_nor_provisioning(tmp_path: Path) -> None:
    loaded = loaded_after(
        "import sys\nfrom ci_pool.cli.main import app\n"
        "sys.argv = ['ci-pool', 'show', 'nosuchjob']\n"
        "try:\n    app()\nexcept Exception as exc:\n    print(type(exc).__name__)",
        CI_POOL_HOME=str(tmp_path / "home"),
        CI_POOL_BROKER_URL="redis://127.0.0.1:9/0",
    )
    assert "sqlalchemy" in loaded  # the command did reach the store
    assert sorted(loaded & {"httpx", "fastapi", "uvicorn", "docker", "paramiko"}) == []


def test_provision_defaults_match_the_provisioning_module() -> None:
    from ci_pool.cli import provision as cli_provision
    from ci_pool.provision import apply

    assert cli_provision.HEARTBEAT_TIMEOUT == apply.HEARTBEAT_TIMEOUT
    assert cli_provision.DRAIN_TIMEOUT == apply.DRAIN_TIMEOUT


MIGRATION_AND_BROKER = ("alembic", "mako", "celery", "kombu", "billiard")


def _command(*argv: str) -> str:
    return (
        "import sys\nfrom ci_pool.cli.main import app\n"
        f"sys.argv = ['ci-pool', *{list(argv)!r}]\n"
        "try:\n    app()\nexcept BaseException as exc:\n    print(type(exc).__name__)"
    )


def test_show_and_status_on_a_migrated_store_load_neither_alembic_nor_celery(
    tmp_path: Path,
) -> None:
    env = {
        "CI_POOL_HOME": str(tmp_path / "home"),
        "CI_POOL_BROKER_URL": "redis://127.0.0.1:9/0",
    }
    made = subprocess.run(
        [sys.executable, "-m", "ci_pool", "db", "upgrade"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}, **env},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    for argv in (["show", "nosuchjob"], ["status"]):
        loaded = loaded_after(_command(*argv), **env)
        assert "sqlalchemy" in loaded, argv  # the command did open the store
        assert sorted(loaded & set(MIGRATION_AND_BROKER)) == [], argv


def test_a_remote_show_loads_no_store_and_no_broker(tmp_path: Path) -> None:
    loaded = loaded_after(
        _command("show", "nosuchjob"),
        CI_POOL_HOME=str(tmp_path / "home"),
        CI_POOL_API_URL="http://127.0.0.1:9",
        CI_POOL_API_TOKEN="t",
    )
    assert "httpx" in loaded  # the command did reach for the API
    assert sorted(loaded & {"sqlalchemy", "redis", *MIGRATION_AND_BROKER}) == []
