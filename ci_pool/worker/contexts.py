"""What a job's steps see: its expression contexts, its environment variables, its secrets.

Contexts and variables are those of GitHub Actions (``github.*`` and its aliases
``gitea.*``/``forgejo.*``, ``runner.*``, ``job.*``, ``strategy.*``, ``vars.*``,
``inputs.*``, ``secrets.*``; ``GITHUB_*``, ``RUNNER_*``, ``CI=true``) plus ci-pool's own
``CI_POOL_*`` variables.

Secrets: a workflow job receives exactly the capability secrets its expressions name
(``secrets.X``, ``github.token``), through those expressions only, never as environment
variables of their own; a name its capability does not offer is the empty string, with a
warning in the log. A job submitted on its own (``submit --secret NAME``) receives the
secrets it names as environment variables, as before, each of which must exist. Either
way only the job's own capability's secrets are ever read.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_pool import defaults
from ci_pool.core import scheduler
from ci_pool.core.capabilities import Capability
from ci_pool.core.policy import read_secret_source, resolve_secrets
from ci_pool.core.services import RegistryCredentials, ServiceSpec
from ci_pool.core.workflow import expressions
from ci_pool.core.workflow.contexts import GITHUB_ALIASES
from ci_pool.core.workflow.run_context import RunFacts, github_context
from ci_pool.store import Job
from ci_pool.worker.attempt import Attempt
from ci_pool.worker.filehash import FileHasher
from ci_pool.worker.runner_store import RunnerStore

#: ``runner.arch`` by ``platform.machine()``.
_ARCHES = {"x86_64": "X64", "amd64": "X64", "aarch64": "ARM64", "arm64": "ARM64"}
_EVENT_FILE = "event.json"


def runner_arch() -> str:
    machine = platform.machine().lower()
    if machine.startswith("arm"):
        return "ARM"
    return _ARCHES.get(machine, "X86" if machine in ("i386", "i686") else machine.upper())


@dataclass(frozen=True)
class JobPlaces:
    """Where the job sees its workspace and the runner's directories (inside its
    container, or on the host), and where they are on the host."""

    workspace: str
    temp: str
    tool_cache: str
    event_path: str
    host_workspace: Path
    host_files: Path

    @classmethod
    def of(cls, cap: Capability, root: Path, scratch: Path | None = None) -> JobPlaces:
        """``scratch``: a host job's scripts and step files are there (``worker.scratch``);
        its temp and tool cache, which can grow big, stay in ``root``."""
        docker = cap.mode == "docker"
        files = defaults.CONTAINER_FILES if docker else str(root / "files")
        scripts = defaults.CONTAINER_SCRIPTS if docker else str(root / "scripts")
        host_files = root / "files"
        if scratch is not None and not docker:
            files, scripts, host_files = str(root), str(scratch / "scripts"), root
        return cls(
            workspace=defaults.CONTAINER_WORKSPACE if docker else str(root / "src"),
            temp=f"{files}/runner-temp",
            tool_cache=f"{files}/tool-cache",
            event_path=f"{scripts}/{_EVENT_FILE}",
            host_workspace=root / "src",
            host_files=host_files,
        )


def job_secrets(cap: Capability, job: Job) -> tuple[dict[str, str], list[str]]:
    """The values of the secrets the job may see, and the names it references that its
    capability does not offer (those are empty)."""
    if not job.pipeline_id:
        return resolve_secrets(cap, job.secrets), []
    offered = {name.upper(): name for name in cap.secrets}
    values: dict[str, str] = {}
    missing: list[str] = []
    for name in job.secrets or ():
        real = offered.get(str(name).upper())
        if real is None:
            values[name] = ""
            missing.append(name)
        else:
            values[name] = read_secret_source(cap.secrets[real], f"secret {real}")
    return values, missing


def _strategy(store: RunnerStore, job: Job) -> dict[str, Any]:
    cells = [job]
    if job.pipeline_id:
        cells = [r for r in store.pipeline_jobs(job.pipeline_id) if r.job_ref == job.job_ref]
    index = next((i for i, r in enumerate(cells) if r.id == job.id), 0)
    return {
        "fail-fast": bool(job.fail_fast),
        "job-index": index,
        "job-total": len(cells),
        "max-parallel": job.max_parallel or len(cells),
    }


def expression_context(store: RunnerStore, att: Attempt, places: JobPlaces) -> expressions.Contexts:
    """Every context of this job (``steps`` grows as the steps run); ``env`` is the job's
    own env rendered in the others."""
    job = att.job
    event, facts, workflow = "push", RunFacts(), ""
    if job.pipeline_id:
        pipeline = store.get_pipeline(job.pipeline_id)
        event, facts = pipeline.event, pipeline.context or RunFacts()
        workflow = pipeline.name or ""
    github = github_context(
        repo=job.repo,
        ref=job.ref,
        sha=att.evidence.commit_sha or job.commit_sha or "",
        event_name=event,
        facts=facts,
        run_id=job.pipeline_id or job.id,
        job=job.job_ref or job.id,
        attempt=job.attempt,
        workspace=places.workspace,
        event_path=places.event_path,
        token=att.secrets.get(defaults.FORGE_TOKEN_SECRET, ""),
        workflow=workflow,
    )
    ctx = expressions.Contexts(
        {name: github for name in ("github", *GITHUB_ALIASES)},
        vars=dict(facts.vars),
        inputs=dict(facts.inputs),
        secrets=dict(att.secrets),
        matrix=dict(job.matrix or {}),
        strategy=_strategy(store, job),
        needs={},
        steps={},
        runner={
            "os": defaults.RUNNER_OS,
            "arch": runner_arch(),
            "name": att.runner_id,
            "temp": places.temp,
            "tool_cache": places.tool_cache,
        },
        job={
            "status": "success",
            "container": {"id": "", "network": att.cap.network if att.cap else ""},
            "services": {},
        },
    )
    ctx.hash_files = FileHasher(places.host_workspace, places.workspace)
    if job.pipeline_id:
        rows = [scheduler.view(r) for r in store.pipeline_jobs(job.pipeline_id)]
        by_key = {r.key: r.job_ref for r in rows}
        # In the order the job lists them, as needs.*.result gives them.
        refs = dict.fromkeys(by_key[k] for k in job.needs or () if k in by_key)
        ctx["needs"] = scheduler.needs_context(rows, refs)
    # A workflow job's env holds templates; a job submitted on its own has plain values.
    ctx["env"] = {
        str(k): expressions.render(str(v), ctx) if job.pipeline_id else str(v)
        for k, v in job.env.items()
    }
    return ctx


def prepare_places(att: Attempt, places: JobPlaces, ctx: dict[str, Any]) -> None:
    """The runner's directories the job is told about, and the event file (read-only)."""
    for name in ("runner-temp", "tool-cache"):
        path = f"{places.host_files}/{name}"
        try:
            os.mkdir(path)  # the parent exists: one call, where os.makedirs stats it first
        except (FileExistsError, FileNotFoundError):
            os.makedirs(path, exist_ok=True)  # raises as before when it is not a directory
    assert att.dirs is not None
    event = json.dumps(ctx["github"]["event"], separators=(",", ":")).encode()
    att.dirs.scripts.create(_EVENT_FILE, event, mode=0o444)


