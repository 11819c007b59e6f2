"""Composite actions (``runs.using: composite``): the action's steps run in order as steps of
the job, each ``run:`` through the job's own step runner and each ``uses:`` as a nested
action call, with ``inputs.*``, ``github.action_path`` / ``$GITHUB_ACTION_PATH`` and a
``steps`` context of their own; the action's outputs are rendered from its steps'."""

from __future__ import annotations

from typing import Any

from ci_pool.core.actions import MAX_ACTION_DEPTH
from ci_pool.core.specs import StepSpec
from ci_pool.core.workflow import expressions
from ci_pool.exceptions import ActionError
from ci_pool.worker.actions.call import ActionCall, kind, run_action_step
from ci_pool.worker.actions.load import LoadedAction


def action_context(call: ActionCall, loaded: LoadedAction) -> dict[str, Any]:
    """The expression contexts inside the action: the job's, with the action's inputs, an
    empty ``steps`` and ``github.action_*``."""
    ctx = dict(call.ctx)
    github = dict(ctx.get("github") or {})
    github["action_path"] = loaded.path_in_job
    if call.ref.kind == "remote":
        github["action_repository"] = f"{call.ref.owner}/{call.ref.repo}"
        github["action_ref"] = call.ref.ref
    outer = ctx.get("env")
    outer_env: dict[str, Any] = outer if isinstance(outer, dict) else {}
    ctx.update(
        github=github,
        inputs=dict(call.inputs),
        steps={},
        env={**outer_env, **call.env},
    )
    return ctx


def run_inner(call: ActionCall, step: StepSpec, label: str, ctx: dict[str, Any], status: str,
              base_env: dict[str, str]) -> tuple[int, bool]:  # fmt: skip
    """One step of the action; its exit code and whether it timed out."""
    from ci_pool.worker import steps as job_steps  # the job's step runner imports this package

    # A composite's steps have no time limit of their own: the action step's holds.
    if step.timeout is None and call.step.timeout is not None:
        step = step.model_copy(update={"timeout": call.step.timeout})
    att, execution = call.att, call.execution
    if step.checkout is not None:
        return job_steps.run_checkout_step(att, execution, call.index, step, ctx, status), False
    if step.uses is not None:
        return run_action_step(
            att, execution, call.index, step, ctx, status, call.files,
            depth=call.depth + 1, label=label, base_env=base_env,
        )  # fmt: skip
    return job_steps.run_step(
        att, execution, call.index, step, ctx, status, call.files, label=label, base_env=base_env
    )


@kind("composite")
def run_composite(call: ActionCall, loaded: LoadedAction | None) -> int:
    """Run a composite action's steps; the exit code of the first that failed (0: none)."""
    from ci_pool.worker import steps as job_steps

    assert loaded is not None
    if call.depth >= MAX_ACTION_DEPTH:
        raise ActionError(
            f"action {call.ref}: composite actions are nested more than {MAX_ACTION_DEPTH} "
            "deep (an action that calls itself?); the limit is MAX_ACTION_DEPTH"
        )
    ctx = action_context(call, loaded)
    base_env = {**call.env, "GITHUB_ACTION_PATH": loaded.path_in_job}
    status, failed = "success", 0
    for n, step in enumerate(loaded.steps, start=1):
        if call.att.monitor.stop_reason is not None:
            break
        label = f"{call.label}.{n}"
        if not job_steps.should_run(step, ctx, status):
            call.line(f"##[step] {label} {step.name or 'run'} skipped")
            continue
        code, timed_out = run_inner(call, step, label, ctx, status, base_env)
        if code == 0 and not timed_out:
            continue
        if step.continue_on_error:
            call.line(f"##[ci-pool] continue-on-error: step {label} did not pass; going on")
            continue
        if not failed:
            status, failed = "failure", code or 1
    # What its steps set through $GITHUB_ENV reaches the job's later steps' env context too.
    if isinstance(call.ctx.get("env"), dict):
        call.ctx["env"].update(call.files.env)
    for name, output in loaded.definition.outputs.items():
        if output.value is not None:
            call.outputs[name] = expressions.render(output.value, ctx, status)
    return failed
