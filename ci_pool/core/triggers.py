"""Which events run a workflow: ``on.push`` and ``on.pull_request`` with GitHub's rules for
branch, tag, path and type filters (``*`` stays within one path segment, ``**`` does not,
``!pattern`` excludes, the last matching pattern decides), ``on.schedule`` crons and
``on.workflow_dispatch``; and the facts of the event kept with a pipeline."""

from __future__ import annotations

import json
from typing import Any

from ci_pool.core.cron import CronError, parse_cron
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


def _events(on: Any) -> dict[str, Any] | None:
    """``on:`` as a mapping of event -> filters (None: not a valid ``on:``)."""
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    if isinstance(on, dict):
        return on
    return None


def _event_section(on: Any, event: str) -> dict[str, Any] | str | None:
    """The filters of ``on.<event>`` (None: no filters), or why ``on:`` has no such event."""
    events = _events(on)
    if events is None:
        return f"the workflow has no on: section, so no {event} runs it"
    if event not in events:
        return f"on: does not include {event} (it has: {', '.join(map(str, events)) or 'nothing'})"
    spec = events[event]
    if spec is None or spec == {}:
        return None
    if not isinstance(spec, dict):
        return f"on.{event} must be a mapping of filters"
    return spec


def _push_section(on: Any) -> dict[str, Any] | str | None:
    return _event_section(on, "push")


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


def _ref_filter(spec: dict[str, Any], kind: str, name: str, event: str = "push") -> str | None:
    branch_keys = [k for k in ("branches", "branches-ignore") if k in spec]
    tag_keys = [k for k in ("tags", "tags-ignore") if k in spec]
    for keys in (branch_keys, tag_keys):
        if len(keys) == 2:
            return f"on.{event}: use {keys[0]} or {keys[1]}, not both"
    if not branch_keys and not tag_keys:
        return None
    mine = branch_keys if kind == "branch" else tag_keys
    if not mine:
        other = "tags" if kind == "branch" else "branches"
        return f"on.{event} filters only {other}, so a {kind} {event} does not run it"
    key = mine[0]
    try:
        patterns = _patterns(spec[key])
    except ValueError as exc:
        return f"on.{event}.{key} {exc}"
    if key.endswith("-ignore"):
        hit = [p for p in patterns if glob_match(p, name)]
        return f"on.{event}.{key} pattern {hit[0]!r} matches {kind} {name!r}" if hit else None
    if _included(patterns, name):
        return None
    return f"on.{event}.{key} ({', '.join(patterns)}) does not match {kind} {name!r}"


def _path_filter(
    spec: dict[str, Any], kind: str, changed: frozenset[str] | None, event: str = "push"
) -> str | None:
    """GitHub's rules: ``paths`` runs the workflow when a touched file is included,
    ``paths-ignore`` unless every touched file is ignored; tag pushes are not filtered by
    paths, and a push whose files are unknown runs."""
    keys = [k for k in ("paths", "paths-ignore") if k in spec]
    if not keys:
        return None
    if len(keys) == 2:
        return f"on.{event}: use paths or paths-ignore, not both"
    key = keys[0]
    try:
        patterns = _patterns(spec[key])
    except ValueError as exc:
        return f"on.{event}.{key} {exc}"
    if kind == "tag" or changed is None:
        return None
    if key == "paths":
        if any(_included(patterns, f) for f in changed):
            return None
        return (
            f"on.{event}.paths ({', '.join(patterns)}) matches none of the "
            f"{len(changed)} changed file(s)"
        )
    if changed and all(any(glob_match(p, f) for p in patterns) for f in changed):
        return f"on.{event}.paths-ignore ({', '.join(patterns)}) covers every changed file"
    return None


# -- pull requests ------------------------------------------------------------------------

#: What ``on.pull_request`` runs for when it names no ``types``, as in GitHub.
DEFAULT_PR_TYPES = ("opened", "synchronize", "reopened")
#: Gitea and Forgejo name some actions differently; the ``types:`` of a workflow use
#: GitHub's names.
_PR_ACTIONS = {"synchronized": "synchronize", "label_updated": "labeled"}


def pr_action(action: str) -> str:
    """A forge's pull request action under GitHub's name (``synchronized`` is
    ``synchronize``)."""
    return _PR_ACTIONS.get(action, action)


