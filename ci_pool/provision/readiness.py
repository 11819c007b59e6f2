"""The readiness gate of a new runner: ``ci-pool doctor`` run inside its container, with
the worker's own settings and credential, before ``provision apply`` says ``completed``."""

from __future__ import annotations

import json
import shlex
from typing import Any

from ci_pool.exceptions import ProvisioningError
from ci_pool.provision.incus import CREDENTIALS_PATH, Incus
from ci_pool.provision.templates import EXEC_PATH

#: The worker's non-secret settings (rendered by cloud-init).
WORKER_ENV = "/etc/ci-pool/worker.env"
#: Seconds doctor may take on the runner (the broker, store, Docker and image checks).
DOCTOR_TIMEOUT = 180.0


def doctor_command(capability: str) -> tuple[str, ...]:
    """``ci-pool doctor --json`` for one capability in the worker's environment (the two
    EnvironmentFiles its unit reads); the nested-Docker benchmark is left to operators."""
    script = (
        f"set -a; . {WORKER_ENV}; . {CREDENTIALS_PATH}; set +a; exec {EXEC_PATH} doctor "
        f"--json --skip-bench --capability {shlex.quote(capability)}"
    )
    return ("sh", "-c", script)


def check_ready(incus: Incus, name: str, capability: str) -> list[dict[str, Any]]:
    """Doctor's findings on runner ``name``; ProvisioningError naming every failing check
    (and its fix) when it is not ready."""
    res = incus.run(
        "exec", name, "--", *doctor_command(capability), timeout=DOCTOR_TIMEOUT, ok=(0, 1)
    )
    try:
        rows = json.loads(res.stdout)
        checks = [
            {k: str(row.get(k, "")) for k in ("name", "status", "detail", "fix")} for row in rows
        ]
    except (ValueError, TypeError, AttributeError):
        raise ProvisioningError(
            f"runner {name}: ci-pool doctor printed no findings (exit {res.exit_code}): "
            f"{incus.redact(res.stderr.strip()[:500]) or '-'}"
        ) from None
    failing = [c for c in checks if c["status"] == "fail"]
    if res.exit_code != 0 or failing:
        found = "; ".join(
            f"{c['name']}: {c['detail']}" + (f" (fix: {c['fix']})" if c["fix"] else "")
            for c in failing
        )
        raise ProvisioningError(
            f"runner {name} is not ready, ci-pool doctor failed: {incus.redact(found) or '-'}"
        )
    return checks
