"""The protocol actions speak with the runner (what ``@actions/core`` reads and writes): the
inputs as ``INPUT_<NAME>``, the ``GITHUB_ACTION*`` variables, the step's files
($GITHUB_OUTPUT, $GITHUB_ENV, $GITHUB_PATH, $GITHUB_STATE, $GITHUB_STEP_SUMMARY) and the
``STATE_<name>`` variables a ``post`` script gets from what earlier phases saved."""

from __future__ import annotations

from dataclasses import dataclass, field

from ci_pool import defaults
from ci_pool.core.envfiles import parse_key_values
from ci_pool.exceptions import JobFileRefused
from ci_pool.worker.actions.call import ActionCall
from ci_pool.worker.actions.load import LoadedAction


def input_variable(name: str) -> str:
    """The variable an input reaches the action as: ``INPUT_`` and the name in upper case
    with spaces as ``_`` (what ``core.getInput`` looks up; ``-`` stays)."""
    return "INPUT_" + name.replace(" ", "_").upper()


def action_name(call: ActionCall) -> str:
    """``$GITHUB_ACTION``: the step's id, else a name made from the action, as Actions does."""
    if call.step.id:
        return call.step.id
    ref = call.ref
    if ref.kind == "remote":
        return f"__{ref.owner}_{ref.repo}"
    return "__self" if ref.kind == "local" else f"__run_{call.index}"


@dataclass
class Phases:
    """The state one action's phases (pre, main, post) pass on through $GITHUB_STATE."""

    call: ActionCall
    loaded: LoadedAction | None
    state: dict[str, str] = field(default_factory=dict)

    def env(self, files_index: int) -> dict[str, str]:
        """The environment of one phase whose files are those of ``files_index``."""
        call = self.call
        att, ref = call.att, call.ref
        assert att.dirs is not None
        env = dict(call.env)
        env.update({input_variable(k): v for k, v in call.inputs.items()})
        env.update({f"STATE_{k}": v for k, v in self.state.items()})
        env["GITHUB_ACTION"] = action_name(call)
        if self.loaded is not None:
            env["GITHUB_ACTION_PATH"] = self.loaded.path_in_job
        if ref.kind == "remote":
            env["GITHUB_ACTION_REPOSITORY"] = f"{ref.owner}/{ref.repo}"
            env["GITHUB_ACTION_REF"] = ref.ref
        if att.evidence.commit_sha:
            env.setdefault("CI_POOL_COMMIT_SHA", att.evidence.commit_sha)
        env.update(call.files.prepare(att.dirs, files_index, call.execution.files_path))
        return env

    def read_back(self, files_index: int, *, outputs: bool) -> list[str]:
        """What a phase wrote: its state kept for the next phases, its outputs (``outputs``:
        the main phase's are the step's), variables, path and summary; why it fails."""
        call = self.call
        att = call.att
        assert att.dirs is not None
        failures: list[str] = []
        try:
            data = att.dirs.files.read(f"state-{files_index}", defaults.STEP_ENV_MAX_BYTES)
            self.state.update(parse_key_values(data).values)
        except JobFileRefused as exc:
            failures.append(f"$GITHUB_STATE {exc}")
        written, problems = call.files.read_back(att, files_index, call.step, call.ctx)
        if outputs:
            call.outputs.update(written)
        return failures + problems
