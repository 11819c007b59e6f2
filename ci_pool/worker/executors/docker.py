"""Docker executor: a fresh, labelled, resource-limited container per job; steps are execs."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import Mount

from ci_pool import container_engine, defaults
from ci_pool.core.capabilities import Capability
from ci_pool.exceptions import ExecutorError
from ci_pool.worker.executors.base import (
    ENGINE_DOWN,
    Execution,
    Executor,
    JobContext,
    launcher,
)
from ci_pool.worker.executors.services import (
    ServiceSet,
    attempt_of,
    container_settings,
    create_with_login,
    network_leftovers,
    remove_networks,
)

#: PID 1 of a job container: idles until stopped; steps run beside it via exec.
_KEEPALIVE = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"


#: What the engine raises when it fails or goes away (docker-py lets a dropped
#: connection through as a ``requests`` error).
ENGINE_ERRORS = container_engine.ENGINE_ERRORS


def _memory_bytes(value: str) -> int:
    units = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    value = value.lower()
    if value[-1] in units:
        return int(value[:-1]) * units[value[-1]]
    return int(value)


def runtime_mounts(cap: Capability) -> list[Mount]:
    """The runner's tool installations a job container sees read-only: the capability's
    ``node_runtime`` (when this host has it; else a JavaScript action says it is missing)."""
    runtime = cap.node_runtime
    if runtime and os.path.isdir(runtime):
        return [Mount(defaults.CONTAINER_NODE, runtime, type="bind", read_only=True)]
    return []


class DockerExecution(Execution):
    mode = "docker"

    def __init__(self, client: docker.DockerClient, ctx: JobContext):
        self.client = client
        self.ctx = ctx
        self.container: Any = None
        self._stopping = threading.Event()
        self._step_done = threading.Event()
        self._step_done.set()
        self.services = (
            ServiceSet(client, ctx, host_job=ctx.capability.network == "host")
            if ctx.services
            else None
        )

    def _create_kwargs(self) -> dict[str, Any]:
        cap = self.ctx.capability
        kwargs: dict[str, Any] = {
            "image": self.ctx.image or cap.image,
            "command": ["sh", "-c", _KEEPALIVE],
            "name": f"ci-pool-{self.ctx.job_id}-{self.ctx.attempt}",
            "labels": {
                defaults.LABEL_JOB: self.ctx.job_id,
                defaults.LABEL_RUNNER: self.ctx.runner_id,
                defaults.LABEL_ATTEMPT: str(self.ctx.attempt),
            },
            "working_dir": defaults.CONTAINER_WORKSPACE,
            "mounts": [
                Mount(defaults.CONTAINER_WORKSPACE, str(self.ctx.workspace), type="bind"),
                # Read-only: the runner writes the next step's script here, so the job
                # must not be able to plant a symlink in its place.
                Mount(
                    defaults.CONTAINER_SCRIPTS, str(self.ctx.scripts), type="bind", read_only=True
                ),
                Mount(defaults.CONTAINER_FILES, str(self.ctx.files), type="bind"),
            ],
            "network_mode": cap.network,
            "privileged": cap.privileged,
            "detach": True,
            "stdin_open": False,
            "tty": False,
        }
        kwargs["mounts"] += runtime_mounts(cap)
        if cap.pids_limit:
            kwargs["pids_limit"] = cap.pids_limit
        if cap.memory:
            kwargs["mem_limit"] = _memory_bytes(cap.memory)
        if cap.cpus:
            kwargs["nano_cpus"] = int(cap.cpus * 1e9)
        extra = container_settings(self.ctx)
        kwargs["mounts"] += extra.pop("mounts", [])
        kwargs.update(extra)
        if self.services is not None and cap.network == "none":
            # The job's only network is the services' one, where they answer by name.
            kwargs["network_mode"] = self.services.network_name
        return kwargs

    def _services_ready(self) -> None:
        """Join the services' network (beside a named one) and wait for the services,
        which started before the job container, so both start at once."""
        if self.services is None:
            return
        if self.ctx.capability.network not in ("none", "host"):
            try:
                self.services.network.connect(self.container)
            except ENGINE_ERRORS as exc:
                raise ExecutorError(f"docker could not join the services' network: {exc}") from exc
        self.services.ready(self._stopping)

    def _create(self) -> Any:
        return create_with_login(self.client, self._create_kwargs(), self.ctx.registry_auth)

    def start(self) -> None:
        image = self.ctx.image or self.ctx.capability.image
        if self.services is not None:
            self.services.launch()
        try:
            self.container = self._create()
            self.container.start()
        except docker.errors.ImageNotFound:
            cap = self.ctx.capability
            fix = (
                f"run `ci-pool images build {cap.name}` or set the capability's image"
                if image == cap.image
                else "pull or build it on the runner"
            )
            raise ExecutorError(
                f"image {image!r} of capability {cap.name!r} is not on this runner; {fix}"
            ) from None
        except ENGINE_ERRORS as exc:
            raise ExecutorError(f"docker could not start the job container: {exc}") from exc
        self._services_ready()

    scripts_path = defaults.CONTAINER_SCRIPTS
    files_path = defaults.CONTAINER_FILES
    workspace_path = defaults.CONTAINER_WORKSPACE

    def run_step(
        self,
        script_name: str,
        on_output: Callable[[bytes], None],
        env: dict[str, str] | None = None,
        shell: str | None = None,
    ) -> int:
        if self._stopping.is_set():
            return 143
        api = self.client.api
        self._step_done.clear()
        try:
            exec_id = api.exec_create(
                self.container.id,
                [
                    "sh",
                    "-c",
                    launcher(shell),
                    "ci-pool-step",
                    f"{defaults.CONTAINER_SCRIPTS}/{script_name}",
                ],
                environment={**self.ctx.env, **(env or {})},
                workdir=defaults.CONTAINER_WORKSPACE,
            )["Id"]
            for chunk in container_engine.exec_output(api, exec_id):
                on_output(chunk)
            code = api.exec_inspect(exec_id).get("ExitCode")
        except ENGINE_ERRORS as exc:
            if self._stopping.is_set():
                return 137
            raise ExecutorError(f"docker exec failed: {exc}") from exc
        finally:
            self._step_done.set()
        # A step whose container was killed under it has no exit code of its own.
        return 137 if code is None else int(code)

    def _signal_all(self, sig: str) -> None:
        """Signal every process in the container but PID 1 (the steps and their children)."""
        try:
            self.container.exec_run(["kill", f"-{sig}", "-1"], detach=True)
        except ENGINE_ERRORS:
            pass

    def interrupt(self, grace: float) -> None:
        if self.container is None or self._step_done.is_set():
            return
        self._signal_all("TERM")
        if not self._step_done.wait(timeout=grace):
            self._signal_all("KILL")
            self._step_done.wait(timeout=10)

    def stop(self, grace: float) -> None:
        self._stopping.set()
        if self.container is None:
            return
        self._signal_all("TERM")
        self._step_done.wait(timeout=grace)
        try:
            self.container.kill()
        except ENGINE_ERRORS:
            pass

    def close(self) -> None:
        if self.container is not None:
            try:
                self.container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
            except ENGINE_ERRORS as exc:
                raise ExecutorError(
                    f"could not remove container {self.container.id[:12]}: {exc}"
                ) from exc
            self.container = None
        if self.services is not None:
            self.services.close()

    def services_context(self) -> dict[str, Any]:
        return {} if self.services is None else self.services.context()

    def describe(self) -> dict[str, str]:
        image = self.ctx.image or self.ctx.capability.image
        engine = container_engine.runtime_of(self.client)
        if self.container is None:
            return {"image": image, "engine": engine}
        return {
            "image": image,
            "engine": engine,
            "image_id": str(self.container.attrs.get("Image", "")),
            "container_id": str(self.container.id),
        }


class DockerExecutor(Executor):
    """Holds one docker client per worker process."""

    def __init__(self, client: docker.DockerClient):
        self.client = client

    @classmethod
    def from_env(cls) -> DockerExecutor:
        return cls(container_engine.connect(timeout=60, ping=True))

    def execution(self, ctx: JobContext) -> Execution:
        if ctx.warm_container:
            from ci_pool.worker.executors.warm import WarmExecution

            return WarmExecution(self.client, ctx)
        return DockerExecution(self.client, ctx)

    def take_warm(self, workspace_root: Path, runner_id: str, root: Path) -> str:
        from ci_pool.worker.executors.warm import take

        return take(workspace_root, runner_id, root)

    def remove_tree(self, path: Path, image: str) -> None:
        """Remove ``path`` from inside a throwaway container running as root: what a
        non-root runner must do with files its builds created as root."""
        try:
            self.client.containers.run(
                image,
                ["rm", "-rf", "/w/src", "/w/scripts", "/w/files"],
                remove=True,
                network_mode="none",
                user="0",
                mounts=[Mount("/w", str(path), type="bind")],
                labels={defaults.LABEL_JOB: "cleanup"},
            )
            path.rmdir()
        except (*ENGINE_ERRORS, OSError) as exc:
            raise ExecutorError(f"could not remove {path} through a container: {exc}") from exc

    def remove_leftovers(self, job_id: str, attempt: int | None = None) -> int:
        labels = [f"{defaults.LABEL_JOB}={job_id}"]
        if attempt is not None:
            labels.append(f"{defaults.LABEL_ATTEMPT}={attempt}")
        # A warm container a job took keeps its warm labels; its name names the job.
        name = f"^/?ci-pool-{job_id}-{attempt if attempt is not None else '[0-9]+'}$"
        try:
            found = self.client.containers.list(
                all=True, filters={"label": labels}, ignore_removed=True
            )
            found += self.client.containers.list(
                ignore_removed=True, all=True, filters={"label": defaults.LABEL_WARM, "name": name}
            )
            for container in found:
                try:
                    container.remove(force=True, v=True)
                except docker.errors.NotFound:
                    pass  # removed meanwhile (by the attempt's own cleanup)
            networks = remove_networks(self.client, labels)
        except ENGINE_ERRORS as exc:
            raise ExecutorError(f"could not remove leftover containers: {exc}") from exc
        return len(found) + networks

    def health(self, capability: Capability) -> str | None:
        image = capability.image
        try:
            self.client.ping()
            if image:
                self.client.images.get(image)
        except docker.errors.ImageNotFound:
            return f"lacks image {image}: run `ci-pool images build {capability.name}`"
        except ENGINE_ERRORS:
            return ENGINE_DOWN
        return None

    def job_leftovers(self) -> list[tuple[str, int]]:
        try:
            found = self.client.containers.list(
                ignore_removed=True,
                all=True,
                filters={"label": [defaults.LABEL_JOB, defaults.LABEL_ATTEMPT]},
            )
        except ENGINE_ERRORS:
            return []
        pairs = {pair for c in found if (pair := attempt_of(c.labels)) is not None}
        pairs.update(network_leftovers(self.client))
        try:
            warm = self.client.containers.list(
                ignore_removed=True, all=True, filters={"label": defaults.LABEL_WARM}
            )
        except ENGINE_ERRORS:
            warm = []
        for c in warm:
            taken = re.match(r"^/?ci-pool-([0-9a-f]+)-([0-9]+)$", str(c.name))
            if taken:
                pairs.add((taken.group(1), int(taken.group(2))))
        return sorted(pairs)


def image_identity(image: str) -> dict[str, Any]:
    """What a runner reports about its capability's image: the local image id and its
    registry digests, so operators can tell which build every runner uses."""
    try:
        client = container_engine.connect(timeout=10)
        try:
            img = client.images.get(image)
        finally:
            client.close()
    except docker.errors.ImageNotFound:
        return {"image_error": f"image {image} is not present on this runner"}
    except (*ENGINE_ERRORS, ExecutorError) as exc:
        return {"image_error": f"container engine unavailable: {type(exc).__name__}"}
    return {
        "engine": container_engine.runtime_of(client),
        "image_id": img.id,
        "image_digests": list(img.attrs.get("RepoDigests") or []),
    }
