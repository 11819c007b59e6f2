"""One ``uses:`` step: its inputs and environment rendered, the action found (built in, or
fetched) and run, its outputs kept for ``steps.<id>.outputs``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ci_pool.core.actions import ActionRef, parse_uses
from ci_pool.core.specs import StepSpec
from ci_pool.core.workflow import expressions
from ci_pool.exceptions import ActionError, JobFileRefused
from ci_pool.worker.attempt import Attempt
from ci_pool.worker.executors.base import Execution
from ci_pool.worker.stepfiles import StepFiles


@dataclass
class ActionCall:
    """Everything an action's run needs: where it runs and with what."""

    att: Attempt
    execution: Execution
    index: int
    step: StepSpec
    ref: ActionRef
    #: ``with:`` values, rendered (names as written; actions read them case-insensitively).
    inputs: dict[str, str]
    #: The step's environment: what earlier steps set ($GITHUB_ENV) and its own ``env:``.
    env: dict[str, str]
    ctx: dict[str, Any]
    status: str
    files: StepFiles
    #: What the action sets as its outputs (``steps.<id>.outputs``).
    outputs: dict[str, str] = field(default_factory=dict)

    def line(self, text: str) -> None:
        """A line in the job's log."""
        self.att.logw.line(text)

    def input(self, name: str, default: str = "") -> str:
        """An input by name, as actions read them: case-insensitive, ``-`` and ``_`` apart."""
        for key, value in self.inputs.items():
            if key.lower() == name.lower():
                return value
        return default


#: A built-in action: runs the call, returns the step's exit code (ActionError: fails it).
Builtin = Callable[[ActionCall], int]

#: Built-in actions by ``owner/repo`` in lower case.
BUILTINS: dict[str, Builtin] = {}


def builtin(*names: str) -> Callable[[Builtin], Builtin]:
    """Register a function as the built-in for the actions ``names`` (``owner/repo``)."""

    def register(fn: Builtin) -> Builtin:
        for name in names:
            BUILTINS[name.lower()] = fn
        return fn

    return register


@dataclass(frozen=True)
class PostStep:
    """Work an action leaves for after the job's steps (a JavaScript action's ``post``, the
    cache's save): run in reverse order of registration, also after a failure."""

    name: str
    run: Callable[[str], int]  # given the job's status; returns an exit code


def _fetched(call: ActionCall) -> int:
    """Actions that are not built in; fetching them is not available on this runner."""
    raise ActionError(
        f"action {call.ref} is not built into ci-pool and this runner cannot fetch actions"
    )


#: Runs an action that is not built in (fetched from ``actions_url``, a host, or the
#: workspace); replaced where fetching is available.
run_fetched: list[Builtin] = [_fetched]


def run_action_step(
    att: Attempt,
    execution: Execution,
    index: int,
    step: StepSpec,
    ctx: dict[str, Any],
    status: str,
    files: StepFiles,
) -> tuple[int, bool]:
    """Run one ``uses:`` step; its exit code and whether it timed out."""
    logw, monitor = att.logw, att.monitor
    logw.line(f"##[step] {index} {step.name}")
    assert step.uses is not None
    try:
        ref = parse_uses(step.uses)
        inputs = {k: expressions.render(v, ctx, status) for k, v in step.inputs.items()}
        env = {**files.env, **{k: expressions.render(v, ctx, status) for k, v in step.env.items()}}
    except ValueError as exc:  # an expression that failed
        logw.line(f"##[ci-pool] step {index} not run: {exc}")
        return 1, False
    call = ActionCall(att, execution, index, step, ref, inputs, env, ctx, status, files)
    started = time.monotonic()
    token = monitor.begin_step(step.timeout)
    try:
        handler = BUILTINS.get(ref.name) if ref.kind == "remote" else None
        code = (handler or run_fetched[0])(call)
    except (ActionError, JobFileRefused) as exc:
        logw.line(f"##[error]{exc}")
        code = 1
    finally:
        timed_out = monitor.end_step(token)
    if step.id:
        ok = code == 0 and not timed_out
        ctx["steps"][step.id] = {"outputs": call.outputs, "outcome": "success" if ok else "failure"}
    if timed_out:
        logw.line(f"##[step] {index} timed out after {step.timeout}s")
    else:
        logw.line(f"##[step] {index} exit {code} in {time.monotonic() - started:.2f}s")
    return code, timed_out
