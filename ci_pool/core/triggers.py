"""Which pushes run a workflow: the ``on.push`` section with GitHub's rules for branch,
tag and path filters (``*`` stays within one path segment, ``**`` does not, ``!pattern``
excludes, the last matching pattern decides)."""

from __future__ import annotations

from typing import Any

from ci_pool.core.globs import glob_match
from ci_pool.defaults import GLOB_MAX_LENGTH


def _patterns(value: Any) -> list[str]:
    patterns = [value] if isinstance(value, str) else value
    if not (isinstance(patterns, list) and all(isinstance(p, str) for p in patterns)):
        raise ValueError("must be a pattern or a list of patterns")
    for pattern in patterns:
        if len(pattern) > GLOB_MAX_LENGTH:
            raise ValueError(
                f"has a pattern of {len(pattern)} characters; at most {GLOB_MAX_LENGTH} are "
                "accepted"
            )
    return patterns


def _included(patterns: list[str], name: str) -> bool:
    """Patterns in order, the last that matches deciding; ``!pattern`` excludes."""
    result = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if glob_match(pattern[1:], name):
                result = False
        elif glob_match(pattern, name):
            result = True
    return result


def _push_section(on: Any) -> dict[str, Any] | str | None:
    """The filters of ``on.push`` (None: no filters), or why ``on:`` has no push."""
    if isinstance(on, str):
        events: dict[str, Any] = {on: None}
    elif isinstance(on, list):
        events = dict.fromkeys(on)
    elif isinstance(on, dict):
        events = on
    else:
        return "the workflow has no on: section, so no push runs it"
    if "push" not in events:
        return f"on: does not include push (it has: {', '.join(map(str, events)) or 'nothing'})"
    spec = events["push"]
    if spec is None or spec == {}:
        return None
    if not isinstance(spec, dict):
        return "on.push must be a mapping of filters"
    return spec


def push_trigger(
    on: Any, kind: str, name: str, changed: frozenset[str] | None = None
) -> str | None:
    """None when a push of the ``kind`` ("branch"/"tag") ``name`` that touched ``changed``
    runs a workflow with this ``on:`` section; otherwise why it does not, in words for the
    response."""
    spec = _push_section(on)
    if spec is None:
        return None
    if isinstance(spec, str):
        return spec
    return _ref_filter(spec, kind, name) or _path_filter(spec, kind, changed)


def _ref_filter(spec: dict[str, Any], kind: str, name: str) -> str | None:
    branch_keys = [k for k in ("branches", "branches-ignore") if k in spec]
    tag_keys = [k for k in ("tags", "tags-ignore") if k in spec]
    for keys in (branch_keys, tag_keys):
        if len(keys) == 2:
            return f"on.push: use {keys[0]} or {keys[1]}, not both"
    if not branch_keys and not tag_keys:
        return None
    mine = branch_keys if kind == "branch" else tag_keys
    if not mine:
        other = "tags" if kind == "branch" else "branches"
        return f"on.push filters only {other}, so a {kind} push does not run it"
    key = mine[0]
    try:
        patterns = _patterns(spec[key])
    except ValueError as exc:
        return f"on.push.{key} {exc}"
    if key.endswith("-ignore"):
        hit = [p for p in patterns if glob_match(p, name)]
        return f"on.push.{key} pattern {hit[0]!r} matches {kind} {name!r}" if hit else None
    if _included(patterns, name):
        return None
    return f"on.push.{key} ({', '.join(patterns)}) does not match {kind} {name!r}"


def _path_filter(spec: dict[str, Any], kind: str, changed: frozenset[str] | None) -> str | None:
    """GitHub's rules: ``paths`` runs the workflow when a touched file is included,
    ``paths-ignore`` unless every touched file is ignored; tag pushes are not filtered by
    paths, and a push whose files are unknown runs."""
    keys = [k for k in ("paths", "paths-ignore") if k in spec]
    if not keys:
        return None
    if len(keys) == 2:
        return "on.push: use paths or paths-ignore, not both"
    key = keys[0]
    try:
        patterns = _patterns(spec[key])
    except ValueError as exc:
        return f"on.push.{key} {exc}"
    if kind == "tag" or changed is None:
        return None
    if key == "paths":
        if any(_included(patterns, f) for f in changed):
            return None
        return (
            f"on.push.paths ({', '.join(patterns)}) matches none of the "
            f"{len(changed)} changed file(s)"
        )
    if changed and all(any(glob_match(p, f) for p in patterns) for f in changed):
        return f"on.push.paths-ignore ({', '.join(patterns)}) covers every changed file"
    return None
