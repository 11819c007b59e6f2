"""A workflow run at submit: its target, contexts and run name, its jobs as written, the pull
request policy's denials and the concurrency groups, before anything is stored."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from ci_pool.core import concurrency
from ci_pool.core.capabilities import Capability
from ci_pool.core.concurrency import ConcurrencyGroup, SubmitFacts
from ci_pool.core.names import check_event, check_ref, check_repo_url, github_repository
from ci_pool.core.pipeline import Pipeline, PipelineJob
from ci_pool.core.policy import check_pull_request
from ci_pool.core.specs import JobState
from ci_pool.core.sync import SyncSource
from ci_pool.core.workflow.expressions import ExpressionError, render
from ci_pool.core.workflow.inputs import DISPATCH, dispatch_inputs
from ci_pool.core.workflow.run_context import RunFacts
from ci_pool.exceptions import InputError, PolicyDenied
from ci_pool.settings import Settings
from ci_pool.store import NewJob


def check_target(settings: Settings, repo: str, ref: str, event: str) -> None:
    """The repository, ref and event name of a submission; InputError naming the field."""
    try:
        check_repo_url(repo, allow_local=settings.allow_local_repos)
    except ValueError as exc:
        raise InputError(str(exc), field="repo") from None
    try:
        if ref != "HEAD":
            check_ref(ref)
    except ValueError as exc:
        raise InputError(str(exc), field="ref") from None
    try:
        check_event(event)
    except ValueError as exc:
        raise InputError(str(exc), field="event") from None


def run_facts(
    settings: Settings,
    on: Any,
    event: str,
    inputs: Mapping[str, str],
    payload: dict[str, Any] | None,
    actor: str,
    trigger: RunFacts | None = None,
) -> RunFacts:
    """What the run's contexts hold beyond its repository, ref and commit: the
    ``trigger``'s facts (if any) with the run's typed inputs, vars and actor."""
    typed = dispatch_inputs(on, inputs, event)
    if payload is None:
        payload = {"inputs": typed} if event == DISPATCH else {}
    given = {} if trigger is None else trigger.model_dump(exclude={"event", "inputs", "vars"})
    given.update(event=payload, inputs=typed, vars=settings.vars, actor=actor)
    try:
        return RunFacts.model_validate(given)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise InputError(msg, field="event") from None


def run_name(template: str | None, repo: str, ref: str, sha: str | None, event: str) -> str | None:
    """``run-name`` rendered over what is known at submit (github.*, inputs.*)."""
    if template is None:
        return None
    full = ref if ref.startswith("refs/") or ref == "HEAD" else f"refs/heads/{ref}"
    github = {
        "ref": full,
        "ref_name": full.removeprefix("refs/heads/").removeprefix("refs/tags/"),
        "sha": sha or "",
        "repository": github_repository(repo),
        "repository_owner": github_repository(repo).partition("/")[0],
        "event_name": event,
    }
    try:
        return render(template, {"github": github, "inputs": {}})[:200] or None
    except ExpressionError as exc:
        raise InputError(f"run-name: {exc}", field="run-name") from None


def pipeline_job(
    settings: Settings,
    job: PipelineJob,
    repo: str,
    ref: str,
    trigger: RunFacts | None = None,
    sync: SyncSource | None = None,
) -> NewJob:
    """One pipeline job as written, its spec admitted at ``repo`` and ``ref`` (the parser
    has reported any problem already, at its line); without its secrets when the
    trigger withholds them."""
    update: dict[str, object] = {"repo": repo, "ref": ref, "name": job.spec.name or job.key}
    if trigger is not None and not trigger.secrets_allowed:
        update["secrets"] = ()
    if sync is not None:
        update["checkout"] = job.spec.checkout.model_copy(update={"sync": sync})
    spec = job.spec.model_copy(update=update)
    cap, timeout = settings.admission.admit(spec)
    return NewJob(
        spec=spec,
        capability=cap.name,
        queue=cap.queue,
        timeout_s=timeout,
        max_attempts=settings.max_attempts,
        graph=job,
    )


def trigger_denials(
    settings: Settings,
    jobs: Sequence[PipelineJob],
    caps: Sequence[Capability],
    trigger: RunFacts | None,
) -> dict[str, PolicyDenied]:
    """The jobs the pull request policy refuses (none for other events)."""
    if trigger is None or trigger.event_name != "pull_request":
        return {}
    denials: dict[str, PolicyDenied] = {}
    for job, cap in zip(jobs, caps, strict=True):
        try:
            check_pull_request(cap, settings.pull_request_capabilities)
        except PolicyDenied as denied:
            denials[job.key] = denied
    return denials


def rejected(
    pipe: Pipeline, jobs: list[NewJob], denials: Mapping[str, PolicyDenied]
) -> list[NewJob]:
    """Every job of a pipeline with a denied job, written ``rejected``: a denied job with
    its own reason, the others naming the first denial."""
    first_key, first = next(iter(denials.items()))
    why = f"pipeline rejected: job {first_key} was {first}"
    return [
        replace(
            new,
            state=JobState.REJECTED,
            reason=str(denials[key]) if key in denials else why,
        )
        for new, key in zip(jobs, (job.key for job in pipe.jobs), strict=True)
    ]


def concurrency_groups(
    pipe: Pipeline, jobs: list[NewJob], facts: SubmitFacts
) -> tuple[ConcurrencyGroup | None, list[NewJob]]:
    """The workflow's concurrency group and each job's, evaluated for this run."""
    group = concurrency.resolve(pipe.concurrency, facts, "concurrency")
    out = []
    for job, new in zip(pipe.jobs, jobs, strict=True):
        where = f"jobs.{job.job_id}.concurrency"
        mine = concurrency.resolve(job.concurrency, facts, where, job.matrix)
        concurrency.check_no_deadlock(group, mine, where)
        out.append(replace(new, concurrency=mine))
    return group, out