def job_env(att: Attempt, ctx: dict[str, Any]) -> dict[str, str]:
    """The job's environment: its env, the GITHUB_*/RUNNER_* variables as Actions sets
    them, the CI_POOL_* facts, and (a job submitted on its own) its named secrets."""
    job, github, runner = att.job, ctx["github"], ctx["runner"]
    return {
        **ctx["env"],
        **({} if job.pipeline_id else att.secrets),
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": github["workspace"],
        "GITHUB_REPOSITORY": github["repository"],
        "GITHUB_REPOSITORY_OWNER": github["repository_owner"],
        "GITHUB_REF": github["ref"],
        "GITHUB_REF_NAME": github["ref_name"],
        "GITHUB_REF_TYPE": github["ref_type"],
        "GITHUB_SHA": github["sha"],
        "GITHUB_EVENT_NAME": github["event_name"],
        "GITHUB_EVENT_PATH": github["event_path"],
        "GITHUB_RUN_ID": github["run_id"],
        "GITHUB_RUN_NUMBER": github["run_number"],
        "GITHUB_RUN_ATTEMPT": github["run_attempt"],
        "GITHUB_ACTOR": github["actor"],
        "GITHUB_SERVER_URL": github["server_url"],
        "GITHUB_JOB": github["job"],
        "GITHUB_WORKFLOW": github["workflow"],
        "GITHUB_HEAD_REF": github["head_ref"],
        "GITHUB_BASE_REF": github["base_ref"],
        "RUNNER_OS": runner["os"],
        "RUNNER_ARCH": runner["arch"],
        "RUNNER_NAME": runner["name"],
        "RUNNER_TEMP": runner["temp"],
        "RUNNER_TOOL_CACHE": runner["tool_cache"],
        "CI_POOL_JOB_ID": job.id,
        "CI_POOL_ATTEMPT": str(job.attempt),
        "CI_POOL_RUNNER_ID": att.runner_id,
        "CI_POOL_CAPABILITY": job.capability,
        "CI_POOL_REPO": job.repo,
        "CI_POOL_REF": job.ref,
        "CI_POOL_COMMIT_SHA": att.evidence.commit_sha or job.commit_sha or "",
    }


def service_specs(job: Job, ctx: dict[str, Any]) -> tuple[ServiceSpec, ...]:
    """The job's services with their env rendered in the job's contexts."""
    return tuple(
        service.model_copy(
            update={"env": {k: expressions.render(v, ctx) for k, v in service.env.items()}}
        )
        for service in job.services or ()
    )


def registry_auth(job: Job, ctx: dict[str, Any]) -> dict[str, str] | None:
    """The rendered registry login of the job's ``container: credentials``, if any."""
    return _login(job.container.credentials if job.container else None, ctx)


def service_auth(job: Job, ctx: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The rendered registry login of each service that has ``credentials``, by name."""
    logins = {s.name: _login(s.credentials, ctx) for s in job.services or ()}
    return {name: auth for name, auth in logins.items() if auth is not None}


def _login(creds: RegistryCredentials | None, ctx: dict[str, Any]) -> dict[str, str] | None:
    if creds is None:
        return None
    return {
        "username": expressions.render(creds.username, ctx),
        "password": expressions.render(creds.password, ctx),
    }
