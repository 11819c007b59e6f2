"""Admitting work: a job or a workflow is validated, checked by policy, written and queued."""

from __future__ import annotations

from dataclasses import replace

from ci_pool.broker.app import send_run_job
from ci_pool.core.capabilities import Capability, route
from ci_pool.core.pipeline import PipelineJob
from ci_pool.core.policy import Submitter, check_access, check_policy, check_secret_names
from ci_pool.core.scheduler import PipelineScheduler
from ci_pool.core.specs import (
    CheckoutSpec,
    JobSpec,
    JobState,
    check_event,
    check_ref,
    check_repo_url,
    github_repository,
    is_sha,
)
from ci_pool.core.workflow.expressions import ExpressionError, render
from ci_pool.core.workflow.parser import parse_workflow
from ci_pool.exceptions import (
    BrokerError,
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
        cap = route(self.settings.capabilities, spec.capability, spec.labels)
        check_access(who, cap.name, spec.repo)
        timeout = spec.timeout or min(cap.default_timeout, self.settings.max_job_timeout)
        if timeout > self.settings.max_job_timeout:
            raise InputError(
                f"{timeout}s is above the pool's limit of {self.settings.max_job_timeout}s",
                field="timeout",
            )
        if spec.image and spec.image != cap.image and not cap.allow_container_override:
            raise InputError(
                f"capability {cap.name!r} runs only its own image ({cap.image or 'host mode'}); "
                "drop the image override or use a capability with allow_container_override",
                field="image",
            )
        check_secret_names(cap, spec.secrets)
        sha, refs = self.locate(spec.repo, spec.ref, cap.refs is not None)
        try:
            check_policy(cap, spec.repo, refs, who)
            spec = self.admit_checkout(spec, cap, who, "")
        except PolicyDenied as denied:
            return spec, cap, timeout, sha, denied
        return spec, cap, timeout, sha, None

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
            send_run_job(self.celery, cap, job.id)
        except Exception as exc:
            self.store.transition(
                job.id, JobState.ERROR, reason=f"broker_unavailable: {type(exc).__name__}: {exc}"
            )
            raise BrokerError(
                f"job {job.id} was recorded but could not be queued: the broker at "
                f"{_redact(self.settings.broker_url)} did not take it ({exc})"
            ) from exc
        return job

    def scheduler(self) -> PipelineScheduler:
        return PipelineScheduler(self.store, self.publish)

    def submit_pipeline(
        self,
        text: str,
        file: str,
        repo: str,
        ref: str,
        event: str = "push",
        commit: str | None = None,
        who: Submitter | None = None,
    ) -> PipelineRow:
        """Parse a workflow, check every job, write the pipeline whole, queue its roots."""
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
        pipe = parse_workflow(
            text, file, self.settings.capabilities, self.settings.max_jobs_per_pipeline
        )
        who = who or Submitter()
        caps = [self.settings.capabilities[job.spec.capability or ""] for job in pipe.jobs]
        for cap in caps:
            check_access(who, cap.name, repo)
        jobs = [self._pipeline_job(job, repo, ref) for job in pipe.jobs]
        if commit is not None and not is_sha(commit):
            raise InputError(f"{commit!r} is not a full commit id", field="commit")
        strict = any(cap.refs is not None for cap in caps)
        if commit is None:
            sha, refs = self.locate(repo, ref, strict)
        else:  # the ref still names what was pushed, whatever it points at now
            sha, refs = commit, self.locate(repo, ref, strict)[1] if strict else None
        denials = {}
        for i, (job, cap) in enumerate(zip(pipe.jobs, caps, strict=True)):
            try:
                check_policy(cap, repo, refs, who)
                spec = self.admit_checkout(jobs[i].spec, cap, who, f"jobs.{job.job_id}")
            except PolicyDenied as denied:
                denials[job.key] = denied
            else:
                jobs[i] = replace(jobs[i], spec=spec)
        first = next(iter(denials.values()), None)
        jobs = [replace(new, commit_sha=sha) for new in jobs]
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
                "name": pipe.name,
                "run_name": run_name,
                "permissions": pipe.permissions,
                "file": file,
                "repo": repo,
                "ref": ref,
                "commit_sha": sha,
                "event": event,
                "env": {},
                **({"state": "rejected"} if first else {}),
            },
            jobs,
        )
        if first is not None:
            raise first.recorded(pipeline_id=row.id)
        self.scheduler().advance(row.id)
        return row

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

    def _pipeline_job(self, job: PipelineJob, repo: str, ref: str) -> NewJob:
        """One pipeline job as written, its spec admitted at ``repo`` and ``ref``."""
        cap = self.settings.capabilities[job.spec.capability or ""]
        spec = job.spec.model_copy(
            update={"repo": repo, "ref": ref, "name": job.spec.name or job.key}
        )
        if spec.image and spec.image != cap.image and not cap.allow_container_override:
            raise InputError(
                f"job {job.key!r}: capability {cap.name!r} runs only its own image; "
                "remove container: or use a capability that allows overrides",
                field=f"jobs.{job.job_id}.container",
            )
        return NewJob(
            spec=spec,
            capability=cap.name,
            queue=cap.queue,
            timeout_s=min(spec.timeout or cap.default_timeout, self.settings.max_job_timeout),
            max_attempts=self.settings.max_attempts,
            graph=job,
        )


def _redact(url: str) -> str:
    """A broker URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url
