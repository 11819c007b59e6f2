"""The CLI's views (``ci_pool.cli.views``, read without pydantic) are the API's models field
for field, and read an answer as those models do: the same fields, aliases, types, defaults
and order; the same JSON back, byte for byte; the same InfraError on a malformed answer."""

from __future__ import annotations

import dataclasses
import enum
import json
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest
from pydantic import BaseModel

from ci_pool.cli import views
from ci_pool.core.commands import Annotation
from ci_pool.core.concurrency import ConcurrencyGroup
from ci_pool.core.evidence import ArtifactEntry, Evidence
from ci_pool.core.specs import EnvironmentSpec
from ci_pool.exceptions import InfraError
from ci_pool.service import job_views
from ci_pool.service import views as service_views

#: Each CLI view and the API model it stands for.
PAIRS: list[tuple[type, type[BaseModel]]] = [
    (views.ArtifactView, job_views.ArtifactView),
    (views.ExpiredArtifactView, job_views.ExpiredArtifactView),
    (views.EventView, job_views.EventView),
    (views.AnnotationView, job_views.AnnotationView),
    (views.AnnotationView, Annotation),
    (views.StepSummaryView, job_views.StepSummaryView),
    (views.ArtifactEntry, ArtifactEntry),
    (views.Evidence, Evidence),
    (views.ConcurrencyGroup, ConcurrencyGroup),
    (views.EnvironmentSpec, EnvironmentSpec),
    (views.JobView, job_views.JobView),
    (views.JobAck, job_views.JobAck),
    (views.QueueStatus, service_views.QueueStatus),
    (views.RunnerStatus, service_views.RunnerStatus),
]
URL = "http://127.0.0.1:8080"


def shape(tp: Any) -> Any:
    """A type as comparable data: classes by name, enums as the Literal of their values,
    unions as sets, tuple[X, ...] and list[X] apart."""
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return ("union", frozenset(shape(a) for a in get_args(tp)))
    if origin is Literal:
        return ("literal", frozenset(get_args(tp)))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return ("literal", frozenset(m.value for m in tp))
    if origin is not None:
        return (origin.__name__, tuple(shape(a) for a in get_args(tp) if a is not Ellipsis))
    return tp.__name__ if isinstance(tp, type) else repr(tp)


def model_fields(model: type[BaseModel]) -> list[tuple[str, Any, Any]]:
    """(JSON key, type, default) of each field of a pydantic model, in order."""
    rows = []
    for name, info in model.model_fields.items():
        default = info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]
        default = "required" if info.is_required() else default
        rows.append((info.alias or name, shape(info.annotation), default))
    return rows


def view_fields(cls: type) -> list[tuple[str, Any, Any]]:
    """(JSON key, type, default) of each declared field of a CLI view, in order."""
    hints = get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.metadata.get(views.UNDECLARED):
            continue
        if f.default_factory is not dataclasses.MISSING:
            default: Any = f.default_factory()
        else:
            default = "required" if f.default is dataclasses.MISSING else f.default
        rows.append((f.metadata.get(views.ALIAS, f.name), shape(hints[f.name]), default))
    return rows


@pytest.mark.parametrize(("view", "model"), PAIRS, ids=lambda c: c.__qualname__)
def test_each_view_is_its_api_model_field_for_field(view: type, model: type[BaseModel]) -> None:
    assert view.__name__ == model.__name__ or model is Annotation  # errors name the model
    assert view_fields(view) == model_fields(model)
    keeps = any(f.metadata.get(views.UNDECLARED) for f in dataclasses.fields(view))
    assert keeps == (model.model_config.get("extra") == "allow")


def full_job() -> dict[str, Any]:
    """A job's view as the API sends it, with every part filled."""
    evidence = Evidence.model_validate(
        {"job_id": "j1", "mode": "docker", "checkout_s": 1, "kept_from_v1": [1, {"a": None}],
         "artifacts": [{"path": "a.txt", "size": 3, "sha256": "0" * 64}],
         "actions": {"actions/checkout@v4": "f" * 40}, "warm_container": True}
    )  # fmt: skip
    view = job_views.JobView(
        id="j1", name="build", pipeline_id="p1", state="failed", capability="linux",
        queue="linux", repo="https://git.example/app.git", ref="main", commit_sha="a" * 40,
        labels=["linux", "x64"], runner="client-*", timeout_s=600, attempt=2, max_attempts=3,
        runner_id="r1", exit_code=1, reason="exit 1", created_at="2026-01-01T10:00:00+00:00",
        queued_at="2026-01-01T10:00:00+00:00", started_at="2026-01-01T10:00:01+00:00",
        finished_at="2026-01-01T10:00:02+00:00", lease_until=None, evidence=evidence,
        concurrency=ConcurrencyGroup(name="deploy-main", cancel_in_progress=True),
        permissions={"contents": "read"}, environment=EnvironmentSpec(name="prod", url=None),
        waiting=None,
        artifacts=[job_views.ArtifactView(path="a.txt", size=3, sha256="0" * 64, attempt=2)],
        expired_artifacts=[job_views.ExpiredArtifactView(name=None, attempt=1, expired_at=None)],
        events=[job_views.EventView(attempt=1, from_state=None, to="queued", at=None,
                                    runner_id=None, reason=None)],
        annotations=[job_views.AnnotationView(level="error", message="boom", step=1,
                                              file="a.c", line=3)],
        summaries=[job_views.StepSummaryView(step=1, name="run 1", markdown="# ok\n")],
    )  # fmt: skip
    return job_views.as_json(view)


