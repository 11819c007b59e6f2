"""The steps of one attempt: rendering each into a script, running it, reading its outputs."""

from __future__ import annotations

import shlex
import time
from typing import Any

from ci_pool import defaults
from ci_pool.core.specs import StepSpec
from ci_pool.core.workflow import expressions
from ci_pool.exceptions import JobFileRefused
from ci_pool.worker import workspace
from ci_pool.worker.attempt import Attempt, StepDirs
from ci_pool.worker.executors.base import Execution
from ci_pool.worker.outcome import StepFailure


def run_steps(att: Attempt, execution: Execution, ctx: dict[str, Any]) -> StepFailure | None:
    """Run the job's steps in order until the job is stopped; the first hard failure."""
    logw, monitor = att.logw, att.monitor
    failed: StepFailure | None = None
    for index, step in enumerate(att.job.steps, start=1):
        if monitor.stop_reason is not None:
            break
        status = "failure" if failed else "success"
        if not should_run(step, ctx, status):
            logw.line(f"##[step] {index} {step.name or 'run'} skipped")
            continue
        if step.checkout is not None:
            code, timed_out = run_checkout_step(att, execution, index, step, ctx, status), False
        else:
            code, timed_out = run_step(att, execution, index, step, ctx, status)
        if code == 0 and not timed_out:
            continue
        if step.continue_on_error:
            logw.line(f"##[ci-pool] continue-on-error: step {index} did not pass; going on")
            continue
        if failed is None:
            failed = StepFailure(index, code, timed_out)
    return failed


def should_run(step: StepSpec, ctx: dict[str, Any], status: str) -> bool:
    """Whether the step's ``if`` holds; without a status function it also needs success."""
    cond = step.if_expr
    if not cond:
        return status == "success"
    expr = expressions.parse(cond)
    ok = expressions.condition(expr, ctx, status)
    return ok if expressions.uses_status_function(expr) else ok and status == "success"


def run_checkout_step(
    att: Attempt,
    execution: Execution,
    index: int,
    step: StepSpec,
    ctx: dict[str, Any],
    status: str,
) -> int:
    """A checkout at its place among the steps (``workspace.run_checkout``)."""
    assert att.settings is not None
    att.logw.line(f"##[step] {index} {step.name}")
    started = time.monotonic()
    code = workspace.run_checkout(
        att, index, step, ctx, status, att.settings, execution.scripts_path
    )
    if step.id:
        ctx["steps"][step.id] = {"outputs": {}, "outcome": "success" if code == 0 else "failure"}
    att.logw.line(f"##[step] {index} exit {code} in {time.monotonic() - started:.2f}s")
    return code


def run_step(
    att: Attempt,
    execution: Execution,
    index: int,
    step: StepSpec,
    ctx: dict[str, Any],
    status: str,
) -> tuple[int, bool]:
    """Write, run and read back one step; its exit code and whether it timed out.
    A file the step left that the runner refuses to read fails the step."""
    logw, monitor, dirs = att.logw, att.monitor, att.dirs
    assert dirs is not None
    logw.line(f"##[step] {index} {step.name or 'run'}")
    try:
        name, env, run = write_step(index, step, ctx, status, dirs, execution)
    except JobFileRefused as exc:
        logw.line(f"##[ci-pool] step {index} not run: {exc}")
        return 1, False
    if att.evidence.commit_sha:  # the commit a checkout step put in the workspace
        env.setdefault("CI_POOL_COMMIT_SHA", att.evidence.commit_sha)
    att.commands.append(run)
    started = time.monotonic()
    timeout = step.timeout
    token = monitor.begin_step(timeout)
    # bash (the default) falls back to sh in images without bash.
    shell = None if step.shell == "bash" else step.shell
    code = execution.run_step(name, logw.write, env=env, shell=shell)
    timed_out = monitor.end_step(token)
    took = time.monotonic() - started
    outputs: dict[str, str] = {}
    refused: JobFileRefused | None = None
    try:
        outputs = parse_outputs(dirs.files.read(f"output-{index}", defaults.STEP_OUTPUT_MAX_BYTES))
    except JobFileRefused as exc:
        refused = exc
    if step.id:
        ok = code == 0 and refused is None
        ctx["steps"][step.id] = {
            "outputs": outputs,
            "outcome": "success" if ok else "failure",
        }
    if timed_out:
        logw.line(f"##[step] {index} timed out after {timeout}s")
    else:
        logw.line(f"##[step] {index} exit {code} in {took:.2f}s")
    if refused is not None:
        logw.line(f"##[ci-pool] step {index} failed: $GITHUB_OUTPUT {refused}")
        code = code or 1
    return code, timed_out


def write_step(
    index: int,
    step: StepSpec,
    ctx: dict[str, Any],
    status: str,
    dirs: StepDirs,
    execution: Execution,
) -> tuple[str, dict[str, str], str]:
    """Render the step's templates into its script; returns (script, env, text)."""
    run = expressions.render(step.run, ctx, status)
    env = {k: expressions.render(v, ctx, status) for k, v in step.env.items()}
    workdir = step.working_directory
    if workdir:
        run = f"cd -- {shlex.quote(expressions.render(workdir, ctx, status))}\n{run}"
    name = f"step-{index}.sh"
    dirs.scripts.create(name, (run + "\n").encode())
    dirs.files.replace(f"output-{index}")
    env["GITHUB_OUTPUT"] = f"{execution.files_path}/output-{index}"
    return name, env, run


def parse_outputs(data: bytes) -> dict[str, str]:
    """``name=value`` lines and ``name<<DELIM`` ... ``DELIM`` blocks, as GitHub writes them."""
    values: dict[str, str] = {}
    lines = data.decode(errors="replace").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            block = []
            i += 1
            while i < len(lines) and lines[i] != delim:
                block.append(lines[i])
                i += 1
            values[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
        i += 1
    return values
