"""One ``uses:`` step: its inputs and environment rendered, the action found (built in, or
fetched) and run, its outputs kept for ``steps.<id>.outputs``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ci_pool.core.actions import ActionRef, parse_uses
from ci_pool.core.specs import StepSpec
from ci_pool.core.workflow import expressions
from ci_pool.exceptions import ActionError, JobFileRefused
from ci_pool.worker.actions import fetch
from ci_pool.worker.actions.load import LoadedAction, load_local
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
    #: How many composite actions this call is inside (``MAX_ACTION_DEPTH`` bounds it).
    depth: int = 0
    #: The step's label in the log and its files' names: ``3``, or ``3.1`` for the first
    #: step of the composite action run as step 3.
    label: str = ""

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


@dataclass(frozen=True)
class BuiltinAction:
    """A built-in action and the ``with:`` inputs it implements (lower case): a step giving
    any other input runs the real action from ``actions_url`` instead."""

    run: Builtin
    inputs: frozenset[str]

    def uncovered(self, given: Iterable[str]) -> list[str]:
        """The inputs among ``given`` this built-in does not implement, in order given."""
        return [name for name in given if name.lower() not in self.inputs]


#: Built-in actions by ``owner/repo`` in lower case.
BUILTINS: dict[str, BuiltinAction] = {}


def builtin(*names: str, inputs: Iterable[str]) -> Callable[[Builtin], Builtin]:
    """Register a function as the built-in for the actions ``names`` (``owner/repo``),
    implementing the inputs ``inputs``."""
    covered = frozenset(name.lower() for name in inputs)

    def register(fn: Builtin) -> Builtin:
        for name in names:
            BUILTINS[name.lower()] = BuiltinAction(fn, covered)
        return fn

    return register


def builtin_for(call: ActionCall) -> Builtin | None:
    """The built-in that runs ``call``, or None to run the real action: none is built in,
    or the step gives an input the built-in does not implement (said in the log). Without a
    place to fetch the real action from, such an input is an ActionError naming it."""
    ref = call.ref
    found = BUILTINS.get(ref.name) if ref.kind == "remote" else None
    if found is None:
        return None
    extra = found.uncovered(call.inputs)
    if not extra:
        return found.run
    names = ", ".join(repr(name) for name in extra)
    plural = "s" if len(extra) > 1 else ""
    settings = call.att.settings
    if ref.base_url is None and (settings is None or settings.actions_url is None):
        raise ActionError(
            f"{ref}: the built-in does not cover input{plural} {names} (it takes "
            f"{', '.join(sorted(found.inputs))}); drop the input{plural}, or set actions_url "
            f"to a forge that mirrors {ref.name} to run the real action"
        )
    where = ref.base_url or "actions_url"
    call.line(
        f"{ref}: the built-in does not cover input{plural} {names}; running the action from {where}"
    )
    return None


@dataclass(frozen=True)
class PostStep:
    """Work an action leaves for after the job's steps (a JavaScript action's ``post``, the
    cache's save): run in reverse order of registration, also after a failure."""

    name: str
    run: Callable[[str], int]  # given the job's status; returns an exit code


#: Runs an action of one ``runs.using`` kind (``composite``, ``node20``, ``docker``; and
#: ``docker-image`` for ``uses: docker://``, which has no action.yml).
KindRunner = Callable[[ActionCall, "LoadedAction | None"], int]
KINDS: dict[str, KindRunner] = {}


def kind(*usings: str) -> Callable[[KindRunner], KindRunner]:
    """Register a function as the runner of actions using ``usings``."""

    def register(fn: KindRunner) -> KindRunner:
        for using in usings:
            KINDS[using] = fn
        return fn

    return register


def run_loaded(call: ActionCall) -> int:
    """An action that is not built in: found (workspace or fetched), its inputs completed
    from action.yml, run by its kind."""
    ref = call.ref
    loaded: LoadedAction | None = None
    if ref.kind == "docker":
        fetch.check_pinned(ref, call.att.cap)  # a composite action may name any image
        using = "docker-image"
    else:
        if ref.kind == "local":
            loaded = load_local(ref, call.att.workspace, call.execution.workspace_path)
        else:
            loaded = fetch.fetch(call)
        using = loaded.definition.runs.using
        call.inputs = complete_inputs(call, loaded)
    runner = KINDS.get(using)
    if runner is None:
        raise ActionError(f"action {ref}: this runner cannot run actions using {using!r}")
    return runner(call, loaded)


def complete_inputs(call: ActionCall, loaded: LoadedAction) -> dict[str, str]:
    """The inputs the action declares, each from ``with:`` or its default (rendered); the
    log warns of a required input not given and of inputs the action does not declare."""
    given = {k.lower(): v for k, v in call.inputs.items()}
    declared = loaded.definition.inputs
    known = {name.lower() for name in declared}
    for name in given:
        if name not in known:
            call.line(f"##[warning]action {call.ref} has no input {name!r}; it is ignored")
    inputs: dict[str, str] = {}
    for name, spec in declared.items():
        if name.lower() in given:
            inputs[name] = given[name.lower()]
        elif spec.default is not None:
            inputs[name] = expressions.render(spec.default, call.ctx, call.status)
        else:
            inputs[name] = ""
            if spec.required:
                call.line(f"##[warning]input {name!r} of action {call.ref} is required")
    return inputs


def run_action_step(
    att: Attempt,
    execution: Execution,
    index: int,
    step: StepSpec,
    ctx: dict[str, Any],
    status: str,
    files: StepFiles,
    *,
    depth: int = 0,
    label: str | None = None,
    base_env: dict[str, str] | None = None,
) -> tuple[int, bool]:
    """Run one ``uses:`` step; its exit code and whether it timed out. Inside a composite
    action: its ``depth``, ``label`` and the action step's environment (``base_env``)."""
    logw, monitor = att.logw, att.monitor
    key = label or str(index)
    logw.line(f"##[step] {key} {step.name}")
    assert step.uses is not None
    try:
        ref = parse_uses(step.uses)
        inputs = {k: expressions.render(v, ctx, status) for k, v in step.inputs.items()}
        own = {k: expressions.render(v, ctx, status) for k, v in step.env.items()}
        env = {**files.env, **(base_env or {}), **own}
    except ValueError as exc:  # an expression that failed
        logw.line(f"##[ci-pool] step {key} not run: {exc}")
        return 1, False
    call = ActionCall(
        att, execution, index, step, ref, inputs, env, ctx, status, files, depth=depth, label=key
    )
    started = time.monotonic()
    token = monitor.begin_step(step.timeout)
    try:
        code = (builtin_for(call) or run_loaded)(call)
    except (ActionError, JobFileRefused, ValueError) as exc:  # ValueError: an expression
        logw.line(f"##[error]{exc}")
        code = 1
    finally:
        timed_out = monitor.end_step(token)
    if step.id:
        ok = code == 0 and not timed_out
        ctx["steps"][step.id] = {"outputs": call.outputs, "outcome": "success" if ok else "failure"}
    if timed_out:
        logw.line(f"##[step] {key} timed out after {step.timeout}s")
    else:
        logw.line(f"##[step] {key} exit {code} in {time.monotonic() - started:.2f}s")
    return code, timed_out
