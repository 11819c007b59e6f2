"""Job setup for actions: before the first step, every remote action a step of the job
names (``owner/repo[/path]@ref`` from ``actions_url``, or a full URL) is fetched, and the
``pre`` of each JavaScript action runs when its ``pre-if`` holds (default ``always()``),
in step order, as on Actions. The state it saves reaches its main and post.

Local actions (``./path``) are not known at job start: they come with the checkout, which
a step of the job may make (``actions/checkout``), so their ``pre`` runs right before
their main, in their step. Built-in actions and ``docker://`` images have no ``pre``; a
container action's ``pre-entrypoint`` needs its step's container and runs right before
its entrypoint. An action inside a composite action runs its ``pre`` in its step."""

from __future__ import annotations

from typing import Any

from ci_pool.core.actions import parse_uses
from ci_pool.core.workflow import expressions
from ci_pool.exceptions import ActionError, JobFileRefused
from ci_pool.worker.actions import fetch
from ci_pool.worker.actions.call import ActionCall, builtin_for, complete_inputs
from ci_pool.worker.actions.node import NodeAction
from ci_pool.worker.attempt import Attempt
from ci_pool.worker.executors.base import Execution
from ci_pool.worker.stepfiles import StepFiles


def run_pre_steps(
    att: Attempt, execution: Execution, ctx: dict[str, Any], files: StepFiles
) -> tuple[int, int] | None:
    """Fetch the job's remote actions and run their ``pre``; the step index and exit code
    of the first that fails (the job's steps then see a failure), else None."""
    for index, step in enumerate(att.job.steps, start=1):
        if att.monitor.stop_reason is not None:
            return None
        if step.uses is None or step.checkout is not None:
            continue
        try:
            ref = parse_uses(step.uses)
            if ref.kind != "remote":
                continue
            inputs = {k: expressions.render(v, ctx, "success") for k, v in step.inputs.items()}
            own = {k: expressions.render(v, ctx, "success") for k, v in step.env.items()}
        except ValueError:
            continue  # its step says what is wrong
        call = ActionCall(att, execution, index, step, ref, inputs, {**files.env, **own}, ctx,
                          "success", files, label=str(index))  # fmt: skip
        try:
            if builtin_for(call) is not None:
                continue
            loaded = fetch.fetch(call)
        except (ActionError, JobFileRefused) as exc:
            att.logw.line(f"##[error]{exc}")  # as its step would say it
            return index, 1
        runs = loaded.definition.runs
        if not runs.using.startswith("node") or not runs.pre:
            continue
        call.inputs = complete_inputs(call, loaded)
        action = NodeAction(call, loaded)
        if not action.holds(runs.pre_if, "success"):
            att.logw.line(f"##[ci-pool] pre of {ref} skipped (pre-if is false)")
            att.pre_states[index] = ((loaded.commit or ""), {})
            continue
        att.logw.line(f"##[step] pre {index} {step.name or ref}")
        code = action.phase("pre", runs.pre, index, outputs=False)
        att.pre_states[index] = ((loaded.commit or ""), dict(action.phases.state))
        att.logw.line(f"##[step] pre {index} exit {code}")
        if code != 0:
            return index, code
    return None
