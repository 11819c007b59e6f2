"""The executor contract: start an isolated place for one job, run steps, stop, clean up."""

from __future__ import annotations

import abc
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ci_pool.core.capabilities import Capability
from ci_pool.core.services import ContainerSpec, ServiceSpec

#: Why a runner whose container engine does not answer takes no job.
ENGINE_DOWN = "cannot reach its Docker engine: start dockerd (or set DOCKER_HOST)"

#: How each ``shell:`` runs a step script ($1); None means bash where there is one, else sh.
SHELLS = {
    "bash": 'exec 2>&1; exec bash --noprofile --norc -eo pipefail "$1"',
    "sh": 'exec 2>&1; exec sh -e "$1"',
}

#: Runs a step script with bash (errexit + pipefail) where the image has it, else POSIX sh -e.
STEP_LAUNCHER = (
    "exec 2>&1; "  # one stream, so stdout and stderr lines keep the order they were written in
    'if command -v bash >/dev/null 2>&1; then exec bash --noprofile --norc -eo pipefail "$1"; '
    'else exec sh -e "$1"; fi'
)


@dataclass(frozen=True, slots=True)
class JobContext:
    """What an executor needs to know about the job it runs."""

    job_id: str
    attempt: int
    runner_id: str
    capability: Capability
    #: Host directory holding the checkout (mounted as the workspace).
    workspace: Path
    #: Host directory holding the generated step scripts (the job can only read it).
    scripts: Path
    #: Host directory holding the files steps write back ($GITHUB_OUTPUT); the job can
    #: write it, so the runner reads it only through ``runner.jobfiles``.
    files: Path
    env: dict[str, str] = field(default_factory=dict)
    #: The image to run (the capability's, or the job's override where allowed).
    image: str = ""
    #: The job's services, their env rendered.
    services: tuple[ServiceSpec, ...] = ()
    #: ``container:`` options, volumes and credentials.
    container: ContainerSpec | None = None
    #: The rendered registry login (``username``, ``password``) for pulling ``image``.
    registry_auth: dict[str, str] | None = field(default=None, repr=False)
    #: The rendered registry login of each service that has one, by service name.
    service_auth: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    #: Id of the warm container the job took (see ``executors.warm``), or "".
    warm_container: str = ""


class Execution(abc.ABC):
    """One job's isolated execution. ``stop`` may be called from another thread."""

    #: Where the executor reports itself in the evidence record.
    mode: str = ""

    @abc.abstractmethod
    def start(self) -> None:
        """Create the container or process group; raises ExecutorError on infra failure."""

    #: Where the job sees the ``scripts`` directory, read-only.
    scripts_path: str = ""
    #: Where the job sees the ``files`` directory ($GITHUB_OUTPUT and the like).
    files_path: str = ""
    #: Where the job sees its workspace.
    workspace_path: str = ""

    @abc.abstractmethod
    def run_step(
        self,
        script_name: str,
        on_output: Callable[[bytes], None],
        env: dict[str, str] | None = None,
        shell: str | None = None,
    ) -> int:
        """Run one generated script from ``scripts`` with extra ``env``; its exit code."""

    @abc.abstractmethod
    def interrupt(self, grace: float) -> None:
        """End the running step only (SIGTERM, ``grace``, SIGKILL); later steps may run."""

    @abc.abstractmethod
    def stop(self, grace: float) -> None:
        """SIGTERM what runs, wait up to ``grace`` seconds, then SIGKILL; no step runs after."""

    @abc.abstractmethod
    def close(self) -> None:
        """Remove everything the execution created; safe to call more than once."""

    def steps_over(self) -> None:
        """The job's steps are over: stop the processes they left running in the background
        (they run on through the job's later steps, as on GitHub, never past the job). Called
        before the job's outcome is recorded; never raises. A container's go with it."""
        return None

    def describe(self) -> dict[str, str]:
        """Facts for the evidence record (image digest, container id, ...)."""
        return {}

    def services_context(self) -> dict[str, Any]:
        """``job.services``: id, network and mapped ports of each service."""
        return {}


class Executor(abc.ABC):
    """Makes executions for one runner; holds the client it needs (docker, nothing)."""

    @abc.abstractmethod
    def execution(self, ctx: JobContext) -> Execution: ...

    def remove_tree(self, path: Path, image: str) -> None:
        """Remove a workspace the runner's own user cannot (files made by another user)."""
        shutil.rmtree(path, ignore_errors=True)

    def remove_leftovers(self, job_id: str, attempt: int | None = None) -> int:
        """Remove whatever earlier attempts of this job (or only ``attempt``) left behind;
        returns a count."""
        return 0

    def health(self, capability: Capability) -> str | None:
        """Why this runner cannot run ``capability``'s jobs now (engine down, image
        missing), with what fixes it; None when it can."""
        return None

    def take_warm(self, workspace_root: Path, runner_id: str, root: Path) -> str:
        """Move one of the runner's idle warm slots to ``root``; its container's id, or ""
        when there is none (executors without warm containers never have one)."""
        return ""

    def job_leftovers(self) -> list[tuple[str, int]]:
        """(job id, attempt) of every job container still here; the runner's sweep removes
        those of attempts that have ended."""
        return []


def launcher(shell: str | None) -> str:
    """The ``sh -c`` program that starts a step script in the requested shell."""
    return SHELLS[shell] if shell else STEP_LAUNCHER
