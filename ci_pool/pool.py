"""The pool as its users see it (local mode: straight to the store and the broker)."""

from __future__ import annotations

import hashlib
import math
import shutil
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from ci_pool import waiting
from ci_pool.capabilities import Capability, route
from ci_pool.celery_app import create_celery, send_run_job
from ci_pool.exceptions import (
    BrokerError,
    CIPoolError,
    InfraError,
    InputError,
    NotFound,
    PolicyDenied,
)
from ci_pool.jobs import (
    FINAL_STATES,
    JobSpec,
    JobState,
    check_event,
    check_ref,
    check_repo_url,
    is_sha,
)
from ci_pool.pipeline import PipelineJob
from ci_pool.policy import Submitter, check_access, check_policy, check_secret_names
from ci_pool.reaper import Reaper
from ci_pool.remotes import LookupLimit
from ci_pool.runner.checkout import resolve
from ci_pool.runner.logs import follow_stream
from ci_pool.runners import RunnerInfo, RunnerRegistry
from ci_pool.scheduler import PipelineScheduler
from ci_pool.settings import Settings
from ci_pool.store import Job, NewJob, Store
from ci_pool.store.files import private_dir
from ci_pool.store.models import Artifact
from ci_pool.store.models import Pipeline as PipelineRow
from ci_pool.tasks import drain_key
from ci_pool.views import RunnerStatus, runner_statuses
from ci_pool.workflow import parse_workflow


