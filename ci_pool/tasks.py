"""Celery tasks (thin: load the job, hand it to JobRunner) and the worker's registration."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from celery import Celery, Task, shared_task
from celery.signals import worker_ready, worker_shutdown

import ci_pool
from ci_pool import defaults
from ci_pool.capabilities import Capability
from ci_pool.celery_app import send_run_job
from ci_pool.runner.executors.base import Executor
from ci_pool.runner.executors.host import HostExecutor
from ci_pool.runner.job_runner import JobRunner
from ci_pool.runners import RunnerInfo, RunnerRegistry
from ci_pool.settings import Settings
from ci_pool.store import Store

log = logging.getLogger(__name__)


@dataclass
class _Runtime:
    """Per-process clients (made after the pool forks, never at import)."""

    settings: Settings
    store: Store
    redis: redis.Redis
    runner: JobRunner


@lru_cache(maxsize=4)
def _runtime(app: Celery, pid: int) -> _Runtime:
    settings: Settings = app.conf.ci_pool_settings
    store = Store(settings.resolved_store_url)
    client = redis.Redis.from_url(settings.broker_url)
    executors: dict[str, Executor] = {}

    def executor_for(cap: Capability) -> Executor:
        if cap.mode not in executors:
            if cap.mode == "docker":
                from ci_pool.runner.executors.docker import DockerExecutor

                executors[cap.mode] = DockerExecutor.from_env()
            else:
                executors[cap.mode] = HostExecutor()
        return executors[cap.mode]

    def requeue(cap: Capability, job_id: str, countdown: float) -> None:
        send_run_job(app, cap, job_id, countdown)

    runner = JobRunner(settings, store, client, executor_for, requeue)
    return _Runtime(settings, store, client, runner)


@shared_task(name=defaults.RUN_JOB_TASK, bind=True, acks_late=True, ignore_result=True)
def run_job(self: Task, job_id: str) -> str | None:
    """Run one job by id; a duplicate delivery finds nothing to claim and just acks."""
    rt = _runtime(self.app, os.getpid())
    runner_id = rt.settings.runner_id or self.request.hostname or socket.gethostname()
    state = rt.runner.run(job_id, runner_id)
    return state.value if state else None


class _Heartbeat(threading.Thread):
    """Keeps this worker's registration alive in Redis while it runs."""

    def __init__(self, registry: RunnerRegistry, info: RunnerInfo, interval: float):
        super().__init__(name="ci-pool-registry", daemon=True)
        self.registry, self.info, self.interval = registry, info, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self.registry.heartbeat(self.info)
            except redis.RedisError:
                log.warning("runner heartbeat to Redis failed; retrying")
            if self.stopped.wait(self.interval):
                return


_heartbeat: _Heartbeat | None = None


@worker_ready.connect
def _register(sender: Any = None, **_kw: Any) -> None:
    global _heartbeat
    app = sender.app
    settings: Settings = app.conf.ci_pool_settings
    cap_name = getattr(app.conf, "ci_pool_capability", None)
    if not cap_name:
        return
    cap = settings.capabilities[cap_name]
    info = RunnerInfo(
        runner_id=settings.runner_id or sender.hostname,
        capability=cap.name,
        queue=cap.queue,
        host=socket.gethostname(),
        pid=os.getpid(),
        concurrency=int(app.conf.worker_concurrency or 1),
        version=ci_pool.__version__,
        started_at=time.time(),
        extra={"mode": cap.mode, "image": cap.image},
    )
    registry = RunnerRegistry(redis.Redis.from_url(settings.broker_url), settings.runner_ttl)
    _heartbeat = _Heartbeat(registry, info, max(settings.runner_ttl / 3, 0.5))
    _heartbeat.start()


@worker_shutdown.connect
def _unregister(sender: Any = None, **_kw: Any) -> None:
    if _heartbeat is None:
        return
    _heartbeat.stopped.set()
    try:
        _heartbeat.registry.unregister(_heartbeat.info.runner_id)
    except redis.RedisError:
        pass
