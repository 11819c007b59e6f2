"""The worker's life beside its Celery consumer: registration heartbeats, health, drain
and limits, and the sweep of containers that ended attempts left behind."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from ci_pool import defaults
from ci_pool.broker.keys import runner_queue
from ci_pool.broker.runners import RunnerInfo, RunnerRegistry, drain_key
from ci_pool.core.capabilities import Capability
from ci_pool.core.specs import JobState
from ci_pool.exceptions import AccessDenied, ExecutorError, NotFound, RunnerCutOff
from ci_pool.settings import Settings
from ci_pool.worker import workspace
from ci_pool.worker.executors.base import ENGINE_DOWN, Executor
from ci_pool.worker.runner_store import open_runner_store

log = logging.getLogger(__name__)
#: Seconds between sweeps for containers of ended attempts that a cleanup left behind.
SWEEP_INTERVAL = 60.0


class Health:
    """Whether this runner can run a capability's jobs now: its Docker engine answers and
    the capability's image is here. A verdict is kept ``ttl`` seconds."""

    def __init__(self, cap: Capability, executor: Callable[[Capability], Executor], ttl: float):
        self.cap, self._executor, self.ttl = cap, executor, ttl
        self.executor: Executor | None = None
        self._verdict: str | None = None
        self._until = 0.0

    def reason(self) -> str | None:
        """Why the runner cannot run the capability's jobs (with what fixes it), or None."""
        if self.cap.mode != "docker":
            return None
        now = time.monotonic()
        if now >= self._until:
            self._verdict, self._until = self._ask(), now + self.ttl
        return self._verdict

    def _ask(self) -> str | None:
        if self.executor is None:
            try:
                self.executor = self._executor(self.cap)
            except ExecutorError:
                return ENGINE_DOWN
        return self.executor.health(self.cap)

    def forget(self) -> None:
        """Ask again next time (an attempt just ended in an infrastructure error)."""
        self._until = 0.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of an ephemeral worker (a disposable runner container)."""

    max_jobs: int | None = None
    idle_timeout: float | None = None
    max_lifetime: float | None = None


class Lifecycle(threading.Thread):
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
        self.store = open_runner_store(self.settings)
        self.cap = self.settings.capabilities[info.capability]
        self.health = Health(self.cap, _docker_executor, ttl=0.0)
        self.stopped = threading.Event()
        self.leaving: str | None = None
        #: Redis refuses its user while the pool still knows the runner (Redis restarted).
        self.refused = False
        #: Why the runner cannot run jobs now (engine down, image missing), or None.
        self.unhealthy: str | None = None
        self.consuming = True
        self.started = self.last_busy = time.monotonic()
        #: Claims since this process started count toward --max-jobs (the name outlives it).
        self.since = datetime.fromtimestamp(info.started_at, UTC)
        self.last_sweep = -SWEEP_INTERVAL
        #: Keeps the capability's warm containers (docker capabilities with some).
        self.warm: Any = None

    def run(self) -> None:
        last_beat = 0.0
        while not self.stopped.wait(min(self.interval, 0.5)):
            try:
                if time.monotonic() - last_beat >= self.interval:
                    self._beat()
                    last_beat = time.monotonic()
                self.check()
                self.refused = False
            except redis.AuthenticationError as exc:
                self._refused(exc)
            except Exception:  # Redis or the store is down for a moment: try again
                log.warning("runner lifecycle check failed; retrying", exc_info=True)

    def _refused(self, exc: redis.AuthenticationError) -> None:
        """Redis refused the runner's user: it was revoked, or Redis restarted and forgot
        it (the pool re-creates it at its next sweep). Only the pool can tell: the runner
        exits when the API refuses its credential too, else it waits for its user."""
        try:
            self.store.count_running(self.info.runner_id)
        except RunnerCutOff as cut:
            self.cut_off(f"the broker refused its Redis user ({exc}) and {cut}")
        except Exception:  # the API is away too: ask again at the next check
            log.warning("runner %s: the broker refused its Redis user (%s) and the pool API "
                        "does not answer; retrying", self.info.runner_id, exc)  # fmt: skip
            return
        if self.refused:
            return  # said once until Redis takes the user again
        self.refused = True
        log.warning(
            "runner %s: the broker refused its Redis user (%s), but the pool still knows "
            "this runner: waiting for the pool to re-create the user (ci-pool beat does at "
            "each sweep)",
            self.info.runner_id,
            exc,
        )

    def cut_off(self, exc: Exception | str) -> None:
        """The pool revoked this runner: Redis refuses its user, or the API its credential.
        Take nothing more, leave the broker if it still answers, abandon the running job
        (it can record nothing any more; its lease runs out and the reaper re-queues it),
        remove the containers it started and exit at once with EXIT_REVOKED, rather than
        reconnecting forever."""
        self.stopped.set()
        self.leaving = "revoked"
        try:
            self._consume(False)
            self.registry.unregister(self.info.runner_id)
        except Exception:  # the broker refuses this runner too: exiting anyway
            pass
        line = (
            f"runner {self.info.runner_id}: {exc}; the runner was revoked: taking no new job "
            "and exiting. To bring it back, register it again with a new token (ci-pool "
            "runner token create)"
        )
        log.error("%s", line)  # the worker's stderr goes to the same log
        # Its jobs' containers go first (a step running in one just fails), then the pool
        # processes, then the workspaces those attempts had mounted: nothing it started
        # runs on, or stays mounted, once it is cut off.
        from ci_pool.worker.executors.services import remove_runner_objects

        removed = remove_runner_objects(self.info.runner_id)
        _kill_children()
        root = self.settings.resolved_workspace_root
        swept = workspace.sweep_overlays(root, lambda job, attempt: (job, attempt) not in removed)
        if removed:
            log.error("runner %s: removed the containers of %d attempt(s) and unmounted %d "
                      "workspace(s)", self.info.runner_id, len(removed), len(swept))  # fmt: skip
        os._exit(defaults.EXIT_REVOKED)

    def _beat(self) -> None:
        try:
            concurrency = int(self.consumer.pool.num_processes)
        except (AttributeError, TypeError, ValueError):
            concurrency = self.info.concurrency
        extra = {
            **self.info.extra,
            "draining": self.leaving or "",
            "unhealthy": self.unhealthy or "",
            "warm": self.warm.idle() if self.warm is not None else 0,
        }
        self.registry.heartbeat(replace(self.info, concurrency=concurrency, extra=extra))

    def _reason(self, running: int) -> str | None:
        now, lim = time.monotonic(), self.limits
        if self.registry.redis.exists(drain_key(self.info.runner_id)):
            return "drained"
        if (
            lim.max_jobs is not None
            and self.store.count_claims(self.info.runner_id, self.since) >= lim.max_jobs
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

    def _sweep(self) -> None:
        """Remove the containers of ended attempts that their cleanup could not remove
        (the engine was gone when the attempt ended)."""
        self.last_sweep = time.monotonic()
        self._sweep_workspaces()
        executor = self.health.executor
        if executor is None:
            return
        for job_id, attempt in executor.job_leftovers():
            try:
                job = self.store.get_job(job_id)
            except (NotFound, AccessDenied):
                # Another pool's job on a shared engine, or (through the API) a job this
                # runner does not hold: not ours to judge; the reaper removes those.
                continue
            # Only a running job's current attempt is alive; every other container of
            # the job belongs to an attempt that has ended.
            if job.state is JobState.RUNNING and job.attempt <= attempt:
                continue
            try:
                removed = executor.remove_leftovers(job_id, attempt)
            except ExecutorError as exc:
                log.warning("runner %s: sweep: %s", self.info.runner_id, exc)
                return
            if removed:
                log.warning(
                    "runner %s: removed the container of ended attempt %d of job %s",
                    self.info.runner_id,
                    attempt,
                    job_id,
                )
        self._sweep_warm(executor)

    def _sweep_warm(self, executor: Executor) -> None:
        """Remove the idle warm containers of runners that are gone."""
        client = getattr(executor, "client", None)
        if client is None:
            return
        from ci_pool.worker.executors.warm import remove_orphans

        live = {r.runner_id for r in self.registry.live()} | {self.info.runner_id}
        try:
            removed = remove_orphans(client, self.settings.resolved_workspace_root, live)
        except ExecutorError as exc:
            log.warning("runner %s: sweep: %s", self.info.runner_id, exc)
            return
        if removed:
            log.warning(
                "runner %s: removed %d warm container(s) of runners that are gone",
                self.info.runner_id,
                removed,
            )

    def keep_warm(self, wanted: bool) -> None:
        """Keep the capability's warm containers while ``wanted``; remove them when not."""
        if self.cap.mode != "docker" or not self.cap.warm_containers:
            return
        client = getattr(self.health.executor, "client", None)
        if self.warm is None:
            if not wanted or client is None:
                return
            from ci_pool.worker.executors.warm import WarmKeeper

            self.warm = WarmKeeper(
                client, self.cap, self.info.runner_id, self.settings.resolved_workspace_root
            )
            self.warm.remove_all()  # what an earlier run of this runner left
            self.warm.start()
        if wanted:
            self.warm.wanted.set()
        elif self.warm.wanted.is_set():
            self.warm.wanted.clear()
            removed = self.warm.remove_all()
            log.warning("runner %s: removed %d warm container(s)", self.info.runner_id, removed)

    def stop_warm(self) -> None:
        """Shutdown: stop replacing warm containers and remove the idle ones."""
        if self.warm is not None:
            self.warm.stopped.set()
            self.keep_warm(False)

    def _sweep_workspaces(self) -> None:
        """Unmount the overlay workspaces of attempts that ended without their cleanup."""

        def alive(job_id: str, attempt: int) -> bool:
            try:
                job = self.store.get_job(job_id)
            except (NotFound, AccessDenied):
                return True  # another pool's (or runner's) job on a shared host: not ours
            return job.state is JobState.RUNNING and job.attempt <= attempt

        root = self.settings.resolved_workspace_root
        for name in workspace.sweep_overlays(root, alive):
            log.warning(
                "runner %s: unmounted the workspace of ended attempt %s", self.info.runner_id, name
            )

    def _consume(self, on: bool) -> None:
        if on == self.consuming:
            return
        control = self.consumer.app.control
        switch = control.add_consumer if on else control.cancel_consumer
        for queue in (self.info.queue, runner_queue(self.info.queue, self.info.runner_id)):
            switch(queue, destination=[self.consumer.hostname])
        self.consuming = on

    def check(self) -> None:
        try:
            running = self.store.count_running(self.info.runner_id)
        except RunnerCutOff as exc:
            self.cut_off(exc)
        if running:
            self.last_busy = time.monotonic()
        changed = False
        if self.leaving is None:
            reason = self._reason(running)
            if reason is not None:
                self.leaving, changed = reason, True
                log.warning("runner %s: %s; taking no new job", self.info.runner_id, reason)
        elif self.leaving == "drained" and not self.registry.redis.exists(
            drain_key(self.info.runner_id)
        ):
            self.leaving, changed = None, True  # undrained before the running job ended
        health = self.health.reason()
        if health != self.unhealthy:
            if health:
                log.warning(
                    "runner %s: unhealthy: %s; taking no new job", self.info.runner_id, health
                )
            else:
                log.warning("runner %s: healthy again; taking jobs", self.info.runner_id)
                self.last_sweep = -SWEEP_INTERVAL  # sweep what the outage left, at once
            self.unhealthy, changed = health, True
        if health is None and time.monotonic() - self.last_sweep >= SWEEP_INTERVAL:
            self._sweep()
        self.keep_warm(health is None and self.leaving is None)
        if changed:
            self._consume(self.leaving is None and self.unhealthy is None)
            self._beat()
        if self.leaving is not None and not running:
            log.warning("runner %s: exiting (%s)", self.info.runner_id, self.leaving)
            self.stopped.set()
            os.kill(os.getpid(), signal.SIGTERM)  # warm shutdown


def _kill_children() -> None:
    """SIGKILL this process's children (the pool processes running jobs)."""
    for children in Path("/proc/self/task").glob("*/children"):
        try:
            pids = children.read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass


def _docker_executor(cap: Capability) -> Executor:
    from ci_pool.worker.executors.docker import DockerExecutor

    return DockerExecutor.from_env()
