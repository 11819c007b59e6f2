"""Container actions (``runs.using: docker``, and ``uses: docker://image`` steps): the
action's image runs as a container of its own beside the job.

It sees the job's workspace, step files and scripts where the job sees them (so
$GITHUB_WORKSPACE, $GITHUB_OUTPUT and the like name the same files), runs with the
capability's network mode and limits, is labelled with the job, attempt and runner (the
runner's sweep removes one a lost attempt left) and is removed when it ends. Its image is
one the capability allows (``image.check_image``). ``pre-entrypoint`` runs right before the
main entrypoint, ``post-entrypoint`` after the job's steps (``post-if``, default
``always()``)."""

from __future__ import annotations

import secrets
import shlex
import threading
import time
from typing import Any

from docker.types import Mount

from ci_pool import container_engine, defaults
from ci_pool.core.workflow import expressions
from ci_pool.exceptions import ActionError, ExecutorError, JobFileRefused
from ci_pool.worker import scripts
from ci_pool.worker.actions import image as images
from ci_pool.worker.actions.call import ActionCall, PostStep, kind
from ci_pool.worker.actions.load import LoadedAction
from ci_pool.worker.actions.toolkit import Phases
from ci_pool.worker.contexts import job_env
from ci_pool.worker.executors.docker import ENGINE_ERRORS, DockerExecution, _memory_bytes

#: Inputs of a ``uses: docker://`` step that set the container's command, not INPUT_*.
_COMMAND_INPUTS = ("args", "entrypoint")


def engine(call: ActionCall) -> Any:
    """The Docker client: the job's own in docker mode, else one from the environment."""
    if isinstance(call.execution, DockerExecution):
        return call.execution.client
    try:
        return container_engine.connect(ping=True)
    except ExecutorError as exc:
        raise ActionError(
            f"action {call.ref} is a container action and {exc}; or run the job on a runner "
            "with a container engine"
        ) from None


