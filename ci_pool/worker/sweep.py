"""The runner's sweep of what ended attempts left on its host: containers and overlay
workspaces their cleanup could not remove (the engine was gone when the attempt ended),
and the idle warm containers of runners that are gone."""

from __future__ import annotations

import logging

from ci_pool.broker.runners import RunnerRegistry
from ci_pool.core.specs import JobState
from ci_pool.exceptions import AccessDenied, ExecutorError, NotFound
from ci_pool.settings import Settings
from ci_pool.worker import workspace
from ci_pool.worker.executors.base import Executor
from ci_pool.worker.runner_store import RunnerStore

log = logging.getLogger(__name__)


class Sweeper:
    """Sweeps for one runner; a job is judged alive from the store the runner reaches."""

    def __init__(
        self, settings: Settings, store: RunnerStore, registry: RunnerRegistry, runner_id: str
    ):
        self.settings, self.store, self.registry = settings, store, registry
        self.runner_id = runner_id

    def sweep(self, executor: Executor | None) -> None:
        """Unmount leftover workspaces and, with an engine, remove leftover containers."""
        self._workspaces()
        if executor is not None and self._containers(executor):
            self._warm(executor)

    def _alive(self, job_id: str, attempt: int) -> bool:
        """Whether the attempt may still run: only a running job's current attempt does."""
        try:
            job = self.store.get_job(job_id)
        except (NotFound, AccessDenied):
            # Another pool's job on a shared engine, or (through the API) a job this
            # runner does not hold: not ours to judge; the reaper removes those.
            return True
        return job.state is JobState.RUNNING and job.attempt <= attempt

    def _containers(self, executor: Executor) -> bool:
        """Remove the containers of ended attempts; False when the engine refused."""
        for job_id, attempt in executor.job_leftovers():
            if self._alive(job_id, attempt):
                continue
            try:
                removed = executor.remove_leftovers(job_id, attempt)
            except ExecutorError as exc:
                log.warning("runner %s: sweep: %s", self.runner_id, exc)
                return False
            if removed:
                log.warning(
                    "runner %s: removed the container of ended attempt %d of job %s",
                    self.runner_id,
                    attempt,
                    job_id,
                )
        return True

    def _warm(self, executor: Executor) -> None:
        """Remove the idle warm containers of runners that are gone."""
        client = getattr(executor, "client", None)
        if client is None:
            return
        from ci_pool.worker.executors.warm import remove_orphans

        live = {r.runner_id for r in self.registry.live()} | {self.runner_id}
        try:
            removed = remove_orphans(client, self.settings.resolved_workspace_root, live)
        except ExecutorError as exc:
            log.warning("runner %s: sweep: %s", self.runner_id, exc)
            return
        if removed:
            log.warning(
                "runner %s: removed %d warm container(s) of runners that are gone",
                self.runner_id,
                removed,
            )

    def _workspaces(self) -> None:
        """Unmount the overlay workspaces of attempts that ended without their cleanup."""
        root = self.settings.resolved_workspace_root
        for name in workspace.sweep_overlays(root, self._alive):
            log.warning(
                "runner %s: unmounted the workspace of ended attempt %s", self.runner_id, name
            )
