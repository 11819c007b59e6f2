"""The ``path`` input of the artifact and cache actions: newline-separated globs, ``!``
excludes, made relative to the job's workspace (the runner stores and restores files of
the workspace only; ``~`` is the workspace, the job's HOME in host mode)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from ci_pool import defaults
from ci_pool.core.specs import check_artifact_glob
from ci_pool.exceptions import ActionError
from ci_pool.worker.actions.call import ActionCall

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Paths:
    """Workspace-relative include and exclude globs, and the directory the stored names
    are relative to (the deepest one above every include; ``""``: the workspace)."""

    include: tuple[str, ...]
    exclude: tuple[str, ...]
    base: str


def _relative(call: ActionCall, raw: str, field: str) -> str:
    """One path or glob made relative to the workspace."""
    path = raw.strip()
    if len(path) > defaults.GLOB_MAX_LENGTH:
        raise ActionError(
            f"input {field}: {path[:40]!r}... is longer than {defaults.GLOB_MAX_LENGTH} characters"
        )
    workspace = str(call.ctx["github"]["workspace"]).rstrip("/")
    if path == "~" or path.startswith("~/"):
        path = path[2:]
    elif path == workspace or path.startswith(workspace + "/"):
        path = path[len(workspace) + 1 :]
    elif path.startswith(("/", "~")):
        raise ActionError(
            f"input {field}: {raw!r} is outside the workspace; ci-pool stores and restores "
            f"files of the workspace ({workspace}) only, where ~ is the workspace"
        )
    while path.startswith("./"):
        path = path[2:]
    path = path.rstrip("/")
    if path in ("", "."):
        return ""
    try:
        return check_artifact_glob(path)
    except ValueError as exc:
        raise ActionError(f"input {field}: {exc}") from None


def _search_root(call: ActionCall, pattern: str) -> list[str]:
    """The directory a pattern searches from, as components."""
    parts = pattern.split("/") if pattern else []
    for i, part in enumerate(parts):
        if _GLOB_CHARS & set(part):
            return parts[:i]
    assert call.att.workspace is not None
    try:
        st = os.lstat(call.att.workspace / pattern) if parts else None
    except OSError:
        st = None
    return parts if st is None or stat.S_ISDIR(st.st_mode) else parts[:-1]


def workspace_paths(call: ActionCall, text: str, field: str, single: bool = False) -> Paths:
    """Parse a ``path`` input (ActionError naming ``field`` for a path it refuses)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ActionError(f"input {field} is required: the files or directories to use")
    if len(lines) > defaults.CACHE_MAX_PATHS:
        raise ActionError(f"input {field}: {len(lines)} paths; at most {defaults.CACHE_MAX_PATHS}")
    if single:
        if len(lines) > 1 or lines[0].startswith("!") or _GLOB_CHARS & set(lines[0]):
            raise ActionError(f"input {field}: {text.strip()!r} must be one directory")
        rel = _relative(call, lines[0], field)
        return Paths((rel,), (), rel)
    include: list[str] = []
    exclude: list[str] = []
    for line in lines:
        if line.startswith("!"):
            exclude.append(_relative(call, line[1:], field) or "**")
        else:
            include.append(_relative(call, line, field))
    if not include:
        raise ActionError(f"input {field}: only exclusions (!) were given; name what to include")
    roots = [_search_root(call, p) for p in include]
    common = roots[0]
    for root in roots[1:]:
        same = 0
        while same < min(len(common), len(root)) and common[same] == root[same]:
            same += 1
        common = common[:same]
    return Paths(tuple(p or "*" for p in include), tuple(exclude), "/".join(common))
