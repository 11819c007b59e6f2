"""The steps of one attempt: rendering each into a script, running it, reading back its
files (outputs, environment, path, summary) and the annotations its output made."""

from __future__ import annotations

import shlex
import time
from typing import Any

from ci_pool.core.envfiles import parse_key_values
from ci_pool.core.specs import StepSpec
from ci_pool.core.workflow import expressions
from ci_pool.exceptions import JobFileRefused
from ci_pool.worker import actions, scripts, workspace
from ci_pool.worker.attempt import Attempt
from ci_pool.worker.executors.base import Execution
from ci_pool.worker.outcome import StepFailure
from ci_pool.worker.runner_store import RunnerStore
from ci_pool.worker.stepfiles import StepFiles


def run_steps(
    att: Attempt, execution: Execution, ctx: dict[str, Any], store: RunnerStore
) -> StepFailure | None:
    """Run the job's steps in order until the job is stopped; the first hard failure."""
    logw, monitor = att.logw, att.monitor
    files = StepFiles(store)
    failed: StepFailure | None = None
    pre = actions.run_pre_steps(att, execution, ctx, files)
    if pre is not None:
        failed = StepFailure(pre[0], pre[1], False)
    for index, step in enumerate(att.job.steps, start=1):
        if monitor.stop_reason is not None:
            break
        status = "failure" if failed else "success"
        if isinstance(ctx.get("job"), dict):
            ctx["job"]["status"] = status  # job.status, as the next step sees it
        if not should_run(step, ctx, status):
            logw.line(f"##[step] {index} {step.name or 'run'} skipped")
            continue
        if step.checkout is not None:
            code, timed_out = run_checkout_step(att, execution, index, step, ctx, status), False
        elif step.uses is not None:
            code, timed_out = actions.run_action_step(
                att, execution, index, step, ctx, status, files
            )
        else:
            code, timed_out = run_step(att, execution, index, step, ctx, status, files)
        if code == 0 and not timed_out:
            continue
        if step.continue_on_error:
            logw.line(f"##[ci-pool] continue-on-error: step {index} did not pass; going on")
            continue
        if failed is None:
            failed = StepFailure(index, code, timed_out)
    return run_posts(att, failed)


def run_posts(att: Attempt, failed: StepFailure | None) -> StepFailure | None:
    """The work actions left for after the steps, latest first, also after a failure or a
    cancel; a post step that fails fails the job if nothing failed before it."""
    status = (
        "cancelled" if att.monitor.stop_reason is not None else ("failure" if failed else "success")
    )
    for post in reversed(att.posts):
        att.logw.line(f"##[step] post {post.name}")
        started = time.monotonic()
        code = post.run(status)
        att.logw.line(f"##[step] post exit {code} in {time.monotonic() - started:.2f}s")
        if code != 0 and failed is None:
            failed = StepFailure(len(att.job.steps) + 1, code, False)
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
    files: StepFiles,
    *,
    label: str | None = None,
    base_env: dict[str, str] | None = None,
) -> tuple[int, bool]:
    """Write, run and read back one step; its exit code and whether it timed out.
    A file the step left that the runner refuses to read fails the step.

    A step of a composite action has its own ``label`` (``3.1``: the first step of the
    action step 3), naming its script, files and log lines, and runs with the action
    step's environment (``base_env``) under its own."""
    logw, monitor, dirs = att.logw, att.monitor, att.dirs
    assert dirs is not None
    key = label or str(index)
    logw.line(f"##[step] {key} {step.name or 'run'}")
    try:
        run = render_step(step, ctx, status)
        env = {**files.env, **(base_env or {}), **render_env(step, ctx, status)}
        env.update(files.prepare(dirs, key, execution.files_path))
        name = f"step-{key}.sh"
        dirs.scripts.create(name, (files.path_prefix() + run + "\n").encode())
    except (JobFileRefused, ValueError) as exc:  # ValueError: an expression that failed
        logw.line(f"##[ci-pool] step {key} not run: {exc}")
        return 1, False
    if att.evidence.commit_sha:  # the commit a checkout step put in the workspace
        env.setdefault("CI_POOL_COMMIT_SHA", att.evidence.commit_sha)
    att.commands.append(run)
    started = time.monotonic()
    timeout = step.timeout
    token = monitor.begin_step(timeout)
    # bash (the default) falls back to sh in images without bash.
    shell = None if step.shell == "bash" else step.shell
    try:
        code = scripts.run_script(att, execution, index, name, env, shell, files.store)
    finally:
        timed_out = monitor.end_step(token)
    took = time.monotonic() - started
    outputs, failures = files.read_back(att, index, step, ctx, label)
    if step.id:
        ok = code == 0 and not failures
        ctx["steps"][step.id] = {
            "outputs": outputs,
            "outcome": "success" if ok else "failure",
        }
    if timed_out:
        logw.line(f"##[step] {key} timed out after {timeout}s")
    else:
        logw.line(f"##[step] {key} exit {code} in {took:.2f}s")
    for failure in failures:
        logw.line(f"##[ci-pool] step {key} failed: {failure}")
    if failures:
        code = code or 1
    return code, timed_out


def render_step(step: StepSpec, ctx: dict[str, Any], status: str) -> str:
    """The step's script with its templates rendered (and its working directory)."""
    run = expressions.render(step.run, ctx, status)
    workdir = step.working_directory
    if workdir:
        run = f"cd -- {shlex.quote(expressions.render(workdir, ctx, status))}\n{run}"
    return run


def render_env(step: StepSpec, ctx: dict[str, Any], status: str) -> dict[str, str]:
    """The step's own ``env``, rendered."""
    return {k: expressions.render(v, ctx, status) for k, v in step.env.items()}


def parse_outputs(data: bytes) -> dict[str, str]:
    """``name=value`` lines and ``name<<DELIM`` ... ``DELIM`` blocks, as GitHub writes them."""
    return parse_key_values(data).values
