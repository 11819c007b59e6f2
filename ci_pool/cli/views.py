"""The views the CLI prints, read from the API's JSON with the standard library: ``JobView``
and what it holds, ``JobAck``, ``QueueStatus`` and ``RunnerStatus``, as frozen dataclasses.
The quick way to ``ci-pool up`` (``ci_pool.cli.loopback``) reads its answers into them, so
``show``, ``status``, ``submit``, ``logs``, ``cancel`` and ``runners`` start without pydantic.

They are the API's models (``service.job_views``, ``service.views``, ``core.evidence``,
``core.concurrency``, ``core.commands``, ``core.specs``) field for field: the same names,
aliases, types, defaults and order (tests/unit/cli/test_views.py holds each pair together,
so neither can change alone). ``read_view`` checks an answer as those models do and raises
the InfraError the API client raises, naming the path, the model and the field;
``as_json`` gives back the JSON the API sent.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from functools import cache
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

from ci_pool import defaults
from ci_pool.apierrors import answer_rows, malformed

View = TypeVar("View")

#: ``core.specs.JobState``'s values.
JobStateName = Literal[
    "blocked",
    "queued",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "error",
    "rejected",
    "skipped",
]
#: ``core.commands.Level``.
Level = Literal["error", "warning", "notice"]
#: ``service.views.RunnerState``.
RunnerState = Literal["online", "busy", "draining", "unhealthy", "lost"]
#: Field metadata: the key of the field in the JSON (pydantic's alias).
ALIAS = "alias"
#: Field metadata: the field holds the keys the model does not declare (pydantic's
#: ``extra="allow"``), dumped after the declared ones.
UNDECLARED = "undeclared"


@dataclass(frozen=True, kw_only=True)
class ArtifactView:
    path: str
    size: int
    sha256: str
    attempt: int


@dataclass(frozen=True, kw_only=True)
class ExpiredArtifactView:
    name: str | None
    attempt: int
    expired_at: str | None


@dataclass(frozen=True, kw_only=True)
class EventView:
    attempt: int
    from_state: str | None = field(default=None, metadata={ALIAS: "from"})
    to: str
    at: str | None
    runner_id: str | None
    reason: str | None


@dataclass(frozen=True, kw_only=True)
class AnnotationView:
    level: Level
    message: str
    step: int
    title: str | None = None
    file: str | None = None
    line: int | None = None
    end_line: int | None = None
    col: int | None = None
    end_column: int | None = None


@dataclass(frozen=True, kw_only=True)
class StepSummaryView:
    step: int
    name: str
    markdown: str


@dataclass(frozen=True, kw_only=True)
class ArtifactEntry:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Evidence:
    job_id: str | None = None
    runner_id: str | None = None
    attempt: int | None = None
    transport: str | None = None
    mode: str | None = None
    image: str | None = None
    engine: str | None = None
    image_id: str | None = None
    container_id: str | None = None
    warm_container: bool | None = None
    commit_sha: str | None = None
    checkout_s: float | None = None
    checkout_via: str | None = None
    command: str | None = None
    exit_code: int | None = None
    stdout_sample: str | None = None
    artifacts: tuple[ArtifactEntry, ...] | None = None
    actions: dict[str, str] | None = None
    sync_mode: str | None = None
    sync_sha256: str | None = None
    #: Keys of older records, kept as they were.
    undeclared: dict[str, Any] = field(default_factory=dict, metadata={UNDECLARED: True})


@dataclass(frozen=True, kw_only=True)
class ConcurrencyGroup:
    name: str
    cancel_in_progress: bool = False


@dataclass(frozen=True, kw_only=True)
class EnvironmentSpec:
    name: str
    url: str | None = None


@dataclass(frozen=True, kw_only=True)
class JobView:
    id: str
    name: str
    pipeline_id: str | None = None
    state: JobStateName
    capability: str
    queue: str
    repo: str
    ref: str
    commit_sha: str | None
    labels: list[str]
    runner: str | None = None
    timeout_s: int
    attempt: int
    max_attempts: int
    runner_id: str | None
    exit_code: int | None
    reason: str | None
    created_at: str | None
    queued_at: str | None
    started_at: str | None
    finished_at: str | None
    lease_until: str | None = None
    evidence: Evidence | None
    concurrency: ConcurrencyGroup | None = None
    permissions: dict[str, str] | None = None
    environment: EnvironmentSpec | None = None
    waiting: str | None = None
    artifacts: list[ArtifactView] | None = None
    expired_artifacts: list[ExpiredArtifactView] | None = None
    events: list[EventView] | None = None
    annotations: list[AnnotationView] | None = None
    summaries: list[StepSummaryView] | None = None


@dataclass(frozen=True, kw_only=True)
class JobAck:
    id: str
    state: str


@dataclass(frozen=True, kw_only=True)
class QueueStatus:
    capability: str
    queued: int
    blocked: int
    oldest_wait_s: float | None
    running: int
    workers: int | None
    slots: int | None
    finished_1h: int
    failed_1h: int
    errors_1h: int = 0
    p50_s: float | None
    p95_s: float | None


@dataclass(frozen=True, kw_only=True)
class RunnerStatus:
    runner_id: str
    capability: str
    queue: str
    host: str
    pid: int
    concurrency: int
    version: str
    started_at: float
    last_seen: float
    state: RunnerState
    jobs: list[str] = field(default_factory=list)
    draining: str | None = None
    unhealthy: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- reading ---------------------------------------------------------------------------------


class _Malformed(Exception):
    def __init__(self, loc: tuple[str | int, ...], msg: str):
        super().__init__(msg)
        self.loc, self.msg = loc, msg


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _scalar(tp: type, value: object, loc: tuple[str | int, ...]) -> object:
    """A str, bool, int or float as pydantic reads it from JSON (an int is a float too)."""
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
        return value
    kind = {str: "string", bool: "boolean", int: "integer", float: "number"}[tp]
    raise _Malformed(loc, f"Input should be a valid {kind}")


def _read(tp: Any, value: object, loc: tuple[str | int, ...]) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _read(inner, value, loc)
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, str) and value in choices:
            return value
        names = [repr(c) for c in choices]
        raise _Malformed(loc, f"Input should be {', '.join(names[:-1])} or {names[-1]}")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise _Malformed(loc, f"Input should be a valid {origin.__name__}")
        items = [_read(get_args(tp)[0], v, (*loc, i)) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Malformed(loc, "Input should be a valid dictionary")
        return {k: _read(get_args(tp)[1], v, (*loc, k)) for k, v in value.items()}
    if tp in (str, bool, int, float):
        return _scalar(tp, value, loc)
    if is_dataclass(tp):
        return _read_fields(cast(type, tp), value, loc)
    raise TypeError(f"no reader for {tp!r}")


def _read_fields(cls: type, value: object, loc: tuple[str | int, ...]) -> Any:
    if not isinstance(value, dict):
        raise _Malformed(loc, "Input should be a valid dictionary")
    hints, kwargs, known = _hints(cls), {}, set()
    for f in fields(cls):
        if f.metadata.get(UNDECLARED):
            continue
        key = f.metadata.get(ALIAS, f.name)
        known.add(key)
        if key in value:
            kwargs[f.name] = _read(hints[f.name], value[key], (*loc, key))
        elif f.default is MISSING and f.default_factory is MISSING:
            raise _Malformed((*loc, key), "Field required")
    for f in fields(cls):
        if f.metadata.get(UNDECLARED):
            kwargs[f.name] = {k: v for k, v in value.items() if k not in known}
    return cls(**kwargs)


def read_view(cls: type[View], data: object, url: str, path: str) -> View:
    """What the API at ``url`` answered ``path``, read as ``cls``: an answer of another shape
    (another version, a proxy's page) is an InfraError naming the field, never a traceback."""
    try:
        return cast(View, _read_fields(cls, data, ()))
    except _Malformed as exc:
        raise malformed(url, path, cls.__name__, exc.loc, exc.msg) from None


def read_view_rows(cls: type[View], data: object, url: str, path: str) -> list[View]:
    """The ``data`` rows of a list answer, each read as ``cls``."""
    return [read_view(cls, row, url, path) for row in answer_rows(data, url, path)]


# -- writing ---------------------------------------------------------------------------------


def _dump(value: object) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        undeclared: dict[str, Any] = {}
        for f in fields(value):
            if f.metadata.get(UNDECLARED):
                undeclared = getattr(value, f.name)
            else:
                out[f.metadata.get(ALIAS, f.name)] = _dump(getattr(value, f.name))
        return out | undeclared
    if isinstance(value, list | tuple):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def as_json(view: object) -> dict[str, Any]:
    """A view as the API sent it (its JSON keys, nulls kept, undeclared keys last)."""
    if not is_dataclass(view) or isinstance(view, type):
        raise TypeError(f"{type(view).__name__} is not a view")
    return cast(dict[str, Any], _dump(view))


def any_json(view: object) -> dict[str, Any]:
    """A view of either kind as the API sends it: one of these dataclasses (the quick way to
    up), or the API's own pydantic model (local and remote modes)."""
    if is_dataclass(view) and not isinstance(view, type):
        return as_json(view)
    dump = getattr(view, "model_dump", None)
    if dump is None:
        raise TypeError(f"{type(view).__name__} is not a view")
    return cast(dict[str, Any], dump(mode="json", by_alias=True))


def brief_json(view: object) -> dict[str, Any]:
    """A job as a list or an action prints it: its view as JSON without the details only
    ``show`` carries."""
    return {k: v for k, v in any_json(view).items() if k not in defaults.JOB_DETAIL_KEYS}


class LogStream:
    """A job's live log as the API streams it (Server-Sent Events: ``line`` events with
    ``{"t": ..., "line": ...}``, then ``end``): ``lines`` yields (timestamp, line) pairs;
    ``ended`` tells afterwards whether the stream reached the job's end or broke off."""

    def __init__(self) -> None:
        self.ended = False

    def lines(self, raw: Iterable[str]) -> Iterator[tuple[Any, str]]:
        event = ""
        for line in raw:
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:") and event == "line":
                data = json.loads(line.removeprefix("data:").strip())
                yield data.get("t"), str(data["line"])
            elif line.startswith("data:") and event == "end":
                self.ended = True
