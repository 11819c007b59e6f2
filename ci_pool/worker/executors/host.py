"""Host executor: steps run directly on the runner, each step in its own process group.

A process a step starts in the background runs on through the job's later steps, as on
GitHub (a server the next step tests against): the step ends when its shell exits, and the
job's end kills every group its steps made. Each step's shell is left unreaped (a zombie)
until then, so its pid, which names the group, cannot be reused by a process of someone
else's. What a background process writes after its step ended is read and dropped, so it
never blocks on a full pipe; it is not in the log."""

from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ci_pool.exceptions import ExecutorError
from ci_pool.worker.executors.base import Execution, Executor, JobContext, launcher

if TYPE_CHECKING:
    from ci_pool.worker.executors.services import ServiceSet

#: How often (ms) a silent step's process is checked for having exited.
_EXIT_POLL_MS = 100

#: How a step script ($1) runs in each shell, started directly (stderr already goes to
#: the output pipe): the same programs as ``base.SHELLS``, without the ``sh -c`` between.
_BASH = ("--noprofile", "--norc", "-eo", "pipefail")
_SH = ("-e",)


class HostExecution(Execution):
    mode = "host"

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._stopped = threading.Event()
        self.services: ServiceSet | None = None
        #: Output pipes of ended steps whose background processes still hold them, by the
        #: step's process group; read and dropped by ``_drop_late_output``.
        self._lingering: dict[int, Any] = {}
        self._dropper: threading.Thread | None = None
        self._over = False
        #: Every step's shell, unreaped until ``steps_over`` kills its group.
        self._steps: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        if not self.ctx.workspace.is_dir():
            raise ExecutorError(f"workspace {self.ctx.workspace} is missing")
        if self.ctx.services:
            # Services run in Docker beside the host job, reached on relayed loopback ports.
            from ci_pool.worker.executors.services import ServiceSet, docker_client

            self.services = ServiceSet(docker_client(), self.ctx, host_job=True)
            self.services.start(self._stopped)

    def describe(self) -> dict[str, str]:
        # Whether the services' bridge forwards (see ``ServiceSet.forwarding``).
        return {} if self.services is None else {"service_forwarding": self.services.forwarding}

    def services_context(self) -> dict[str, Any]:
        return {} if self.services is None else self.services.context()

    @property
    def scripts_path(self) -> str:  # type: ignore[override]
        return str(self.ctx.scripts)

    @property
    def files_path(self) -> str:  # type: ignore[override]
        return str(self.ctx.files)

    @property
    def workspace_path(self) -> str:  # type: ignore[override]
        return str(self.ctx.workspace)

    def run_step(
        self,
        script_name: str,
        on_output: Callable[[bytes], None],
        env: dict[str, str] | None = None,
        shell: str | None = None,
    ) -> int:
        extra = env or {}
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.ctx.workspace),
            "LANG": "C.UTF-8",
            **self.ctx.env,
            **extra,
        }
        with self._lock:
            if self._stopping or self._over:
                return -signal.SIGTERM
            try:
                self._proc = subprocess.Popen(
                    step_argv(shell, f"{self.ctx.scripts}/{script_name}", env["PATH"]),
                    cwd=self.ctx.workspace,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ExecutorError(f"cannot start step on host: {exc}") from exc
            self._steps.append(self._proc)
        proc = self._proc
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        _pump_while_running(proc.pid, fd, on_output)
        code = _exit_code(proc.pid, block=True)
        assert code is not None
        if _pump_ready(fd, on_output):
            proc.stdout.close()  # not left open until the next step's Popen replaces it
        else:  # the step's background processes hold the pipe: they run on
            self._linger(proc.pid, proc.stdout)
        return code

    def _linger(self, pgid: int, pipe: Any) -> None:
        with self._lock:
            if not self._over:
                self._lingering[pgid] = pipe
                if self._dropper is None:
                    self._dropper = threading.Thread(
                        target=self._drop_late_output, name="ci-pool-late-output", daemon=True
                    )
                    self._dropper.start()
                return
        pipe.close()  # the steps are over: ``steps_over`` killed its group

    def _drop_late_output(self) -> None:
        """Read and drop what background processes of ended steps write, until each pipe
        ends or the job's steps are over. Only this thread closes a pipe while it runs."""
        while True:
            with self._lock:
                if self._over or not self._lingering:
                    self._dropper = None
                    return
                pipes = {pipe.fileno(): pgid for pgid, pipe in self._lingering.items()}
            poller = select.poll()
            for fd in pipes:
                poller.register(fd, select.POLLIN | select.POLLHUP)
            ended = [pipes[fd] for fd, _ in poller.poll(_EXIT_POLL_MS) if not os.read(fd, 65536)]
            with self._lock:
                for pgid in ended:
                    self._lingering.pop(pgid).close()

    def steps_over(self) -> None:
        with self._lock:
            self._over = True
            dropper = self._dropper
            steps, self._steps = self._steps, []
        for proc in steps:
            _kill(proc.pid, signal.SIGKILL)
            proc.wait()  # reaps the shell: its pid (the group's id) is free from here on
        if dropper is not None:
            dropper.join(timeout=5)
            if dropper.is_alive():  # never seen: leave the pipes open rather than race it
                return
        with self._lock:
            lingering, self._lingering = self._lingering, {}
        for pipe in lingering.values():
            pipe.close()

    def _kill_group(self, sig: int) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:  # unreaped: the group is the step's
            _kill(proc.pid, sig)

    def interrupt(self, grace: float) -> None:
        self._terminate(grace)

    def stop(self, grace: float) -> None:
        with self._lock:
            self._stopping = True
        self._stopped.set()
        self._terminate(grace)

    def _terminate(self, grace: float) -> None:
        proc = self._proc
        if proc is None or _exit_code(proc.pid) is not None:
            return
        self._kill_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _exit_code(proc.pid) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        self._kill_group(signal.SIGKILL)

    def close(self) -> None:
        self.steps_over()
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        if self.services is not None:
            services, self.services = self.services, None
            try:
                services.close()
            finally:
                services.client.close()


def step_argv(shell: str | None, script: str, path: str) -> list[str]:
    """How a step script starts on the host, with no ``sh -c`` in between: bash (errexit,
    pipefail) where the step's PATH has one, else ``sh -e`` (``shell: sh`` always); the
    launcher of ``base.SHELLS`` where the shell must decide (a relative PATH entry, no
    bash for a step that asks for bash)."""
    if shell == "sh":
        return ["sh", *_SH, script]
    # A relative PATH entry is the step's to resolve, from its own directory.
    if shell in (None, "bash") and all(d.startswith("/") for d in path.split(os.pathsep)):
        bash = _bash_on(path)
        if bash:
            return [bash, *_BASH, script]
        if shell is None:
            return ["sh", *_SH, script]
    # Else the launcher: a step asking for bash where there is none fails with the
    # shell's own "bash: not found" in its log.
    return ["sh", "-c", launcher(shell), "ci-pool-step", script]


def _bash_on(path: str) -> str | None:
    """The bash that ``command -v bash`` finds on ``path``: looked up once for the
    runner's own PATH, every time for a PATH the job set (it may point into the job's
    own directories)."""
    if path == os.environ.get("PATH"):
        return _runner_bash(path)
    return shutil.which("bash", path=path)


@functools.cache
def _runner_bash(path: str) -> str | None:
    return shutil.which("bash", path=path)


def _exit_code(pid: int, block: bool = False) -> int | None:
    """The step shell's exit code (minus the signal that killed it), None while it runs;
    the shell stays unreaped. One already reaped (the job's steps are over) counts as
    killed."""
    flags = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
    try:
        info = os.waitid(os.P_PID, pid, flags)
    except ChildProcessError:
        return -signal.SIGKILL
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _pump_while_running(pid: int, fd: int, on_output: Callable[[bytes], None]) -> None:
    """Hand the step's output on as it comes, in the calling thread (no reader thread per
    step), until the pipe ends or the step's own process has exited."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    while True:
        if poller.poll(_EXIT_POLL_MS):
            chunk = os.read(fd, 65536)
            if not chunk:
                return  # every writer closed the pipe
            on_output(chunk)
        if _exit_code(pid) is not None:
            return  # background children may hold the pipe: the caller reads what is there


def _pump_ready(fd: int, on_output: Callable[[bytes], None]) -> bool:
    """Hand on what the pipe holds now, without waiting for more; whether it ended (no
    background process of the step holds it)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    while poller.poll(0):
        chunk = os.read(fd, 65536)
        if not chunk:
            return True
        on_output(chunk)
    return False


def _kill(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class HostExecutor(Executor):
    def execution(self, ctx: JobContext) -> Execution:
        return HostExecution(ctx)

    def remove_leftovers(self, job_id: str, attempt: int | None = None) -> int:
        """The services a lost host job left in Docker, when a Docker engine answers."""
        from ci_pool.worker.executors.services import remove_job_objects

        return remove_job_objects(job_id, attempt)

    def job_leftovers(self) -> list[tuple[str, int]]:
        from ci_pool.worker.executors.services import job_objects

        return job_objects()
