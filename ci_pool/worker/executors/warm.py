"""Warm containers: a runner keeps ``warm_containers`` job containers of its capability
created, started and idle, each never used, so a job skips Docker's create and start.

Each warm container has a slot directory on the runner (``src``, ``scripts`` and
``files``, bind-mounted as a job's are) under ``<workspace root>/.warm/<runner>/``. A job
takes a slot by renaming the slot directory to its own attempt directory (atomic: of two
processes, one wins), checks out into it, renames the container to its job's name and runs
its steps there; the container is removed with the job, as a cold one is. The runner's
keeper thread replaces every slot taken. A container serves exactly one job.

Labels cannot change after creation, so a warm container keeps ``ci-pool.warm`` and its
runner label; the job it served is found by its name ``ci-pool-<job>-<attempt>``.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import threading
from pathlib import Path
from typing import Any

import docker
import docker.errors

from ci_pool import defaults
from ci_pool.core.capabilities import Capability
from ci_pool.exceptions import ExecutorError
from ci_pool.worker.executors.base import JobContext
from ci_pool.worker.executors.docker import ENGINE_ERRORS, DockerExecution

log = logging.getLogger(__name__)

#: A container's name once a job took it: ci-pool-<job id>-<attempt>.
TAKEN_NAME = re.compile(r"^/?ci-pool-([0-9a-f]+)-([0-9]+)$")


def slots_dir(workspace_root: Path, runner_id: str) -> Path:
    """Where one runner keeps its warm slots."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", runner_id)
    return workspace_root / defaults.WARM_DIR / safe


def take(workspace_root: Path, runner_id: str, root: Path) -> str:
    """Move one idle slot to ``root`` (the attempt's directory); the id of its container,
    or "" when there is none."""
    try:
        names = sorted(p.name for p in os.scandir(slots_dir(workspace_root, runner_id)))
    except FileNotFoundError:
        return ""
    for name in names:
        if name.startswith("."):
            continue  # a slot still being made
        try:
            os.rename(slots_dir(workspace_root, runner_id) / name, root)
        except FileNotFoundError:
            continue  # another process took it first
        try:
            return (root / defaults.WARM_ID_FILE).read_text().strip()
        except OSError:
            return ""
    return ""


class WarmExecution(DockerExecution):
    """A job's execution in a warm container it took: no create, no start. A warm
    container that is no longer running is removed and the job gets a cold one."""

    #: Whether the job runs in the warm container (False once it fell back to a cold one).
    warm = True

    def start(self) -> None:
        try:
            container = self.client.containers.get(self.ctx.warm_container)
            if container.status == "running":
                container.rename(f"ci-pool-{self.ctx.job_id}-{self.ctx.attempt}")
                self.container = container
                return
            _remove(container)
        except ENGINE_ERRORS as exc:
            log.warning("job %s: warm container unusable (%s)", self.ctx.job_id, exc)
        self.warm = False
        super().start()

    def close(self) -> None:
        if self.container is None and self.warm:
            # Taken, never started (the job ended before its steps): remove it by id.
            self.warm = False
            try:
                _remove(self.client.containers.get(self.ctx.warm_container))
            except docker.errors.NotFound:
                pass
            except ENGINE_ERRORS as exc:
                raise ExecutorError(f"could not remove warm container: {exc}") from exc
        super().close()