def pull_request_trigger(
    on: Any, action: str, base_branch: str, changed: frozenset[str] | None = None
) -> str | None:
    """None when a pull request ``action`` against ``base_branch`` that touched ``changed``
    runs a workflow with this ``on:`` section; otherwise why not.

    ``pull_request_target`` is not run: it would run the base branch's workflow with the
    base repository's secrets on behalf of the pull request's author. A workflow that
    wants pull requests says ``pull_request`` and runs under the pull request policy."""
    spec = _event_section(on, "pull_request")
    if isinstance(spec, str):
        events = _events(on) or {}
        if "pull_request_target" in events:
            return (
                "on: pull_request_target is not run by ci-pool (it would hand the base "
                "repository's secrets to the pull request's code); use pull_request, which "
                "runs the head commit under the pull request policy"
            )
        return spec
    if spec is None:
        spec = {}
    for key in ("tags", "tags-ignore"):
        if key in spec:
            return f"on.pull_request.{key} is not a pull request filter (use branches)"
    why = _types_filter(spec, pr_action(action))
    if why is not None:
        return why
    return _ref_filter(spec, "branch", base_branch, "pull_request") or _path_filter(
        spec, "branch", changed, "pull_request"
    )


def _types_filter(spec: dict[str, Any], action: str) -> str | None:
    types: Any = spec.get("types", list(DEFAULT_PR_TYPES))
    if isinstance(types, str):
        types = [types]
    if not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
        return "on.pull_request.types must be an activity type or a list of them"
    if action in types:
        return None
    return f"on.pull_request.types ({', '.join(types)}) does not include {action!r}"


# -- schedules and dispatch -----------------------------------------------------------------

#: ``on.schedule`` entries read from one workflow.
MAX_SCHEDULES = 20


def schedule_crons(on: Any) -> list[str]:
    """The cron texts of ``on.schedule`` (checked with ``parse_cron``); ValueError names the
    entry that is not ``{cron: "..."}`` or not a valid schedule."""
    events = _events(on) or {}
    if "schedule" not in events:
        return []
    entries = events["schedule"]
    if not isinstance(entries, list) or not entries:
        raise ValueError("on.schedule must be a list of {cron: '...'} entries")
    if len(entries) > MAX_SCHEDULES:
        raise ValueError(f"on.schedule has {len(entries)} entries; at most {MAX_SCHEDULES}")
    crons = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and set(entry) == {"cron"}):
            raise ValueError(f"on.schedule[{i}] must be a mapping with one key, cron")
        try:
            crons.append(parse_cron(entry["cron"]).text)
        except CronError as exc:
            raise ValueError(f"on.schedule[{i}].cron {exc}") from None
    return crons


def dispatch_trigger(on: Any) -> str | None:
    """None when the workflow can be dispatched by hand (``on: workflow_dispatch``)."""
    spec = _event_section(on, "workflow_dispatch")
    return spec if isinstance(spec, str) else None


# -- what started a pipeline ----------------------------------------------------------------

#: Bytes of the event payload kept with a pipeline (``github.event``); a larger payload
#: keeps only its top-level scalars and the ``pull_request``/``repository`` objects' ids.
MAX_EVENT_BYTES = 256 * 1024


def bounded_payload(data: Any) -> dict[str, Any]:
    """The payload as kept with a pipeline: whole when small, else its scalars only."""
    if not isinstance(data, dict):
        return {}
    if len(json.dumps(data, default=str).encode()) <= MAX_EVENT_BYTES:
        return data
    kept: dict[str, Any] = {
        k: v
        for k, v in data.items()
        if isinstance(v, str | int | float | bool) and len(str(v)) < 4096
    }
    kept["ci_pool_truncated"] = True
    return kept


#: Words in the pushed head commit's message that start no pipeline (GitHub's list),
#: compared without regard to case.
SKIP_MARKERS = ("[skip ci]", "[ci skip]", "[no ci]", "[skip actions]", "[actions skip]")
#: How much of a commit message is searched for them.
SKIP_MESSAGE_CHARS = 65536


def skip_marker(data: Any, commit: str) -> str | None:
    """The skip marker in the message of the pushed head commit ``commit``, if any: the
    payload's ``head_commit``, else that commit in its ``commits`` list."""
    if not isinstance(data, dict):
        return None
    head = data.get("head_commit")
    message = head.get("message") if isinstance(head, dict) else None
    if not isinstance(message, str) and isinstance(data.get("commits"), list):
        listed = [c for c in data["commits"] if isinstance(c, dict) and c.get("id") == commit]
        message = listed[-1].get("message") if listed else None
    if not isinstance(message, str):
        return None
    text = message[:SKIP_MESSAGE_CHARS].casefold()
    return next((m for m in SKIP_MARKERS if m in text), None)