def test_an_answer_read_and_dumped_is_the_same_json() -> None:
    """``show --json`` on the quick way prints what the API sent, byte for byte."""
    sent = full_job()
    read = views.read_view(views.JobView, sent, URL, "/v1/jobs/j1")
    assert json.dumps(views.as_json(read)) == json.dumps(sent)
    assert isinstance(read.evidence, views.Evidence) and read.evidence.checkout_s == 1.0
    assert read.evidence.undeclared == {"kept_from_v1": [1, {"a": None}]}
    assert read.events and read.events[0].from_state is None and read.events[0].to == "queued"
    assert json.dumps(views.brief_json(read)) == json.dumps(job_views.brief_json(
        job_views.JobView.model_validate(sent)))  # fmt: skip
    # and the other views, as ``status --json`` and ``runners --json`` print them
    queue = service_views.QueueStatus(
        capability="linux", queued=1, blocked=0, oldest_wait_s=2, running=0, workers=None,
        slots=None, finished_1h=3, failed_1h=1, p50_s=0.5, p95_s=None,
    )  # fmt: skip
    runner = service_views.RunnerStatus(
        runner_id="r1", capability="linux", queue="linux", host="h", pid=7, concurrency=2,
        version="0.1.0", started_at=1.0, last_seen=2, state="busy", jobs=["j1"],
        extra={"warm": 1, "image": "busybox"},
    )  # fmt: skip
    for model, cls in ((queue, views.QueueStatus), (runner, views.RunnerStatus)):
        data = model.model_dump(mode="json")
        read_back = views.read_view(cls, json.loads(json.dumps(data)), URL, "/v1/x")
        assert json.dumps(views.as_json(read_back)) == json.dumps(data)
        assert views.any_json(model) == data  # a pydantic view prints the same way


VIEW = views.brief_json(job_views.JobView.model_validate(full_job()))


@pytest.mark.parametrize(
    ("cls", "answer", "words"),
    [
        (views.JobView, {"id": "j1", "state": "queued"}, "malformed JobView (name: Field required"),
        (views.JobView, [1, 2], "malformed JobView (the body: "),
        (
            views.JobView,
            {**VIEW, "attempt": "first"},
            "malformed JobView (attempt: Input should be a valid integer",
        ),
        (views.JobView, {**VIEW, "state": "paused"}, "malformed JobView (state: Input should be"),
        (views.JobView, {**VIEW, "labels": "linux"}, "(labels: Input should be a valid list"),
        (views.JobView, {**VIEW, "labels": ["a", 3]}, "(labels.1: Input should be a valid string"),
        (
            views.JobView,
            {**VIEW, "events": [{"attempt": 1, "from": 5}]},
            "(events.0.from: Input should be a valid string",
        ),
        (
            views.JobView,
            {**VIEW, "evidence": {"actions": {"a": 1}}},
            "(evidence.actions.a: Input should be a valid string",
        ),
        (views.QueueStatus, {"capability": "linux"}, "malformed QueueStatus (queued: "),
        (views.RunnerStatus, {}, "malformed RunnerStatus (runner_id: Field required"),
        (
            views.RunnerStatus,
            {"runner_id": "r", "capability": "c", "queue": "q", "host": "h", "pid": True},
            "(pid: Input should be a valid integer",
        ),
    ],
)
def test_a_malformed_answer_is_an_infra_error_naming_the_field(
    cls: type, answer: object, words: str
) -> None:
    with pytest.raises(InfraError) as exc:
        views.read_view(cls, answer, URL, "/v1/jobs/j1")
    assert words in str(exc.value), str(exc.value)
    assert str(exc.value).startswith(f"the API at {URL} answered /v1/jobs/j1 with a malformed ")
    assert exc.value.exit_code == 3


def test_a_list_answer_without_rows_is_an_infra_error() -> None:
    with pytest.raises(InfraError, match="/v1/queues without a list of rows"):
        views.read_view_rows(views.QueueStatus, {"rows": []}, URL, "/v1/queues")
