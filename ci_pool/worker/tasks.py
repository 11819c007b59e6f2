"""Celery tasks (thin: load the job, hand it to JobRunner); a capability's worker gets the
runner's lifecycle as a bootstep (lifecycle.RunnerStep)."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from celery import Celery, Task, shared_task
from celery.exceptions import Reject
from celery.signals import (
    worker_before_create_process,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

from ci_pool import defaults
from ci_pool.broker.app import send_run_job
from ci_pool.broker.targeting import send_targeted
from ci_pool.core.capabilities import Capability
from ci_pool.core.specs import JobState
from ci_pool.exceptions import RunnerCutOff
from ci_pool.settings import Settings
from ci_pool.store import Misrouted, Store
from ci_pool.worker import (
    diagnostics,  # noqa: F401  (registers the runner exec command)
    heap,
)
from ci_pool.worker.api_store import ApiRunnerStore
from ci_pool.worker.cleanup import cleaner
from ci_pool.worker.executors.base import Executor
from ci_pool.worker.executors.host import HostExecutor
from ci_pool.worker.health import Health
from ci_pool.worker.job_runner import JobRunner
from ci_pool.worker.lifecycle import Limits, RunnerStep
from ci_pool.worker.runner_store import RunnerStore, open_runner_store

log = logging.getLogger(__name__)


@dataclass
class _Runtime:
    """Per-process clients (made after the pool forks, never at import)."""

    settings: Settings
    store: RunnerStore
    #: The name claims are recorded under (through the API: the registered name).
    runner_id: str
    redis: redis.Redis
    runner: JobRunner
    health: Health | None


@lru_cache(maxsize=4)
def _runtime(app: Celery, pid: int) -> _Runtime:
    settings: Settings = app.conf.ci_pool_settings
    store = open_runner_store(settings)
    runner_id = settings.runner_id
    if isinstance(store, ApiRunnerStore):
        runner_id = str(store.whoami()["name"])
    client = redis.Redis.from_url(settings.broker_url)
    executors: dict[str, Executor] = {}

    def executor_for(cap: Capability) -> Executor:
        if cap.mode not in executors:
            if cap.mode == "docker":
                from ci_pool.worker.executors.docker import DockerExecutor

                executors[cap.mode] = DockerExecutor.from_env()
            else:
                executors[cap.mode] = HostExecutor()
        return executors[cap.mode]

    def requeue(cap: Capability, job_id: str, countdown: float) -> None:
        glob = store.get_job(job_id).runner
        if glob is None:
            send_run_job(app, cap, job_id, countdown)
        else:  # none live matching: the reaper sends it once one is
            send_targeted(
                app,
                client,
                cap,
                job_id,
                glob,
                store.count_running,
                countdown=countdown,
                ttl=settings.runner_ttl,
            )

    # Set by ``ci-pool worker`` when forges are configured: builds the status notifier.
    notifier = getattr(app.conf, "ci_pool_status_notifier", None)
    notify = notifier(store) if notifier is not None and isinstance(store, Store) else None

    def send_on(job: Misrouted) -> None:
        """A job for runners by a name this one does not match goes on to one that does
        (or stays queued for one: the reaper sends it once one is live)."""
        cap = settings.capabilities.get(job.capability)
        if job.state is JobState.QUEUED and cap is not None:
            send_targeted(
                app, client, cap, job.job_id, job.runners, store.count_running,
                ttl=settings.runner_ttl,
            )  # fmt: skip

    runner = JobRunner(settings, store, client, executor_for, requeue, notify, send_on)
    cap_name = getattr(app.conf, "ci_pool_capability", None)
    cap = settings.capabilities.get(cap_name) if cap_name else None
    health = Health(cap, executor_for, ttl=1.0) if cap else None
    return _Runtime(settings, store, runner_id, client, runner, health)


@shared_task(name=defaults.RUN_JOB_TASK, bind=True, acks_late=True, ignore_result=True)
def run_job(self: Task, job_id: str) -> str | None:
    """Run one job by id; a duplicate delivery finds nothing to claim and just acks."""
    try:
        return _run_job(self, job_id)
    except RunnerCutOff as exc:
        # The message goes back to the queue for a runner the pool still trusts (a job
        # this runner had claimed stays claimed until its lease runs out and the reaper
        # re-queues it; a second message for it finds nothing to claim). This runner's
        # lifecycle sees the same refusal, stops consuming and exits.
        log.error("job %s: %s; taking no new job", job_id, exc)
        cap_name = getattr(self.app.conf, "ci_pool_capability", None)
        settings: Settings = self.app.conf.ci_pool_settings
        if cap_name in settings.capabilities:
            try:
                send_run_job(self.app, settings.capabilities[cap_name], job_id, 1.0)
            except Exception as err:  # Redis refuses this runner too: the reaper re-sends
                log.warning("job %s: not handed back (%s); the reaper re-sends it", job_id, err)
        return None


def _run_job(self: Task, job_id: str) -> str | None:
    rt = _runtime(self.app, os.getpid())
    runner_id = rt.runner_id or self.request.hostname or socket.gethostname()
    limits: Limits = getattr(self.app.conf, "ci_pool_limits", None) or Limits()
    since = getattr(self.app.conf, "ci_pool_started_at", None)
    if limits.max_jobs is not None and rt.store.count_claims(runner_id, since) >= limits.max_jobs:
        # This worker is done: hand the message back for another worker, unclaimed.
        raise Reject(f"runner {runner_id} reached --max-jobs {limits.max_jobs}", requeue=True)
    why = rt.health.reason() if rt.health else None
    if why:
        # Not this job's fault: back to the queue, unclaimed, for a healthy runner (this
        # one stops consuming until it is healthy again).
        raise Reject(f"runner {runner_id} unhealthy: {why}", requeue=True)
    state = rt.runner.run(job_id, runner_id)
    heap.settle()  # once, after the first job's lazy imports
    if rt.health and state not in (JobState.SUCCEEDED, JobState.FAILED):
        rt.health.forget()  # it may have ended on the engine going away: ask again
    return state.value if state else None


@worker_init.connect
def _add_runner_step(sender: Any = None, **_kw: Any) -> None:
    """A capability's worker runs the runner's lifecycle as one of its bootsteps (before
    its blueprint is built, which is when Celery sends ``worker_init``)."""
    sender.app.steps["worker"].add(RunnerStep)


@worker_before_create_process.connect
def _settle_before_forking(**_kw: Any) -> None:
    """The worker settles its start-up heap once, before its first pool process is forked:
    Celery's collection before each fork then walks only what was made since (heap.py)."""
    heap.settle()


@worker_process_init.connect
def _freeze_inherited_heap(**_kw: Any) -> None:
    """A pool process never collects the heap it inherits from the worker (heap.py)."""
    heap.freeze_inherited()


@worker_process_shutdown.connect
def _finish_cleanup(**_kw: Any) -> None:
    """A pool process ending removes what its last attempts left before it goes."""
    if not cleaner().drain(defaults.CLEANUP_DRAIN_TIMEOUT):
        log.warning("cleanup still busy at exit; the runner's sweep removes the rest")