class WarmKeeper(threading.Thread):
    """Keeps ``cap.warm_containers`` idle warm containers for one runner, replacing each
    one a job takes; ``remove_all`` removes the idle ones (drain, shutdown)."""

    def __init__(
        self, client: docker.DockerClient, cap: Capability, runner_id: str, root: Path
    ) -> None:
        super().__init__(name="ci-pool-warm", daemon=True)
        self.client, self.cap, self.runner_id = client, cap, runner_id
        self.slots = slots_dir(root, runner_id)
        self.stopped = threading.Event()
        #: Fill only while set (cleared when the runner drains or is unhealthy).
        self.wanted = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stopped.wait(defaults.WARM_CHECK_INTERVAL):
            if not self.wanted.is_set():
                continue
            try:
                with self.lock:
                    if self.wanted.is_set() and not self.stopped.is_set():
                        self.fill()
            except (ExecutorError, OSError) as exc:
                log.warning("runner %s: warm containers: %s", self.runner_id, exc)
                self.stopped.wait(defaults.WARM_RETRY_DELAY)

    def idle(self) -> int:
        """How many idle warm slots this runner has now."""
        try:
            return sum(1 for p in os.scandir(self.slots) if not p.name.startswith("."))
        except FileNotFoundError:
            return 0

    def fill(self) -> None:
        for _ in range(self.cap.warm_containers - self.idle()):
            self.make()

    def make(self) -> None:
        """Create and start one warm container with its slot; publish the slot last."""
        token = secrets.token_hex(6)
        staging = self.slots / f".new-{token}"
        for sub in ("src", "scripts", "files"):
            (staging / sub).mkdir(parents=True)
        ctx = JobContext(
            job_id="warm",
            attempt=0,
            runner_id=self.runner_id,
            capability=self.cap,
            workspace=staging / "src",
            scripts=staging / "scripts",
            files=staging / "files",
            image=self.cap.image,
        )
        kwargs: dict[str, Any] = DockerExecution(self.client, ctx)._create_kwargs()
        kwargs["name"] = defaults.WARM_NAME.format(capability=self.cap.name, token=token)
        kwargs["labels"] = {
            defaults.LABEL_WARM: self.cap.name,
            defaults.LABEL_RUNNER: self.runner_id,
            defaults.LABEL_WARM_SLOT: str(self.slots / token),
        }
        container = None
        try:
            container = self.client.containers.create(**kwargs)
            container.start()
            (staging / defaults.WARM_ID_FILE).write_text(str(container.id))
            os.rename(staging, self.slots / token)
        except (*ENGINE_ERRORS, OSError) as exc:
            if container is not None:
                _remove(container)
            shutil.rmtree(staging, ignore_errors=True)
            raise ExecutorError(f"could not make a warm container: {exc}") from exc

    def remove_all(self) -> int:
        """Remove this runner's idle warm containers and their slots; how many."""
        with self.lock:
            return remove_idle(self.client, self.slots, {defaults.LABEL_RUNNER: self.runner_id})


def remove_idle(client: docker.DockerClient, slots: Path, labels: dict[str, str]) -> int:
    """Remove the idle (never taken) warm containers with ``labels`` and the slots dir."""
    found = idle_containers(client, labels)
    for container in found:
        _remove(container)
    shutil.rmtree(slots, ignore_errors=True)
    return len(found)


def idle_containers(client: docker.DockerClient, labels: dict[str, str] | None = None) -> list[Any]:
    """Warm containers no job has taken (still named ci-pool-warm-...)."""
    wanted = [defaults.LABEL_WARM, *(f"{k}={v}" for k, v in (labels or {}).items())]
    try:
        found = client.containers.list(ignore_removed=True, all=True, filters={"label": wanted})
    except ENGINE_ERRORS as exc:
        raise ExecutorError(f"could not list warm containers: {exc}") from exc
    return [c for c in found if not TAKEN_NAME.match(c.name)]


def remove_orphans(client: docker.DockerClient, workspace_root: Path, live: set[str]) -> int:
    """Remove the idle warm containers of this pool (their slots are under
    ``workspace_root``) whose runner is gone (not in ``live``), with their slots; how many.
    Another pool's warm containers on the same engine are never touched."""
    removed = 0
    mine = (workspace_root / defaults.WARM_DIR).resolve()
    for container in idle_containers(client):
        owner = str(container.labels.get(defaults.LABEL_RUNNER, ""))
        slot = Path(str(container.labels.get(defaults.LABEL_WARM_SLOT, "/")))
        if owner in live or not slot.is_relative_to(mine) or ".." in slot.parts:
            continue
        _remove(container)
        shutil.rmtree(slot, ignore_errors=True)
        removed += 1
    return removed


def _remove(container: Any) -> None:
    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        pass
    except ENGINE_ERRORS as exc:
        log.warning("could not remove warm container %s: %s", container.short_id, exc)
