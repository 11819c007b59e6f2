"""Finding an action's files and reading its action.yml: local actions from the workspace
(read through ``jobfiles``: the job wrote them), others where the fetcher put them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ci_pool import defaults
from ci_pool.core.actions import ActionDefinition, ActionRef
from ci_pool.core.composite import read_action
from ci_pool.core.specs import StepSpec
from ci_pool.exceptions import ActionError, JobFileRefused
from ci_pool.worker.jobfiles import JobDir

ACTION_FILES = ("action.yml", "action.yaml")


@dataclass(frozen=True)
class LoadedAction:
    """An action ready to run: what it declares and where its files are."""

    ref: ActionRef
    definition: ActionDefinition
    #: The action's directory on this host.
    directory: Path
    #: Where the job's steps see that directory ($GITHUB_ACTION_PATH).
    path_in_job: str
    #: The commit a fetched action was resolved to (recorded in the evidence).
    commit: str | None = None
    #: A composite action's steps, read from its action.yml.
    steps: tuple[StepSpec, ...] = ()


def read_action_file(root: Path, rel: str, label: str) -> ActionDefinition:
    """action.yml (or action.yaml) of the directory ``rel`` below ``root``, never through a
    symlink; ``label`` names the action in errors."""
    return read_action_files(root, rel, label)[0]


def read_action_files(
    root: Path, rel: str, label: str
) -> tuple[ActionDefinition, tuple[StepSpec, ...]]:
    """``read_action_file`` with a composite action's steps."""
    with JobDir(root) as top:
        for name in ACTION_FILES:
            path = f"{rel}/{name}" if rel else name
            try:
                data = top.read(path, defaults.MAX_WORKFLOW_BYTES)
            except JobFileRefused as exc:
                if "No such file" in str(exc):
                    continue
                raise ActionError(f"action {label}: {exc}") from None
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise ActionError(f"action {label}: {path} is not UTF-8 text") from None
            return read_action(text, f"{label}/{name}")
    raise ActionError(
        f"action {label}: no action.yml or action.yaml in "
        f"{rel or 'the root of the action'}; check the uses: path"
        + (" (local actions are read from the workspace: check it out first)" if rel else "")
    )


def load_local(ref: ActionRef, workspace: Path | None, workspace_in_job: str) -> LoadedAction:
    """A ``./path`` action from the job's workspace."""
    if workspace is None:
        raise ActionError(f"action {ref}: the job has no workspace to read it from")
    definition, steps = read_action_files(workspace, ref.path, str(ref))
    where = f"{workspace_in_job}/{ref.path}" if ref.path else workspace_in_job
    return LoadedAction(ref, definition, workspace / ref.path, where, steps=steps)
