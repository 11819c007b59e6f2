"""Host steps as a job sees them: the shell each step runs in (bash with errexit and
pipefail where the step's PATH has bash, else ``sh -e``), its exit code, its output with
stderr in order, and its environment; and a background process a step leaves is ended."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from ci_pool.core.capabilities import Capability
from ci_pool.worker.executors.base import JobContext
from ci_pool.worker.executors.host import HostExecution

SH = shutil.which("sh")
BASH = shutil.which("bash")


def _execution(tmp_path: Path, env: dict[str, str] | None = None) -> HostExecution:
    root = tmp_path / "job-1"
    for name in ("src", "scripts", "files"):
        (root / name).mkdir(parents=True, exist_ok=True)
    ctx = JobContext(
        job_id="job",
        attempt=1,
        runner_id="r1",
        capability=Capability(name="iso", queue="iso", image=""),
        workspace=root / "src",
        scripts=root / "scripts",
        files=root / "files",
        env=env or {},
    )
    execution = HostExecution(ctx)
    execution.start()
    return execution


def _run(
    execution: HostExecution,
    script: str,
    *,
    env: dict[str, str] | None = None,
    shell: str | None = None,
) -> tuple[int, str]:
    name = f"step-{time.monotonic_ns()}.sh"
    (execution.ctx.scripts / name).write_text(script)
    out: list[bytes] = []
    code = execution.run_step(name, out.append, env=env, shell=shell)
    return code, b"".join(out).decode()


def _path_with(tmp_path: Path, **tools: str | None) -> str:
    """A PATH holding only the named tools (each a link to the real program)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, target in tools.items():
        assert target is not None, f"{name} is not installed"
        os.symlink(target, bin_dir / name)
    return str(bin_dir)


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_a_step_runs_in_bash_with_errexit_and_pipefail_and_one_ordered_stream(
    tmp_path: Path,
) -> None:
    execution = _execution(tmp_path, env={"JOB_VAR": "from-job"})
    try:
        code, out = _run(
            execution,
            'echo "bash ${BASH_VERSION:+yes} $0 $JOB_VAR $STEP_VAR $PWD"\n'
            "echo to-stderr >&2\necho after\n",
            env={"STEP_VAR": "from-step"},
        )
        assert code == 0
        script0 = out.split()[2]
        assert out.splitlines() == [
            f"bash yes {script0} from-job from-step {execution.ctx.workspace}",
            "to-stderr",
            "after",
        ]
        assert Path(script0).parent == execution.ctx.scripts
        # pipefail: a failing command inside a pipeline fails the step, and -e stops it.
        code, out = _run(execution, "false | true\necho not-reached\n")
        assert (code, out) == (1, "")
        code, out = _run(execution, "exit 7\n", shell="bash")
        assert code == 7
    finally:
        execution.close()


def test_shell_sh_runs_posix_sh_with_errexit(tmp_path: Path) -> None:
    execution = _execution(tmp_path)
    try:
        code, out = _run(
            execution, 'echo "bash=${BASH_VERSION:-none}"\nfalse\necho not-reached\n', shell="sh"
        )
        assert (code, out) == (1, "bash=none\n")
    finally:
        execution.close()


def test_without_bash_on_the_steps_path_a_step_runs_in_sh_and_shell_bash_says_why(
    tmp_path: Path,
) -> None:
    execution = _execution(tmp_path, env={"PATH": _path_with(tmp_path, sh=SH)})
    try:
        code, out = _run(execution, 'echo "bash=${BASH_VERSION:-none}"\nfalse\necho no\n')
        assert (code, out) == (1, "bash=none\n")
        # A step that asks for bash where there is none fails with the shell's own words,
        # as a step failure (exit 127), not as an error of the runner.
        code, out = _run(execution, "echo never\n", shell="bash")
        assert code == 127
        assert "bash" in out and "not found" in out
    finally:
        execution.close()


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_a_bash_the_job_puts_on_its_path_is_the_one_that_runs(tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    wrapper = tools / "bash"
    wrapper.write_text(f'#!{SH}\necho "the job\'s bash"\nexec {BASH} "$@"\n')
    wrapper.chmod(0o755)
    path = f"{tools}:{os.environ['PATH']}"
    execution = _execution(tmp_path)
    try:
        assert _run(execution, "echo step\n") == (0, "step\n")
        assert _run(execution, "echo step\n", env={"PATH": path}) == (0, "the job's bash\nstep\n")
    finally:
        execution.close()


def test_a_background_process_runs_on_until_the_steps_are_over(tmp_path: Path) -> None:
    execution = _execution(tmp_path)
    pid_file = tmp_path / "bg.pid"
    try:
        started = time.monotonic()
        code, out = _run(execution, f"sleep 60 &\necho $! > {pid_file}\necho started\n")
        assert (code, out) == (0, "started\n")
        assert time.monotonic() - started < 30  # the step does not wait for its child
        pid = int(pid_file.read_text())
        assert _alive(pid)
        assert _run(execution, f"kill -0 {pid} && echo still there\n") == (0, "still there\n")
        execution.steps_over()
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid)
    finally:
        execution.close()


def test_late_output_of_a_background_process_never_blocks_it(tmp_path: Path) -> None:
    # 1 MB after the step ended, far more than a pipe holds: read and dropped, not logged.
    execution = _execution(tmp_path)
    done = tmp_path / "done"
    try:
        script = f"(sleep 0.3; head -c 1000000 /dev/zero; echo ok > {done}) &\necho started\n"
        assert _run(execution, script) == (0, "started\n")
        deadline = time.monotonic() + 20
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done.read_text() == "ok\n"
        assert _run(execution, "echo next\n") == (0, "next\n")
    finally:
        execution.close()


def test_close_kills_what_the_steps_left_when_steps_over_was_not_called(
    tmp_path: Path,
) -> None:
    execution = _execution(tmp_path)
    pid_file = tmp_path / "bg.pid"
    _run(execution, f"sleep 60 &\necho $! > {pid_file}\n")
    pid = int(pid_file.read_text())
    execution.close()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    execution.close()  # twice is fine


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_a_relative_path_entry_is_resolved_from_the_workspace_not_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    execution = _execution(tmp_path)
    tools = execution.ctx.workspace / "tools"
    tools.mkdir()
    wrapper = tools / "bash"
    wrapper.write_text(f'#!{SH}\necho "the workspace\'s bash"\nexec {BASH} "$@"\n')
    wrapper.chmod(0o755)
    # The runner's own directory has no tools/bash: only the step's directory does.
    monkeypatch.chdir(tmp_path)
    try:
        code, out = _run(execution, "echo step\n", env={"PATH": f"tools:{os.environ['PATH']}"})
        assert (code, out) == (0, "the workspace's bash\nstep\n")
    finally:
        execution.close()


def test_a_step_shell_keeps_its_pid_until_the_steps_are_over(tmp_path: Path) -> None:
    # Its pid names the step's process group: while the shell is unreaped no other
    # process can get that pid, so the group killed at the job's end is the step's.
    execution = _execution(tmp_path)
    try:
        assert _run(execution, "echo $$ > shell.pid\nexit 3\n") == (3, "")
        pid = int((execution.ctx.workspace / "shell.pid").read_text())
        with open(f"/proc/{pid}/stat") as fh:
            assert fh.read().rsplit(")", 1)[1].split()[0] == "Z"
        execution.steps_over()
        assert not os.path.exists(f"/proc/{pid}")
        assert _run(execution, "echo too late\n")[1] == ""  # no step runs after
    finally:
        execution.close()
