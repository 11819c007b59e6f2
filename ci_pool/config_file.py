"""Where ci-pool.toml is and what it holds, before the settings are built from it: the
file named by ``--config``/``CI_POOL_CONFIG``, else ``./ci-pool.toml``, else the home's;
its TOML; and the defaults a running ``ci-pool up`` of the home records below it."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from ci_pool import defaults
from ci_pool.exceptions import ConfigError
from ci_pool.home import default_home, read_up_record


def config_path(explicit: str | Path | None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("CI_POOL_CONFIG")
    if env:
        return Path(env)
    local = Path(defaults.CONFIG_FILE)
    if local.is_file():
        return local
    in_home = _env_home() / defaults.CONFIG_FILE
    return in_home if in_home.is_file() else None


def config_file_in_use() -> Path | None:
    """The ci-pool.toml settings are read from, if any."""
    return config_path(None)


def _env_home() -> Path:
    """The home before the config file is read: ``CI_POOL_HOME`` or the default."""
    return Path(os.environ.get("CI_POOL_HOME") or default_home())


def up_defaults(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``data`` with what a running ``ci-pool up`` of the home records, below the file's
    own keys (and so below the environment): its broker and whether it takes local repos."""
    home = overrides.get("home") or os.environ.get("CI_POOL_HOME") or data.get("home")
    record = read_up_record(Path(home) if home else default_home())
    if record is None:
        return data
    merged = {"broker_url": record.broker_url, **data}
    if record.allow_local_repos:
        merged.setdefault("allow_local_repos", True)
    return merged


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config file not found (CI_POOL_CONFIG)", file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=str(path)) from None