class Pool:
    """Submit, inspect, wait for and cancel jobs."""

    def __init__(self, settings: Settings, store: Store | None = None):
        self.settings = settings
        self._store = store
        #: Ref look-ups at submit contact servers the submitter names: a bounded few at once.
        self.lookups = LookupLimit(settings.ref_lookup_concurrency, settings.ref_lookup_wait)

    @cached_property
    def store(self) -> Store:
        store = self._store or Store(self.settings.resolved_store_url)
        if self._store is None:
            private_dir(self.settings.home)
        store.init_schema()
        return store

    @cached_property
    def celery(self) -> Celery:
        return create_celery(self.settings)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.broker_url, socket_timeout=10)

    # -- submit -----------------------------------------------------------------------

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
            spec = self.admit_checkout(spec, cap, who, "checkout.ref")
        except PolicyDenied as denied:
            return spec, cap, timeout, sha, denied
        return spec, cap, timeout, sha, None

    def admit_checkout(self, spec: JobSpec, cap: Capability, who: Submitter, field: str) -> JobSpec:
        """A checkout ``ref`` other than the job's is held to the capability's rules like
        the job's ref, and pinned to the commit it names now (where refs are resolved)."""
        ref = spec.checkout.ref
        if ref is None:
            return spec
        try:
            sha, refs = self.locate(spec.repo, ref, cap.refs is not None)
        except InputError as exc:
            raise InputError(str(exc), field=field) from None
        try:
            check_policy(cap, spec.repo, refs, who)
        except PolicyDenied as denied:
            raise PolicyDenied(
                f"checkout ref {ref!r}: {denied.detail}", rule=denied.rule, field=field
            ) from None
        if sha is None:
            return spec
        return spec.model_copy(update={"checkout": spec.checkout.model_copy(update={"ref": sha})})

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

    # -- pipelines --------------------------------------------------------------------

    def scheduler(self) -> PipelineScheduler:
        def publish(capability: str, job_id: str) -> None:
            send_run_job(self.celery, self.settings.capabilities[capability], job_id)

        return PipelineScheduler(self.store, publish)

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
            field = f"jobs.{job.job_id}.steps.with.ref"
            try:
                check_policy(cap, repo, refs, who)
                spec = self.admit_checkout(jobs[i].spec, cap, who, field)
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
        row = self.store.create_pipeline(
            {
                "name": pipe.name,
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

    def reaper(self) -> Reaper:
        """A reaper for this pool; removes leftover containers when Docker answers here."""
        remove = None
        try:
            from ci_pool.runner.executors.docker import DockerExecutor

            remove = DockerExecutor.from_env().remove_leftovers
        except CIPoolError:
            pass

        def publish(capability: str, job_id: str) -> None:
            send_run_job(self.celery, self.settings.capabilities[capability], job_id)

        return Reaper(
            self.store,
            self.redis,
            publish,
            resend_after=self.settings.resend_after,
            unacked_grace=self.settings.resend_unacked_after,
            remove_containers=remove,
            webhook_replay_window=self.settings.webhook_replay_window,
        )

    def pipeline(self, pipeline_id: str) -> tuple[PipelineRow, list[Job]]:
        return self.store.get_pipeline(pipeline_id), self.store.pipeline_jobs(pipeline_id)

    def cancel_pipeline(self, pipeline_id: str, by: str | None = None) -> PipelineRow:
        for job in self.store.pipeline_jobs(pipeline_id):
            if JobState(job.state) not in FINAL_STATES:
                self.store.request_cancel(job.id, by or "pipeline cancel")
        self.scheduler().advance(pipeline_id)
        return self.store.get_pipeline(pipeline_id)

    def retry_pipeline(self, pipeline_id: str) -> list[Job]:
        """Re-run the jobs that did not succeed (and those skipped because of them);
        jobs that passed keep their results."""
        again = self.store.reset_for_retry(pipeline_id, self.settings.max_attempts)
        if again:
            self.store.reopen_pipeline(pipeline_id)
            self.scheduler().advance(pipeline_id)
        return again

    def retry_job(self, job_id: str) -> Job:
        """Re-run a job that did not succeed: its pipeline's retry for a pipeline job, else
        the job itself, queued again as a new attempt (earlier attempts keep their logs)."""
        job = self.get(job_id)
        if job.pipeline_id:
            self.retry_pipeline(job.pipeline_id)
        elif self.store.reset_for_retry(None, self.settings.max_attempts, job_id=job.id):
            send_run_job(self.celery, self.settings.capabilities[job.capability], job.id)
        else:
            raise InputError(
                f"job {job.id} is {job.state}; only failed, timed-out, cancelled or errored "
                "jobs can be retried",
                field="job_id",
            )
        return self.get(job_id)

    # -- inspect ----------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        return self.store.get_job(job_id)

    def runners(self, capability: str | None = None) -> list[RunnerInfo]:
        return RunnerRegistry(self.redis, self.settings.runner_ttl).live(capability)

    def runner_statuses(self) -> list[RunnerStatus]:
        """Every runner heard from (live, then lost) with its state and running jobs."""
        registry = RunnerRegistry(self.redis, self.settings.runner_ttl)
        live, lost = registry.live(), registry.lost()
        running: dict[str, list[str]] = {}
        for job in self.store.list_jobs(states=[JobState.RUNNING], limit=10_000):
            running.setdefault(job.runner_id or "", []).append(job.id)
        return runner_statuses(live, lost, running)

    def why_waiting(self, job: Job, visible: Callable[[Job], bool] | None = None) -> str | None:
        """Plain words on why a job has not started, or None if it is not waiting; with
        ``visible``, naming no other job it refuses."""
        return waiting.why_waiting(self, job, visible)

    def status(self) -> list[dict[str, Any]]:
        """Per capability: queue depth, oldest wait, running, workers, last hour's jobs."""
        now = datetime.now(UTC)
        summary = self.store.pool_summary(now - timedelta(hours=1))
        try:
            runners: list[RunnerInfo] | None = self.runners()
        except redis.RedisError:
            runners = None
        rows = []
        for name in sorted(set(self.settings.capabilities) | set(summary)):
            info = summary.get(name, {"states": {}, "oldest_queued": None, "durations": []})
            states = info["states"]
            mine = [r for r in runners or [] if r.capability == name]
            durations = sorted(info["durations"])
            oldest = info["oldest_queued"]
            rows.append(
                {
                    "capability": name,
                    "queued": states.get("queued", 0),
                    "blocked": states.get("blocked", 0),
                    "oldest_wait_s": round((now - oldest).total_seconds(), 1) if oldest else None,
                    "running": states.get("running", 0),
                    "workers": None if runners is None else len(mine),
                    "slots": None if runners is None else sum(r.concurrency for r in mine),
                    "finished_1h": sum(v for k, v in states.items() if k.startswith("finished_")),
                    "failed_1h": sum(
                        v
                        for k, v in states.items()
                        if k.startswith("finished_") and k != "finished_succeeded"
                    ),
                    "p50_s": _percentile(durations, 50),
                    "p95_s": _percentile(durations, 95),
                }
            )
        return rows

    # -- lifecycle ----------------------------------------------------------------------

    def _runner(self, runner_id: str) -> RunnerInfo:
        for r in self.runners():
            if r.runner_id == runner_id:
                return r
        raise NotFound(f"no live runner {runner_id!r}; see ci-pool runners")

    def drain(self, runner_id: str) -> str:
        """The runner stops taking jobs, finishes the running one, then exits."""
        runner = self._runner(runner_id)
        self.redis.set(drain_key(runner_id), "1", ex=86400)
        self.celery.control.cancel_consumer(runner.queue, destination=[runner_id])
        return f"{runner_id}: draining; it exits when its running job ends"

    def undrain(self, runner_id: str) -> str:
        runner = self._runner(runner_id)
        self.redis.delete(drain_key(runner_id))
        self.celery.control.add_consumer(runner.queue, destination=[runner_id])
        return f"{runner_id}: taking jobs again"

    def scale(self, capability: str, slots: int) -> list[str]:
        """Spread ``slots`` concurrent jobs over the capability's live workers with Celery's
        pool_grow / pool_shrink; one line per worker saying what changed."""
        cap = route(self.settings.capabilities, capability)
        workers = sorted(self.runners(cap.name), key=lambda r: r.runner_id)
        if not workers:
            raise NotFound(
                f"no worker serves {cap.name!r}; start one with "
                f"ci-pool worker --capability {cap.name}"
            )
        share, extra = divmod(slots, len(workers))
        lines = []
        for i, r in enumerate(workers):
            want = share + (1 if i < extra else 0)
            delta = want - r.concurrency
            if delta > 0:
                reply = self.celery.control.pool_grow(
                    delta, destination=[r.runner_id], reply=True, timeout=5
                )
            elif delta < 0:
                reply = self.celery.control.pool_shrink(
                    -delta, destination=[r.runner_id], reply=True, timeout=5
                )
            else:
                reply = [{r.runner_id: {"ok": "unchanged"}}]
            ok = any(r.runner_id in rep and "ok" in rep[r.runner_id] for rep in reply or [])
            lines.append(
                f"{r.runner_id}: {r.concurrency} -> {want} "
                + ("ok" if ok else f"no answer ({reply})")
            )
        return lines

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.2) -> Job:
        """Block until the job reaches a final state (or ``timeout`` seconds pass)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if JobState(job.state) in FINAL_STATES:
                return job
            if end is not None and time.monotonic() >= end:
                return job
            time.sleep(poll)

    def download_artifacts(self, job_id: str, dest: Path, attempt: int | None = None) -> list[Path]:
        """Copy a job's artifacts from the artifact store, verifying each sha256."""
        index = self.store.artifacts(job_id, attempt)
        if not index:
            raise NotFound(f"job {job_id} has no artifacts")
        copied = []
        for art in index:
            src = self.artifact_path(art)
            target = (dest / art.path).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise InputError(f"artifact path {art.path!r} leaves {dest}", field="dest")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(src, target)
            except OSError as exc:
                raise NotFound(
                    f"artifact {art.path} is missing from the artifact store: {exc}"
                ) from None
            if hashlib.sha256(target.read_bytes()).hexdigest() != art.sha256:
                raise InfraError(f"artifact {art.path} does not match its sha256; not trusted")
            copied.append(target)
        return copied

    def artifact_path(self, art: Artifact) -> Path:
        """Where the artifact store keeps one artifact."""
        root = self.settings.resolved_artifact_root / art.job_id / str(art.attempt)
        path = (root / art.path).resolve()
        if not path.is_relative_to(root.resolve()):
            raise InputError(f"artifact path {art.path!r} leaves the artifact store", field="path")
        return path

    def artifact(self, job_id: str, path: str, attempt: int | None = None) -> Artifact:
        """One artifact of the latest attempt that has it (or of ``attempt``)."""
        found = [a for a in self.store.artifacts(job_id, attempt) if a.path == path]
        if not found:
            raise NotFound(f"job {job_id} has no artifact {path!r}")
        return max(found, key=lambda a: a.attempt)

    def cancel(self, job_id: str, by: str | None = None) -> Job:
        return self.store.request_cancel(job_id, by)

    def follow(self, job_id: str) -> Iterator[tuple[str | None, str]]:
        """(timestamp, line) as the lines happen; ends when the job is final and its stream
        is drained. Without a live stream the stored log is given once the job ends."""
        for item in self.follow_ticking(job_id):
            if item is not None:
                yield item

    def follow_ticking(self, job_id: str) -> Generator[tuple[str | None, str] | None]:
        """``follow``, plus None after each second without a line, so a reader can send a
        keep-alive or notice that its client left."""
        last = "0-0"
        attempt_seen: str | None = None
        while True:
            got = False
            try:
                for entry_id, fields in follow_stream(self.redis, job_id, last_id=last):
                    got = True
                    last = entry_id
                    if fields.get("a") != attempt_seen and attempt_seen is not None:
                        yield fields.get("t"), f"##[ci-pool] --- attempt {fields.get('a')} ---"
                    attempt_seen = fields.get("a")
                    if "l" in fields:
                        yield fields.get("t"), fields["l"]
            except redis.RedisError:  # no live stream: the stored log once the job ends
                while JobState(self.get(job_id).state) not in FINAL_STATES:
                    time.sleep(1.0)
                    yield None
                for line in self.store.read_log(job_id).splitlines():
                    yield None, line
                return
            if not got:
                job = self.get(job_id)
                if JobState(job.state) in FINAL_STATES:
                    if attempt_seen is None:
                        for line in self.store.read_log(job_id).splitlines():
                            yield None, line
                    return
                yield None


def _redact(url: str) -> str:
    """A broker URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def _percentile(values: list[float], pct: int) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return None
    rank = max(0, min(len(values) - 1, math.ceil(pct / 100 * len(values)) - 1))
    return round(values[rank], 2)
