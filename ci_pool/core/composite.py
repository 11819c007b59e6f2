"""A composite action's steps (``runs.steps`` of its action.yml), read with the workflow's
step reader into StepSpecs, so the runner runs them as it runs a job's steps and every
problem names the action file, line and column."""

from __future__ import annotations

from ci_pool.core.actions import ActionDefinition, read_definition
from ci_pool.core.specs import StepSpec
from ci_pool.core.workflow.steps import RunDefaults, StepReader
from ci_pool.core.workflow.yaml_source import MarkedMap, Pos, Source
from ci_pool.exceptions import ActionError


def composite_steps(text: str, file: str) -> tuple[StepSpec, ...]:
    """The steps of a composite action's text; ActionError at the first problem."""
    src = Source(file, text)
    data = src.load()
    runs = data.get("runs") if isinstance(data, MarkedMap) else None
    if not isinstance(runs, MarkedMap):
        raise ActionError(str(src.errors[0]) if src.errors else f"{file}: runs: is missing")
    reader = StepReader(src, {})
    reader.run_defaults = RunDefaults("bash", None)
    reader.data = runs
    reader.pos = data.value_pos.get("runs", Pos(1, 1))
    reader.path = "runs"
    steps = reader.steps()
    if src.errors:
        first = src.errors[0]
        more = f" (and {len(src.errors) - 1} more)" if len(src.errors) > 1 else ""
        raise ActionError(f"{first}{more}")
    return steps


def read_action(text: str, file: str) -> tuple[ActionDefinition, tuple[StepSpec, ...]]:
    """An action.yml's definition and, for a composite action, its steps."""
    definition = read_definition(text, file)
    if definition.runs.using != "composite":
        return definition, ()
    return definition, composite_steps(text, file)


def local_uses(steps: tuple[StepSpec, ...]) -> list[str]:
    """The ``./path`` actions the steps name (each path once, in order), as written."""
    found: list[str] = []
    for step in steps:
        if step.uses is not None and step.uses.startswith("./") and step.uses not in found:
            found.append(step.uses)
    return found
