"""Rows on the wire: a job, pipeline or artifact row as JSON and back, column by column
through the column's own type, so a runner that reads rows from the API gets the same
typed values (specs, states, aware datetimes) as one that reads the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from ci_pool.core.specs import STORED, JobState
from ci_pool.store.models import Base, SpecType, StateType, UTCDateTime
from ci_pool.store.transitions import Closed

RowT = TypeVar("RowT", bound=Base)


def dump_row(row: Base) -> dict[str, Any]:
    """The row's columns as JSON-ready values."""
    out: dict[str, Any] = {}
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        kind = column.type
        if value is None:
            out[column.key] = None
        elif isinstance(kind, SpecType):
            out[column.key] = kind.adapter.dump_python(value, mode="json")
        elif isinstance(kind, StateType):
            out[column.key] = kind.enum(value).value
        elif isinstance(kind, UTCDateTime):
            out[column.key] = value.isoformat()
        else:
            out[column.key] = value
    return out


def load_row(cls: type[RowT], data: dict[str, Any]) -> RowT:
    """A detached row of ``cls`` from ``dump_row``'s output; unknown keys are ignored."""
    values: dict[str, Any] = {}
    for column in cls.__table__.columns:
        if column.key not in data:
            continue
        value, kind = data[column.key], column.type
        if value is None:
            values[column.key] = None
        elif isinstance(kind, SpecType):
            values[column.key] = kind.adapter.validate_python(value, context={STORED: True})
        elif isinstance(kind, StateType):
            values[column.key] = kind.enum(value)
        elif isinstance(kind, UTCDateTime):
            values[column.key] = datetime.fromisoformat(value)
        else:
            values[column.key] = value
    return cls(**values)


def dump_closed(closed: Closed) -> dict[str, Any]:
    """A closed attempt's job as JSON: a few of the row's columns, under their names (so a
    runner that reads it with ``load_row`` gets a job with just these)."""
    return {
        "id": closed.id,
        "state": closed.state.value,
        "attempt": closed.attempt,
        "max_attempts": closed.max_attempts,
        "cancel_requested": closed.cancel_requested,
        "commit_sha": closed.commit_sha,
        "pipeline_id": closed.pipeline_id,
        "reason": closed.reason,
    }


def load_closed(data: dict[str, Any]) -> Closed:
    """``dump_closed``'s output back (also a whole row from ``dump_row``)."""
    return Closed(
        id=str(data["id"]),
        state=JobState(data["state"]),
        attempt=int(data["attempt"]),
        max_attempts=int(data["max_attempts"]),
        cancel_requested=bool(data["cancel_requested"]),
        commit_sha=data.get("commit_sha"),
        pipeline_id=data.get("pipeline_id"),
        reason=data.get("reason"),
    )
