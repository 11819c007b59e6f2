"""What provisioning keeps on the operator's machine, under ``<home>/provision/``:

- ``plans/<id>.json``: each plan as it was shown (desired and observed state, actions);
- ``audit.jsonl``: append-only, one JSON record per event (planned | completed | failed),
  with redacted evidence: commands as argv, never what went to their stdin;
- ``runners.json``: the runner containers provisioned from here (host, login, capability,
  runner name), so ``remove`` and ``rotate`` know where a runner lives.

Nothing here ever holds a token or a password; ``Redactor`` scrubs text before it is kept.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ci_pool.exceptions import InputError

#: Token plaintexts (API ``cip_``, registration ``cirt_``, runner credential ``circ_``) and
#: passwords in URLs are scrubbed even when unregistered.
_TOKEN = re.compile(r"(?:cip|cirt|circ)_[A-Za-z0-9_\-]{8,}")
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):[^@\s/]+@")
_PLAN_ID = re.compile(r"^[0-9a-f]{16}$")
MASK = "***"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Redactor:
    """Replaces every registered secret, token-shaped string and URL password with ***."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: set[str] = set()
        for s in secrets:
            self.add(s)

    def add(self, secret: str) -> None:
        if len(secret) >= 4:
            self._secrets.add(secret)
            self._secrets.add(json.dumps(secret)[1:-1])  # as it appears inside JSON text

    def __call__(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        text = _TOKEN.sub(MASK, text)
        return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


class Records:
    """The plan files, audit log and runner inventory under one home directory."""

    def __init__(self, home: Path):
        self.root = home / "provision"
        self.plans = self.root / "plans"
        self.audit_path = self.root / "audit.jsonl"
        self.inventory_path = self.root / "runners.json"

    def _ensure(self) -> None:
        self.plans.mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- plans ----------------------------------------------------------------------------

    def save_plan(self, plan: dict[str, Any]) -> Path:
        self._ensure()
        path = self.plans / f"{plan['id']}.json"
        _write_atomic(path, json.dumps(plan, indent=2, sort_keys=True) + "\n")
        return path

    def load_plan(self, plan_id: str) -> dict[str, Any]:
        if not _PLAN_ID.match(plan_id):
            raise InputError("a plan id is 16 hex digits, as printed by plan", field="--plan-id")
        path = self.plans / f"{plan_id}.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(
                f"no plan {plan_id} in {self.plans}; run ci-pool provision plan first",
                field="--plan-id",
            ) from None
        return data

    # -- audit ----------------------------------------------------------------------------

    def audit(self, record: dict[str, Any], redact: Redactor) -> dict[str, Any]:
        """Append one record, redacted as a whole (keys and values)."""
        self._ensure()
        line = redact(json.dumps({"at": now_iso(), **record}, sort_keys=True))
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(line + "\n")
        result: dict[str, Any] = json.loads(line)
        return result

    def audit_records(self, plan_id: str | None = None) -> list[dict[str, Any]]:
        try:
            lines = self.audit_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        records = [json.loads(line) for line in lines if line.strip()]
        return [r for r in records if plan_id is None or r.get("plan_id") == plan_id]

    # -- inventory ------------------------------------------------------------------------

    def inventory(self) -> dict[str, dict[str, Any]]:
        try:
            data: dict[str, dict[str, Any]] = json.loads(self.inventory_path.read_text())
        except FileNotFoundError:
            return {}
        return data

    def set_runner(self, name: str, entry: dict[str, Any] | None) -> None:
        self._ensure()
        data = self.inventory()
        if entry is None:
            data.pop(name, None)
        else:
            data[name] = entry
        _write_atomic(self.inventory_path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
