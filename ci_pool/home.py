"""The home: the one directory per user (or machine) holding the store, workspaces,
artifacts, tokens and the record of a running ``ci-pool up``.

Which home (first that applies): ``CI_POOL_HOME`` or ``home`` in ci-pool.toml (settings);
``$STATE_DIRECTORY`` when systemd runs the process with ``StateDirectory=ci-pool``;
``/var/lib/ci-pool`` when it exists and this user may write it (a machine with a system
pool); ``$XDG_DATA_HOME/ci-pool``, by default ``~/.local/share/ci-pool``.

Standard library only: the CLI reads it before anything heavy is imported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ci_pool import defaults


def default_home(env: Mapping[str, str] | None = None) -> Path:
    """The home when neither ``CI_POOL_HOME`` nor the config file names one."""
    env = os.environ if env is None else env
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state and Path(state).name == defaults.HOME_NAME:
        return Path(state)
    system = Path(defaults.SYSTEM_HOME)
    if system.is_dir() and os.access(system, os.W_OK | os.X_OK):
        return system
    data = env.get("XDG_DATA_HOME", "")
    if data and Path(data).is_absolute():  # the XDG spec ignores relative paths
        return Path(data) / defaults.HOME_NAME
    user_home = env.get("HOME") or str(Path.home())
    return Path(user_home) / ".local" / "share" / defaults.HOME_NAME


def legacy_notice(cwd: Path, home: Path) -> str | None:
    """One line about a per-directory ``./.ci-pool`` store that is not the home, or None.

    Older versions kept the store in the current directory; its jobs are not lost, but
    they are not the ones commands show unless the user points the home at it."""
    old = cwd / defaults.HOME_DIR
    if not (old / defaults.STORE_FILE).is_file():
        return None
    try:
        if old.resolve() == home.resolve():
            return None
    except OSError:
        return None
    return (
        f"note: {old} holds a store from an older ci-pool that is not used: the home is "
        f"{home}. Move it there (mv {old} {home}, with no pool running) or keep using it "
        f'(home = "{old}" in ci-pool.toml, or CI_POOL_HOME={old}).'
    )


@dataclass(frozen=True)
class UpRecord:
    """Where a running ``ci-pool up`` serves: written to ``<home>/up.json`` (0600)."""

    pid: int
    broker_url: str
    api_url: str
    #: File (0600) holding the admin token printed at start.
    token_file: str
    allow_local_repos: bool
    started_at: float

    def write(self, home: Path) -> Path:
        path = home / defaults.UP_RECORD
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh, indent=2)
        os.replace(tmp, path)
        return path


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_up_record(home: Path) -> UpRecord | None:
    """The record of the ``ci-pool up`` serving this home, if its process still runs."""
    try:
        data = json.loads((home / defaults.UP_RECORD).read_text())
        record = UpRecord(
            pid=int(data["pid"]),
            broker_url=str(data["broker_url"]),
            api_url=str(data["api_url"]),
            token_file=str(data["token_file"]),
            allow_local_repos=bool(data["allow_local_repos"]),
            started_at=float(data["started_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if pid_alive(record.pid) else None