class ContainerAction:
    """One container action of one step: its image, command and phases."""

    def __init__(self, call: ActionCall, loaded: LoadedAction | None, client: Any):
        self.call, self.loaded, self.client = call, loaded, client
        self.phases = Phases(call, loaded)
        self.args: list[str] = []
        self.entrypoint: str | None = None
        self.env: dict[str, str] = {}
        self.image = ""

    def prepare(self) -> None:
        """Find (or build) the image and render the command and environment."""
        call, loaded = self.call, self.loaded
        if loaded is None:  # uses: docker://image
            self.image = call.ref.image
            images.check_image(call, self.image, "image")
            images.present(self.client, call, self.image)
            self.args = shlex.split(call.input("args"))
            self.entrypoint = call.input("entrypoint") or None
            call.inputs = {k: v for k, v in call.inputs.items() if k.lower() not in _COMMAND_INPUTS}
            return
        runs = loaded.definition.runs
        assert runs.image is not None
        if runs.image.startswith("docker://"):
            self.image = runs.image.removeprefix("docker://")
            images.check_image(call, self.image, "runs.image")
            images.present(self.client, call, self.image)
        else:
            self.image = images.build(self.client, call, loaded, runs.image)
        ctx = {**call.ctx, "inputs": call.inputs}
        self.args = [expressions.render(a, ctx, call.status) for a in runs.args]
        self.env = {k: expressions.render(v, ctx, call.status) for k, v in runs.env.items()}
        self.entrypoint = runs.entrypoint

    def run(self) -> int:
        """``pre-entrypoint`` (if it holds) then the main entrypoint; the post is left."""
        self.prepare()
        call = self.call
        runs = self.loaded.definition.runs if self.loaded is not None else None
        if runs is not None and runs.pre_entrypoint and self.holds(runs.pre_if, call.status):
            code = self.phase("pre", runs.pre_entrypoint, call.index, outputs=False)
            if code != 0:
                return code
        if runs is not None and runs.post_entrypoint:
            call.att.posts.append(PostStep(call.step.name or str(call.ref), self.post))
        return self.phase("main", self.entrypoint, call.index, outputs=True)

    def post(self, status: str) -> int:
        """``post-entrypoint``, given the job's status."""
        assert self.loaded is not None
        runs = self.loaded.definition.runs
        if not self.holds(runs.post_if, status):
            self.call.line(f"##[ci-pool] post of {self.call.ref} skipped (post-if is false)")
            return 0
        try:
            return self.phase(
                "post",
                runs.post_entrypoint,
                defaults.POST_FILES_BASE + self.call.index,
                outputs=False,
            )
        except (ActionError, JobFileRefused) as exc:
            self.call.line(f"##[error]post of {self.call.ref} not run: {exc}")
            return 1

    def holds(self, condition: str | None, status: str) -> bool:
        """Whether ``pre-if``/``post-if`` holds (both default to ``always()``)."""
        try:
            return expressions.condition(condition or "always()", self.call.ctx, status)
        except ValueError as exc:
            self.call.line(f"##[error]action {self.call.ref}: {exc}")
            return False

    def phase(self, name: str, entrypoint: str | None, files_index: int, *, outputs: bool) -> int:
        """Run the action's container once with ``entrypoint``; its exit code."""
        call = self.call
        env = {**job_env(call.att, call.ctx), **self.phases.env(files_index), **self.env}
        container = self.create(name, entrypoint, env)
        try:
            code = scripts.run_output(
                call.att, call.index, call.files.store, lambda out: self.wait(container, out)
            )
        finally:
            try:
                container.remove(force=True, v=True)
            except ENGINE_ERRORS as exc:
                call.line(f"##[ci-pool] cleanup: {exc}; the runner removes it later")
        failures = self.phases.read_back(files_index, outputs=outputs)
        for failure in failures:
            call.line(f"##[ci-pool] step {call.index} ({name}) failed: {failure}")
        return code or (1 if failures else 0)

    def create(self, phase: str, entrypoint: str | None, env: dict[str, str]) -> Any:
        """The action's container, created (not started)."""
        call = self.call
        att, execution, cap = call.att, call.execution, call.att.cap
        assert att.dirs is not None and att.workspace is not None and cap is not None
        job = att.job
        kwargs: dict[str, Any] = {
            "image": self.image,
            "command": self.args or None,
            "environment": env,
            "working_dir": execution.workspace_path,
            "name": f"ci-pool-{job.id}-{job.attempt}-{call.index}-{phase}-{secrets.token_hex(3)}",
            "labels": {
                defaults.LABEL_JOB: job.id,
                defaults.LABEL_RUNNER: att.runner_id,
                defaults.LABEL_ATTEMPT: str(job.attempt),
            },
            "mounts": [
                Mount(execution.workspace_path, str(att.workspace), type="bind"),
                Mount(execution.files_path, str(att.dirs.files.path), type="bind"),
                Mount(
                    execution.scripts_path, str(att.dirs.scripts.path), type="bind", read_only=True
                ),
            ],
            "network_mode": cap.network,
            "detach": True,
        }
        if entrypoint:
            kwargs["entrypoint"] = [entrypoint]
        if cap.pids_limit:
            kwargs["pids_limit"] = cap.pids_limit
        if cap.memory:
            kwargs["mem_limit"] = _memory_bytes(cap.memory)
        if cap.cpus:
            kwargs["nano_cpus"] = int(cap.cpus * 1e9)
        att.commands.append(f"docker run {self.image} {shlex.join(self.args)}".rstrip())
        try:
            return self.client.containers.create(**kwargs)
        except ENGINE_ERRORS as exc:
            raise ActionError(f"action {call.ref}: its container cannot be created: {exc}") from exc

    def wait(self, container: Any, out: Any) -> int:
        """Start the container, stream its output, stop it on cancel or the step's timeout;
        its exit code."""
        call = self.call
        done = threading.Event()
        timeout = call.step.timeout
        deadline = time.monotonic() + timeout if timeout else None
        monitor = call.att.monitor

        def watch() -> None:
            while not done.wait(0.25):
                late = deadline is not None and time.monotonic() > deadline
                if monitor.stop_reason is not None or late:
                    try:
                        container.stop(timeout=max(int(monitor.stop_grace), 1))
                    except ENGINE_ERRORS:
                        pass
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        try:
            container.start()
            watcher.start()
            for chunk in container.logs(stream=True, follow=True):
                out(chunk)
            status = container.wait().get("StatusCode")
        except ENGINE_ERRORS as exc:
            raise ActionError(f"action {call.ref}: its container failed: {exc}") from exc
        finally:
            done.set()
        return 137 if status is None else int(status)


@kind("docker", "docker-image")
def run_container(call: ActionCall, loaded: LoadedAction | None) -> int:
    """Run a container action."""
    return ContainerAction(call, loaded, engine(call)).run()
