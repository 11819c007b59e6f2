"""Celery tasks (thin: load the job, hand it to JobRunner) and the worker's registration."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import redis
from celery import Celery, Task, shared_task
from celery.exceptions import Reject
from celery.signals import worker_ready, worker_shutdown

import ci_pool
from ci_pool import defaults
from ci_pool.broker.app import send_run_job
from ci_pool.broker.runners import RunnerInfo, RunnerRegistry, drain_key
from ci_pool.core.capabilities import Capability
from ci_pool.settings import Settings
from ci_pool.store import Store
from ci_pool.worker.executors.base import Executor
from ci_pool.worker.executors.host import HostExecutor
from ci_pool.worker.job_runner import JobRunner

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
                from ci_pool.worker.executors.docker import DockerExecutor

                executors[cap.mode] = DockerExecutor.from_env()
            else:
                executors[cap.mode] = HostExecutor()
        return executors[cap.mode]

    def requeue(cap: Capability, job_id: str, countdown: float) -> None:
        send_run_job(app, cap, job_id, countdown)

    # Set by ``ci-pool worker`` when forges are configured: builds the status notifier.
    notifier = getattr(app.conf, "ci_pool_status_notifier", None)
    notify = notifier(store) if notifier is not None else None
    runner = JobRunner(settings, store, client, executor_for, requeue, notify)
    return _Runtime(settings, store, client, runner)


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of an ephemeral worker (a disposable runner container)."""

    max_jobs: int | None = None
    idle_timeout: float | None = None
    max_lifetime: float | None = None


@shared_task(name=defaults.RUN_JOB_TASK, bind=True, acks_late=True, ignore_result=True)
def run_job(self: Task, job_id: str) -> str | None:
    """Run one job by id; a duplicate delivery finds nothing to claim and just acks."""
    rt = _runtime(self.app, os.getpid())
    runner_id = rt.settings.runner_id or self.request.hostname or socket.gethostname()
    limits: Limits = getattr(self.app.conf, "ci_pool_limits", None) or Limits()
    if limits.max_jobs is not None and rt.store.count_claims(runner_id) >= limits.max_jobs:
        # This worker is done: hand the message back for another worker, unclaimed.
        raise Reject(f"runner {runner_id} reached --max-jobs {limits.max_jobs}", requeue=True)
    state = rt.runner.run(job_id, runner_id)
    return state.value if state else None


class _Lifecycle(threading.Thread):
    """Keeps this worker's registration alive in Redis, and ends the worker when it is
    drained or reaches a limit: stop consuming, let the running job finish, exit."""

    def __init__(
        self,
        consumer: Any,
        registry: RunnerRegistry,
        info: RunnerInfo,
        interval: float,
        limits: Limits,
    ):
        super().__init__(name="ci-pool-lifecycle", daemon=True)
        self.consumer, self.registry, self.info = consumer, registry, info
        self.interval, self.limits = interval, limits
        self.settings: Settings = consumer.app.conf.ci_pool_settings
        self.store = Store(self.settings.resolved_store_url)
        self.stopped = threading.Event()
        self.leaving: str | None = None
        self.started = self.last_busy = time.monotonic()

    def run(self) -> None:
        last_beat = 0.0
        while not self.stopped.wait(min(self.interval, 0.5)):
            try:
                if time.monotonic() - last_beat >= self.interval:
                    self._beat()
                    last_beat = time.monotonic()
                self._check()
            except Exception:  # Redis or the store is down for a moment: try again
                log.warning("runner lifecycle check failed; retrying", exc_info=True)

    def _beat(self) -> None:
        try:
            concurrency = int(self.consumer.pool.num_processes)
        except (AttributeError, TypeError, ValueError):
            concurrency = self.info.concurrency
        extra = {**self.info.extra, "draining": self.leaving or ""}
        self.registry.heartbeat(replace(self.info, concurrency=concurrency, extra=extra))

    def _reason(self, running: int) -> str | None:
        now, lim = time.monotonic(), self.limits
        if self.registry.redis.exists(drain_key(self.info.runner_id)):
            return "drained"
        if (
            lim.max_jobs is not None
            and self.store.count_claims(self.info.runner_id) >= lim.max_jobs
        ):
            return f"--max-jobs {lim.max_jobs} reached"
        if lim.max_lifetime is not None and now - self.started >= lim.max_lifetime:
            return f"--max-lifetime {lim.max_lifetime:g}s reached"
        if (
            lim.idle_timeout is not None
            and not running
            and now - self.last_busy >= lim.idle_timeout
        ):
            return f"idle for --idle-timeout {lim.idle_timeout:g}s"
        return None

    def _check(self) -> None:
        running = self.store.count_running(self.info.runner_id)
        if running:
            self.last_busy = time.monotonic()
        if self.leaving is None:
            reason = self._reason(running)
            if reason is None:
                return
            self.leaving = reason
            log.warning("runner %s: %s; taking no new job", self.info.runner_id, reason)
            self.consumer.app.control.cancel_consumer(
                self.info.queue, destination=[self.consumer.hostname]
            )
            self._beat()
        elif self.leaving == "drained" and not self.registry.redis.exists(
            drain_key(self.info.runner_id)
        ):
            self.leaving = None  # undrained before the running job ended
            self.consumer.app.control.add_consumer(
                self.info.queue, destination=[self.consumer.hostname]
            )
            self._beat()
            return
        if self.leaving is not None and not running:
            log.warning("runner %s: exiting (%s)", self.info.runner_id, self.leaving)
            self.stopped.set()
            os.kill(os.getpid(), signal.SIGTERM)  # warm shutdown


_lifecycle: _Lifecycle | None = None


def _image_identity(cap: Capability) -> dict[str, Any]:
    if cap.mode != "docker" or not cap.image:
        return {}
    from ci_pool.worker.executors.docker import image_identity

    return image_identity(cap.image)


@worker_ready.connect
def _register(sender: Any = None, **_kw: Any) -> None:
    global _lifecycle
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
        extra={"mode": cap.mode, "image": cap.image, **_image_identity(cap)},
    )
    registry = RunnerRegistry(redis.Redis.from_url(settings.broker_url), settings.runner_ttl)
    limits = getattr(app.conf, "ci_pool_limits", None) or Limits()
    _lifecycle = _Lifecycle(sender, registry, info, max(settings.runner_ttl / 3, 0.5), limits)
    _lifecycle.start()


@worker_shutdown.connect
def _unregister(sender: Any = None, **_kw: Any) -> None:
    if _lifecycle is None:
        return
    _lifecycle.stopped.set()
    try:
        _lifecycle.registry.unregister(_lifecycle.info.runner_id)
        _lifecycle.registry.redis.delete(drain_key(_lifecycle.info.runner_id))
    except redis.RedisError:
        pass
