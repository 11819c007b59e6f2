"""The worker's life beside its Celery consumer, run as a bootstep of the Celery worker:
registration heartbeats, health, drain and limits, warm containers, and the sweep of
containers that ended attempts left behind. It ends the worker through Celery's own
shutdown flags, never by signalling its own process."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from celery import bootsteps
from celery.platforms import EX_OK
from celery.signals import worker_ready, worker_shutdown
from celery.worker import state as worker_state

import ci_pool
from ci_pool import defaults
from ci_pool.broker.keys import runner_queue
from ci_pool.broker.runners import RunnerInfo, RunnerRegistry, drain_key
from ci_pool.core.capabilities import Capability
from ci_pool.exceptions import RunnerCutOff
from ci_pool.settings import Settings
from ci_pool.worker import scratch, workspace
from ci_pool.worker.api_store import ApiRunnerStore
from ci_pool.worker.executors.base import Executor
from ci_pool.worker.health import Health
from ci_pool.worker.runner_store import open_runner_store, through_api
from ci_pool.worker.sweep import Sweeper

log = logging.getLogger(__name__)
#: Seconds between sweeps for containers of ended attempts that a cleanup left behind.
SWEEP_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of an ephemeral worker (a disposable runner container)."""

    max_jobs: int | None = None
    idle_timeout: float | None = None
    max_lifetime: float | None = None


