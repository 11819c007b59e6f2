"""``ci-pool validate`` run inside a repository reads the local actions (``uses: ./path``)
its workflows name from that repository, so an action the runner cannot run (an unsupported
``runs.using``, a composite step in error) is reported before anything runs."""

from __future__ import annotations

from pathlib import Path

from ci_pool.core.actions import MAX_ACTION_DEPTH, parse_uses
from ci_pool.core.admission import Admission
from ci_pool.core.composite import local_uses, read_action
from ci_pool.core.workflow.parser import parse_workflow
from ci_pool.defaults import MAX_WORKFLOW_BYTES
from ci_pool.exceptions import ActionError, CIPoolError

ACTION_FILES = ("action.yml", "action.yaml")


def repository_root(start: Path) -> Path | None:
    """The root of the git work tree holding ``start`` (None outside one)."""
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return None


def _action_text(root: Path, rel: str) -> tuple[str, str] | None:
    """The text of ``rel``'s action file under ``root`` and its name (None: not there, as
    when a step makes it; the runner reports that)."""
    for name in ACTION_FILES:
        path = root / rel / name if rel else root / name
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as fh:
                data = fh.read(MAX_WORKFLOW_BYTES + 1)
            label = f"{rel}/{name}" if rel else name
            if len(data) > MAX_WORKFLOW_BYTES:
                raise ActionError(f"{label}: over {MAX_WORKFLOW_BYTES} bytes")
            return data.decode("utf-8", errors="replace"), label
    return None


def check_local_actions(file: Path, text: str, admission: Admission) -> list[str]:
    """Problems of the local actions a valid workflow file names, each naming the action
    file and line; empty when they are fine or the file is outside a repository."""
    root = repository_root(file.resolve().parent)
    if root is None:
        return []
    try:
        pipeline = parse_workflow(text, str(file), admission)
    except CIPoolError:
        return []  # reported by the workflow's own validation
    pending = [(u, 0) for job in pipeline.jobs for u in local_uses(job.spec.steps)]
    seen: set[str] = set()
    problems: list[str] = []
    while pending:
        uses, depth = pending.pop(0)
        if uses in seen or depth > MAX_ACTION_DEPTH:
            continue
        seen.add(uses)
        rel = parse_uses(uses).path
        try:
            found = _action_text(root, rel)
            if found is None:
                continue
            _definition, steps = read_action(*found)
        except (ActionError, OSError) as exc:
            problems.append(f"{file}: uses: {uses}: {exc}")
            continue
        pending += [(u, depth + 1) for u in local_uses(steps)]
    return problems
