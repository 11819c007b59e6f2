"""Admitting work: a job or a workflow is validated, checked by policy, written and queued."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from functools import cached_property
from typing import Any

from ci_pool.core.capabilities import Capability
from ci_pool.core.concurrency import SubmitFacts
from ci_pool.core.names import is_sha
from ci_pool.core.policy import Submitter, check_access, check_policy, check_secret_names
from ci_pool.core.scheduler import PipelineScheduler
from ci_pool.core.specs import JobSpec, JobState
from ci_pool.core.sync import SyncSource
from ci_pool.core.workflow.parser import parse_workflow
from ci_pool.core.workflow.run_context import RunFacts
from ci_pool.core.workflow.targets import sent_to
from ci_pool.exceptions import BrokerError, CIPoolError, InputError, PolicyDenied
from ci_pool.service import workflow_runs
from ci_pool.service.checkouts import CheckoutAdmission
from ci_pool.service.inspection import Inspection
from ci_pool.store import Job, NewJob
from ci_pool.store.models import Pipeline as PipelineRow


class Submission(Inspection):
    """Submit jobs and pipelines: everything that can refuse one is checked before anything
    is written; a policy denial is written ``rejected``."""

    @cached_property
    def checkouts(self) -> CheckoutAdmission:
        """Ref look-ups and the checks of every checkout a job makes."""
        return CheckoutAdmission(self.settings, self.store, self.lookups)

    def prepare(
        self, spec: JobSpec, who: Submitter
    ) -> tuple[JobSpec, Capability, int, str | None, PolicyDenied | None]:
        """Everything that can refuse a job, done before anything is written. Input and
        access errors raise; a policy denial is returned, to be recorded ``rejected``.
        The spec comes back with its checkouts pinned (``CheckoutAdmission.admit``)."""
        cap, timeout = self.settings.admission.admit(spec)
        check_access(who, cap.name, spec.repo)
        check_secret_names(cap, spec.secrets)
        self.checkouts.check_sync(spec, cap, "checkout.sync")
        sha, refs = self.checkouts.locate(spec.repo, spec.ref, cap.refs is not None)
        try:
            check_policy(cap, spec.repo, refs, who)
            spec = self.checkouts.admit(spec, cap, who, "")
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
            workflow_runs.check_target(self.settings, repo, ref, event)
            pipe = sent_to(parse_workflow(text, file, self.settings.admission), runner)
            if trigger is not None:
                payload = trigger.event if payload is None else payload
                actor = actor or trigger.actor
            facts = workflow_runs.run_facts(
                self.settings, pipe.on, event, inputs or {}, payload, actor, trigger
            )
            who = who or Submitter()
            caps = [self.settings.capabilities[job.spec.capability or ""] for job in pipe.jobs]
            for cap in caps:
                check_access(who, cap.name, repo)
            jobs = [
                workflow_runs.pipeline_job(self.settings, job, repo, ref, trigger, sync)
                for job in pipe.jobs
            ]
            for new, cap in zip(jobs, caps, strict=True):
                self.checkouts.check_sync(new.spec, cap, "sync")
            if commit is not None and not is_sha(commit):
                raise InputError(f"{commit!r} is not a full commit id", field="commit")
            denials = workflow_runs.trigger_denials(self.settings, pipe.jobs, caps, trigger)
            strict = any(
                cap.refs is not None
                for job, cap in zip(pipe.jobs, caps, strict=True)
                if job.key not in denials
            )
            if commit is None:
                sha, refs = self.checkouts.locate(repo, ref, strict)
            else:  # the ref still names what was pushed, whatever it points at now
                sha, refs = commit, self.checkouts.locate(repo, ref, strict)[1] if strict else None
            for i, (job, cap) in enumerate(zip(pipe.jobs, caps, strict=True)):
                if job.key in denials:
                    continue
                try:
                    check_policy(cap, repo, refs, who)
                    spec = self.checkouts.admit(jobs[i].spec, cap, who, f"jobs.{job.job_id}")
                except PolicyDenied as denied:
                    denials[job.key] = denied
                else:
                    jobs[i] = replace(jobs[i], spec=spec)
            first = next(iter(denials.values()), None)
            jobs = [replace(new, commit_sha=sha) for new in jobs]
            pipeline_id = self.store.new_pipeline_id()
            at_submit = SubmitFacts(repo, ref, sha or "", event, pipe.name, pipeline_id, facts)
            group, jobs = workflow_runs.concurrency_groups(pipe, jobs, at_submit)
            if first is not None:
                # Policy is checked before anything runs: one denied job rejects the pipeline.
                jobs = workflow_runs.rejected(pipe, jobs, denials)
            run_name = workflow_runs.run_name(pipe.run_name, repo, ref, sha, event)
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


def _redact(url: str) -> str:
    """A broker URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url