class Lifecycle:
    """Keeps this worker's registration alive in Redis, and ends the worker when it is
    drained or reaches a limit: stop consuming, let the running job finish, exit."""

    def __init__(
        self,
        worker: Any,
        registry: RunnerRegistry,
        info: RunnerInfo,
        interval: float,
        limits: Limits,
    ):
        #: The Celery ``WorkController`` this runs in.
        self.worker, self.registry, self.info = worker, registry, info
        self.interval, self.limits = interval, limits
        self.settings: Settings = worker.app.conf.ci_pool_settings
        self.store = open_runner_store(self.settings)
        self.cap = self.settings.capabilities[info.capability]
        self.health = Health(self.cap, _docker_executor, ttl=0.0)
        self.stopped = threading.Event()
        #: Set once the worker's consumer takes messages: remote control (stop or start
        #: consuming a queue) reaches the worker only from then on.
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self.run, name="ci-pool-lifecycle", daemon=True)
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
        self.sweeper = Sweeper(self.settings, self.store, registry, info.runner_id)
        #: Keeps the capability's warm containers (docker capabilities with some).
        self.warm: Any = None

    def start(self) -> None:
        self._thread.start()

    def run(self) -> None:
        while not self.ready.wait(0.5):
            if self.stopped.is_set():
                return
        last_beat = -self.interval
        while not self.stopped.is_set():
            try:
                # The first check comes before the first heartbeat: an unhealthy runner
                # stops consuming before it takes a job.
                self.check()
                if not self.stopped.is_set() and time.monotonic() - last_beat >= self.interval:
                    self._beat()
                    last_beat = time.monotonic()
                self.refused = False
            except redis.AuthenticationError as exc:
                self._refused(exc)
            except Exception:  # Redis or the store is down for a moment: try again
                log.warning("runner lifecycle check failed; retrying", exc_info=True)
            self.stopped.wait(min(self.interval, 0.5))

    def finish(self, *, wait: bool) -> None:
        """Leave the pool as the worker stops. ``wait`` (a warm shutdown): keep the
        registration and its heartbeats while this runner's jobs finish in the pool, so
        the runner is listed with them until they end. Then stop the checks, remove the
        idle warm containers and unregister."""
        if wait and self.leaving != "revoked":  # a revoked runner's jobs were abandoned
            self._wait_idle()
        self.stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.stop_warm()
        try:
            self.registry.unregister(self.info.runner_id)
            self.registry.redis.delete(drain_key(self.info.runner_id))
        except redis.RedisError:
            pass

    def _wait_idle(self) -> None:
        """Until no job of this runner runs (or a cold shutdown comes)."""
        while not worker_state.should_terminate:
            try:
                if not self.store.count_running(self.info.runner_id):
                    return
            except Exception:  # the store cannot tell: nothing to wait for
                return
            time.sleep(0.2)

    def _refused(self, exc: redis.AuthenticationError) -> None:
        """Redis refused the runner's user: it was revoked, or Redis restarted and forgot
        it (the pool re-creates it at its next sweep). Only the pool can tell: the runner
        exits when the API refuses its credential too, else it waits for its user."""
        try:
            self.store.count_running(self.info.runner_id)
        except RunnerCutOff as cut:
            self.cut_off(f"the broker refused its Redis user ({exc}) and {cut}")
            return
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
        reconnecting forever: Celery's shutdown (nothing is left in the pool to wait for),
        or, should that not end the process within REVOKED_EXIT_GRACE seconds, an
        immediate exit."""
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
        # On its way out Celery still tries the broker (acks, the consumer's reconnect),
        # which refuses this runner now: one line each in the log, not a traceback.
        _one_line_failures()
        worker_state.should_stop = defaults.EXIT_REVOKED
        guard = threading.Timer(defaults.REVOKED_EXIT_GRACE, os._exit, (defaults.EXIT_REVOKED,))
        guard.daemon = True
        guard.start()

    def _beat(self) -> None:
        try:
            concurrency = int(self.worker.pool.num_processes)
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

    def _consume(self, on: bool) -> None:
        if on == self.consuming:
            return
        control = self.worker.app.control
        switch = control.add_consumer if on else control.cancel_consumer
        for queue in (self.info.queue, runner_queue(self.info.queue, self.info.runner_id)):
            switch(queue, destination=[self.worker.hostname])
        self.consuming = on

    def _count_needed(self) -> bool:
        """Whether this check must count the runner's running jobs (a store query, twice a
        second): to leave once they end, for the idle timeout, and through the API, where
        the answer also says whether the pool still trusts this runner."""
        return (
            self.leaving is not None
            or self.limits.idle_timeout is not None
            or isinstance(self.store, ApiRunnerStore)
        )

    def _running(self) -> int | None:
        """Jobs of this runner running now; None when it was cut off."""
        try:
            return self.store.count_running(self.info.runner_id)
        except RunnerCutOff as exc:
            self.cut_off(exc)
            return None

    def check(self) -> None:
        counted = self._count_needed()
        running = self._running() if counted else 0
        if running is None:
            return
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
            self.last_sweep = time.monotonic()
            self.sweeper.sweep(self.health.executor)
        self.keep_warm(health is None and self.leaving is None)
        if changed:
            self._consume(self.leaving is None and self.unhealthy is None)
            self._beat()
        if self.leaving is not None and not counted:
            running = self._running()  # leaving from this check on: now it counts
            if running is None:
                return
        if self.leaving is not None and not running:
            log.warning("runner %s: exiting (%s)", self.info.runner_id, self.leaving)
            self.stopped.set()
            worker_state.should_stop = EX_OK  # Celery's warm shutdown, as on SIGTERM


class RunnerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """The runner's lifecycle as a step of the Celery worker of a capability: ``start``
    registers the runner and starts the checks, ``stop`` (warm shutdown) lets its jobs
    finish before it unregisters, ``terminate`` (cold shutdown) unregisters at once.

    A step of the worker, not of the consumer: the consumer's steps restart with the
    broker connection, and the runner must go on heartbeating, checking and, once revoked,
    exiting while the consumer reconnects to a Redis that restarted or refuses it.
    It starts after the pool (its heartbeats report the pool's size) and so stops before
    the pool; a warm stop therefore waits for the runner's running jobs itself."""

    label = "ci-pool runner"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.lifecycle: Lifecycle | None = None

    def include_if(self, parent: Any) -> bool:
        return bool(getattr(parent.app.conf, "ci_pool_capability", None))

    def create(self, parent: Any) -> None:
        # Sent last in the worker's stop, after every step (the pool too) has stopped.
        worker_shutdown.connect(self._release_scratch, sender=parent, weak=False)
        worker_shutdown.connect(self._exit_status, sender=parent, weak=False)

    def start(self, parent: Any) -> None:
        try:
            info = runner_info(parent)
        except RunnerCutOff as exc:
            log.error("%s; exiting", exc)
            worker_state.should_stop = defaults.EXIT_REVOKED
            return
        settings: Settings = parent.app.conf.ci_pool_settings
        registry = RunnerRegistry(redis.Redis.from_url(settings.broker_url), settings.runner_ttl)
        limits = getattr(parent.app.conf, "ci_pool_limits", None) or Limits()
        interval = max(settings.runner_ttl / 3, 0.5)
        self.lifecycle = Lifecycle(parent, registry, info, interval, limits)
        worker_ready.connect(self._ready, weak=False)
        self.lifecycle.start()

    @staticmethod
    def _release_scratch(sender: Any = None, **_kw: Any) -> None:
        """Unmount the job scratch of the runner's processes (``worker.scratch``)."""
        if sender is not None:
            scratch.release(sender.app.conf.ci_pool_settings.resolved_workspace_root)

    @staticmethod
    def _exit_status(sender: Any = None, **_kw: Any) -> None:
        """Exit with EXIT_REVOKED once Celery has stopped for a revoked runner: Celery
        keeps the status in the worker's ``exitcode``, but ``worker_main`` drops it."""
        if sender is not None and sender.exitcode == defaults.EXIT_REVOKED:
            raise SystemExit(defaults.EXIT_REVOKED)

    def _ready(self, sender: Any = None, **_kw: Any) -> None:
        if self.lifecycle is not None:
            self.lifecycle.ready.set()

    def stop(self, parent: Any) -> None:
        self._leave(wait=True)

    def terminate(self, parent: Any) -> None:
        self._leave(wait=False)

    def _leave(self, *, wait: bool) -> None:
        worker_ready.disconnect(self._ready)
        lifecycle, self.lifecycle = self.lifecycle, None
        if lifecycle is not None:
            lifecycle.finish(wait=wait)


def runner_info(worker: Any) -> RunnerInfo:
    """What this worker registers as: its name (through the API, the one the pool knows
    its credential by; RunnerCutOff when the API refuses it), capability and image."""
    app = worker.app
    settings: Settings = app.conf.ci_pool_settings
    cap = settings.capabilities[app.conf.ci_pool_capability]
    runner_id = settings.runner_id or worker.hostname
    if through_api(settings):
        runner_id = str(ApiRunnerStore(settings).whoami()["name"])
    return RunnerInfo(
        runner_id=runner_id,
        capability=cap.name,
        queue=cap.queue,
        host=socket.gethostname(),
        pid=os.getpid(),
        concurrency=int(app.conf.worker_concurrency or 1),
        version=ci_pool.__version__,
        started_at=time.time(),
        extra={
            "mode": cap.mode,
            "image": cap.image,
            # The Celery node name: remote-control commands are addressed to it.
            "node": worker.hostname,
            **_image_identity(cap),
        },
    )


def _image_identity(cap: Capability) -> dict[str, Any]:
    if cap.mode != "docker" or not cap.image:
        return {}
    from ci_pool.worker.executors.docker import image_identity

    return image_identity(cap.image)


class _WithoutTraceback(logging.Filter):
    """Keeps a record's message and drops its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


def _one_line_failures() -> None:
    """From now on the worker's log handlers write failures without their traceback."""
    one_line = _WithoutTraceback()
    for name in (None, "celery", "kombu"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(one_line)


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
