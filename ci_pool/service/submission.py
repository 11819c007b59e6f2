"""Admitting work: a job or a workflow is validated, checked by policy, written and queued."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from ci_pool.core import concurrency
from ci_pool.core.capabilities import Capability
from ci_pool.core.concurrency import ConcurrencyGroup, SubmitFacts
from ci_pool.core.names import check_event, check_ref, check_repo_url, github_repository, is_sha
from ci_pool.core.pipeline import Pipeline, PipelineJob
from ci_pool.core.policy import (
    Submitter,
    check_access,
    check_policy,
    check_pull_request,
    check_secret_names,
)
from ci_pool.core.scheduler import PipelineScheduler
from ci_pool.core.specs import CheckoutSpec, JobSpec, JobState
from ci_pool.core.sync import SyncSource, signature_refusal
from ci_pool.core.workflow.expressions import ExpressionError, render
from ci_pool.core.workflow.inputs import DISPATCH, dispatch_inputs
from ci_pool.core.workflow.parser import parse_workflow
from ci_pool.core.workflow.run_context import RunFacts
from ci_pool.core.workflow.targets import sent_to
from ci_pool.exceptions import (
    BrokerError,
    CIPoolError,
    InputError,
    PolicyDenied,
)
from ci_pool.git import resolve
from ci_pool.remotes import check_remote
from ci_pool.service.inspection import Inspection
from ci_pool.store import Job, NewJob
from ci_pool.store.models import Pipeline as PipelineRow


class Submission(Inspection):
    """Submit jobs and pipelines."""

    def locate(self, repo: str, ref: str, strict: bool) -> tuple[str | None, list[str] | None]:
        """The commit ``ref`` points at (when refs are resolved) and, for capabilities with
        a ref allowlist (``strict``), the full refs it stands for."""
        if is_sha(ref):
            return ref, None
        if not (self.settings.resolve_refs or strict):
            return None, None
        if not self.settings.resolve_refs:  # the allowlist can only judge a full ref
            return None, [ref] if ref.startswith("refs/") else None
        with self.lookups.slot():
            sha, refs = resolve(repo, ref, self.settings)
        return sha, refs

    def prepare(
        self, spec: JobSpec, who: Submitter
    ) -> tuple[JobSpec, Capability, int, str | None, PolicyDenied | None]:
        """Everything that can refuse a job, done before anything is written. Input and
        access errors raise; a policy denial is returned, to be recorded ``rejected``.
        The spec comes back with its checkout ref pinned (``admit_checkout``)."""
        cap, timeout = self.settings.admission.admit(spec)
        check_access(who, cap.name, spec.repo)
        check_secret_names(cap, spec.secrets)
        self.check_sync(spec, cap, "checkout.sync")
        sha, refs = self.locate(spec.repo, spec.ref, cap.refs is not None)
        try:
            check_policy(cap, spec.repo, refs, who)
            spec = self.admit_checkout(spec, cap, who, "")
        except PolicyDenied as denied:
            return spec, cap, timeout, sha, denied
        return spec, cap, timeout, sha, None

    @contextmanager
    def _refusal_drops(self, sync: SyncSource | None) -> Iterator[None]:
        """A refused submission (any error, a policy denial) leaves behind no ``--sync``
        upload that no other job names."""
        try:
            yield
        except CIPoolError:
            if sync is not None:
                self.store.drop_unnamed_sync_payload(sync.sha256)
            raise

    def check_sync(self, spec: JobSpec, cap: Capability, field: str) -> None:
        """Local changes only on the job's own checkout, only where the capability does not
        require signed submissions, and only a payload the store holds."""
        for i, step in enumerate(spec.steps):
            if step.checkout is not None and step.checkout.sync is not None:
                raise InputError(
                    "local changes belong to the job's own checkout, not a checkout step",
                    field=f"steps.{i}.checkout.sync",
                )
        sync = spec.checkout.sync
        if sync is None:
            return
        if cap.require_signature:
            raise InputError(signature_refusal(cap.name), field=field)
        if not self.store.has_sync_payload(sync):
            raise InputError(
                f"no {sync.mode} with sha256 {sync.sha256} was uploaded: upload it first "
                "(POST /v1/sync), or submit with the CLI's --sync",
                field=field,
            )

    def admit_checkout(self, spec: JobSpec, cap: Capability, who: Submitter, path: str) -> JobSpec:
        """Every checkout of a job (the implicit one, and each checkout step) held to the
        capability's rules like the job's own repository and ref, its server to
        ``git_hosts``, and pinned to the commit it names now (where refs are resolved).
        ``path`` is the job's place in a workflow (``jobs.<id>``), "" for a job of its own."""
        if path:
            field = f"{path}.steps.with.{{key}}"
        else:
            field = "checkout.{key}"
        checkout = self._admit(spec.checkout, spec.repo, cap, who, field)
        steps = list(spec.steps)
        for i, step in enumerate(steps):
            if step.checkout is not None:
                where = f"{path}.steps[{i}].with.{{key}}" if path else f"steps.{i}.checkout.{{key}}"
                admitted = self._admit(step.checkout, spec.repo, cap, who, where)
                steps[i] = step.model_copy(update={"checkout": admitted})
        return spec.model_copy(update={"checkout": checkout, "steps": tuple(steps)})

    def _admit(
        self, options: CheckoutSpec, repo: str, cap: Capability, who: Submitter, field: str
    ) -> CheckoutSpec:
        try:
            url = options.repo_url(repo)
            if url != repo:
                check_repo_url(url, allow_local=self.settings.allow_local_repos)
                check_remote(url, self.settings)
        except ValueError as exc:
            raise InputError(f"repository: {exc}", field=field.format(key="repository")) from None
        except InputError as exc:  # RemoteRefused: before any connection
            raise InputError(str(exc), field=field.format(key="repository")) from None
        ref = options.ref
        if ref is None and url == repo:
            return options
        strict = cap.refs is not None
        if ref is not None and "${{" in ref:
            if strict:
                raise InputError(
                    f"checkout ref {ref!r} is an expression; capability {cap.name!r} checks "
                    "refs against its allowed refs when the job is submitted: write the ref "
                    "by name",
                    field=field.format(key="ref"),
                )
            self._check(cap, url, None, who, ref, field)
            return options
        name = ref or "HEAD"
        try:
            sha, refs = self.locate(url, name, strict)
        except InputError as exc:
            raise InputError(str(exc), field=field.format(key="ref")) from None
        self._check(cap, url, refs, who, name, field)
        return options if sha is None else options.model_copy(update={"ref": sha})

    @staticmethod
    def _check(
        cap: Capability,
        url: str,
        refs: list[str] | None,
        who: Submitter,
        ref: str,
        field: str,
    ) -> None:
        try:
            check_policy(cap, url, refs, who)
        except PolicyDenied as denied:
            key = "repository" if denied.rule.endswith(".repos") else "ref"
            raise PolicyDenied(
                f"checkout ref {ref!r}: {denied.detail}"
                if key == "ref"
                else f"checkout repository {url!r}: {denied.detail}",
                rule=denied.rule,
                field=field.format(key=key),
            ) from None

    def submit(self, spec: JobSpec, who: Submitter | None = None) -> Job:
        """Validate, write the job ``queued`` and publish it to its capability's queue.

        A job that policy denies is written ``rejected`` (with the rule) and PolicyDenied
        is raised naming it."""
        with self._refusal_drops(spec.checkout.sync):
            spec, cap, timeout, sha, denied = self.prepare(spec, who or Submitter())
            job = self.store.add_job(
                NewJob(
                    spec=spec.model_copy(
                        update={"name": spec.name or spec.steps[0].run.splitlines()[0][:80]}
                    ),
                    capability=cap.name,
                    queue=cap.queue,
                    timeout_s=timeout,
                    max_attempts=self.settings.max_attempts,
                    commit_sha=sha,
                    state=None if denied is None else JobState.REJECTED,
                    reason=None if denied is None else str(denied),
                )
            )
            if denied is not None:
                raise denied.recorded(job_id=job.id)
            try:
                self.send(cap, job.id, spec.runner)
            except Exception as exc:
                self.store.transition(
                    job.id,
                    JobState.ERROR,
                    reason=f"broker_unavailable: {type(exc).__name__}: {exc}",
                )
                raise BrokerError(
                    f"job {job.id} was recorded but could not be queued: the broker at "
                    f"{_redact(self.settings.broker_url)} did not take it ({exc})"
                ) from exc
            return job

    def scheduler(self) -> PipelineScheduler:
        return PipelineScheduler(self.store, self.publish, self.settings.max_jobs_per_pipeline)

    def submit_pipeline(
        self,
        text: str,
        file: str,
        repo: str,
        ref: str,
        event: str = "push",
        commit: str | None = None,
        who: Submitter | None = None,
        inputs: Mapping[str, str] | None = None,
        payload: dict[str, Any] | None = None,
        actor: str = "",
        trigger: RunFacts | None = None,
        sync: SyncSource | None = None,
        runner: str | None = None,
    ) -> PipelineRow:
        """Parse a workflow, check every job, write the pipeline whole, queue its roots.

        ``inputs`` are a ``workflow_dispatch`` run's, checked against the inputs the
        workflow declares; ``payload`` is the event's (``github.event``), ``actor`` who
        started the run. ``trigger`` (what a webhook, a schedule or a dispatch saw) is kept
        with the pipeline, completed with the run's inputs and vars; a pull request's
        (``secrets_allowed`` off) is held to the pull request policy: no secrets, only the
        capabilities it allows. ``sync`` (local changes) goes to every job's checkout;
        ``runner`` (a glob over runner names) sends every job to the runners it matches."""
        with self._refusal_drops(sync):
            self._check_target(repo, ref, event)
            pipe = sent_to(parse_workflow(text, file, self.settings.admission), runner)
            if trigger is not None:
                payload = trigger.event if payload is None else payload
                actor = actor or trigger.actor
            facts = self.run_facts(pipe.on, event, inputs or {}, payload, actor, trigger)
            who = who or Submitter()
            caps = [self.settings.capabilities[job.spec.capability or ""] for job in pipe.jobs]
            for cap in caps:
                check_access(who, cap.name, repo)
            jobs = [self._pipeline_job(job, repo, ref, trigger, sync) for job in pipe.jobs]
            for new, cap in zip(jobs, caps, strict=True):
                self.check_sync(new.spec, cap, "sync")
            if commit is not None and not is_sha(commit):
                raise InputError(f"{commit!r} is not a full commit id", field="commit")
            denials = self._trigger_denials(pipe.jobs, caps, trigger)
            strict = any(
                cap.refs is not None
                for job, cap in zip(pipe.jobs, caps, strict=True)
                if job.key not in denials
            )
            if commit is None:
                sha, refs = self.locate(repo, ref, strict)
            else:  # the ref still names what was pushed, whatever it points at now
                sha, refs = commit, self.locate(repo, ref, strict)[1] if strict else None
            for i, (job, cap) in enumerate(zip(pipe.jobs, caps, strict=True)):
                if job.key in denials:
                    continue
                try:
                    check_policy(cap, repo, refs, who)
                    spec = self.admit_checkout(jobs[i].spec, cap, who, f"jobs.{job.job_id}")
                except PolicyDenied as denied:
                    denials[job.key] = denied
                else:
                    jobs[i] = replace(jobs[i], spec=spec)
            first = next(iter(denials.values()), None)
            jobs = [replace(new, commit_sha=sha) for new in jobs]
            pipeline_id = self.store.new_pipeline_id()
            at_submit = SubmitFacts(repo, ref, sha or "", event, pipe.name, pipeline_id, facts)
            group, jobs = concurrency_groups(pipe, jobs, at_submit)
            if first is not None:
                # Policy is checked before anything runs: one denied job rejects the pipeline.
                why = f"pipeline rejected: job {next(iter(denials))} was {first}"
                jobs = [
                    replace(
                        new,
                        state=JobState.REJECTED,
                        reason=str(denials[key]) if key in denials else why,
                    )
                    for new, key in zip(jobs, (job.key for job in pipe.jobs), strict=True)
                ]
            run_name = self._run_name(pipe.run_name, repo, ref, sha, event)
            row = self.store.create_pipeline(
                {
                    "id": pipeline_id,
                    "concurrency": group,
                    "name": pipe.name,
                    "run_name": run_name,
                    "permissions": pipe.permissions,
                    "file": file,
                    "repo": repo,
                    "ref": ref,
                    "commit_sha": sha,
                    "event": trigger.event_name if trigger else event,
                    "env": {},
                    "context": facts,
                    **({"state": "rejected"} if first else {}),
                },
                jobs,
            )
            if first is not None:
                raise first.recorded(pipeline_id=row.id)
            self.scheduler().advance(row.id)
            return row

    def run_facts(
        self,
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
        given.update(event=payload, inputs=typed, vars=self.settings.vars, actor=actor)
        try:
            return RunFacts.model_validate(given)
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise InputError(msg, field="event") from None

    def _check_target(self, repo: str, ref: str, event: str) -> None:
        """The repository, ref and event name of a submission; InputError naming the field."""
        try:
            check_repo_url(repo, allow_local=self.settings.allow_local_repos)
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

    def _trigger_denials(
        self,
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
                check_pull_request(cap, self.settings.pull_request_capabilities)
            except PolicyDenied as denied:
                denials[job.key] = denied
        return denials

    @staticmethod
    def _run_name(
        template: str | None, repo: str, ref: str, sha: str | None, event: str
    ) -> str | None:
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

    def _pipeline_job(
        self,
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
        cap, timeout = self.settings.admission.admit(spec)
        return NewJob(
            spec=spec,
            capability=cap.name,
            queue=cap.queue,
            timeout_s=timeout,
            max_attempts=self.settings.max_attempts,
            graph=job,
        )


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


def _redact(url: str) -> str:
    """A broker URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url
