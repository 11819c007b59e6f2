"""The keys each level of a workflow file may have, and the GitHub keys ci-pool refuses and why."""

from __future__ import annotations

import re
from typing import Any

from ci_pool.core.workflow.yaml_source import MarkedList, MarkedMap, Pos, Source

WORKFLOW_KEYS = ("name", "run-name", "on", "permissions", "env", "defaults", "jobs", "concurrency")
JOB_KEYS = (
    "name", "runs-on", "needs", "if", "env", "timeout-minutes", "continue-on-error",
    "container", "strategy", "outputs", "steps", "permissions", "environment", "concurrency",
    "services", "runner",
)  # fmt: skip
#: ``permissions:`` scopes as GitHub and Gitea define them (recorded, not enforced: the
#: pool hands out no token of its own).
PERMISSION_SCOPES = (
    "actions", "attestations", "checks", "contents", "deployments", "discussions",
    "id-token", "issues", "models", "packages", "pages", "pull-requests",
    "repository-projects", "security-events", "statuses",
)  # fmt: skip
ENVIRONMENT_KEYS = ("name", "url")
STEP_KEYS = (
    "name", "id", "run", "shell", "working-directory", "env", "if", "timeout-minutes",
    "continue-on-error", "uses", "with",
)  # fmt: skip
ACTION_STEP_KEYS = (
    "name", "id", "uses", "with", "env", "if", "timeout-minutes", "continue-on-error",
)  # fmt: skip
CHECKOUT_STEP_KEYS = ("name", "id", "uses", "with", "if", "continue-on-error")
CHECKOUT_INPUTS = (
    "repository", "ref", "path", "fetch-depth", "filter", "sparse-checkout",
    "sparse-checkout-cone-mode", "submodules", "lfs", "clean", "persist-credentials",
)  # fmt: skip
CONTAINER_KEYS = ("image", "env", "options", "volumes", "credentials")
SERVICE_KEYS = ("image", "env", "ports", "options", "credentials")
CREDENTIAL_KEYS = ("username", "password")
SHELLS = ("bash", "sh")

#: Job, step and output ids.
ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

# Known keys ci-pool does not support, by "<level>.<key>": why, and what to do instead.
UNSUPPORTED = {
    "job.uses": "reusable workflows are not supported; copy the called jobs into this file",
    "job.with": "with: belongs to reusable workflows, which are not supported",
    "job.secrets": "secrets: belongs to reusable workflows, which are not supported; read "
    "the capability's secrets as ${{ secrets.NAME }}",
    "job.defaults": "defaults are supported at the top level only (defaults.run)",
    "container.ports": "ports are not supported: job containers have no published ports",
    "service.volumes": "volumes are not supported on services: a service gets no mount",
    "service.credentials": "registry credentials are supported for the job's container "
    "only; a service's image must be on the runner",
}


def check_keys(
    src: Source, data: MarkedMap, path: str, level: str, allowed: tuple[str, ...]
) -> None:
    """Report unknown keys, explaining the ones GitHub has and ci-pool does not support."""
    why = {k.split(".", 1)[1]: v for k, v in UNSUPPORTED.items() if k.startswith(level + ".")}
    src.check_keys(data, path, level, allowed, why)


def one_or_many(value: Any, pos: Pos) -> list[tuple[Any, Pos]]:
    """A value that may be one item or a list of items, with positions."""
    if isinstance(value, MarkedList):
        return list(zip(value, value.pos, strict=True))
    return [(value, pos)]
