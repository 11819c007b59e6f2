"""The commit-status outbox: one row per job whose status the forge has yet to hear.

Importing this module registers the ``status_outbox`` table on the store's ``Base``. Every
state change of a job with a commit bumps its row's ``seq`` in the transaction of the
change itself (``note_change``), so no change is lost when a process dies. A sender takes a
row under a short lease, posts the job's state as it is *now* and records the ``seq`` it
covered: the latest state always wins and a stale ``pending`` is never posted after a
final state, even with a worker and several beats sending at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    bindparam,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from ci_pool.store.engine import Database
from ci_pool.store.models import Base, utcnow
from ci_pool.store.prepared import DirectTransaction


class StatusOutbox(Base):
    """A job's commit status: which change is the newest and which one was delivered."""

    __tablename__ = "status_outbox"
    __table_args__ = (Index("ix_status_outbox_due", "next_try_at"),)

    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    #: Bumped by every state change of the job; ``sent_seq`` is the newest one delivered.
    seq: Mapped[int] = mapped_column(Integer, default=1)
    sent_seq: Mapped[int] = mapped_column(Integer, default=0)
    #: Failed posts of the newest change; reset by the next change.
    tries: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    gave_up: Mapped[bool] = mapped_column(default=False)
    #: The forge state last delivered ("pending", "success", ...), and the last failure
    #: (masked and bounded: never a token).
    sent_state: Mapped[str | None] = mapped_column(String(16), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)


def _upsert(insert_of: Any) -> Any:
    """The row of a job that just changed: new (seq 1), or its ``seq`` bumped with a
    fresh count of tries (parameters ``job_id`` and ``now``)."""
    table = StatusOutbox.__table__
    fresh = {"tries": 0, "gave_up": False, "last_error": None}
    new = insert_of(table).values(
        job_id=bindparam("job_id"), seq=1, sent_seq=0, next_try_at=bindparam("now"), **fresh
    )
    return new.on_conflict_do_update(
        index_elements=[table.c.job_id],
        set_={"seq": table.c.seq + 1, "next_try_at": new.excluded.next_try_at, **fresh},
    )


#: INSERT ... ON CONFLICT DO UPDATE, for the dialects that have it.
_UPSERTS: dict[str, Any] = {
    "sqlite": _upsert(sqlite.insert),
    "postgresql": _upsert(postgresql.insert),
}


@dataclass(frozen=True, slots=True)
class Taken:
    """A row taken for sending: the change it covers and the failures before it."""

    job_id: str
    seq: int
    tries: int


def note_change(
    s: Session | DirectTransaction, job_id: str, commit_sha: str | None, now: datetime
) -> None:
    """Record, in the caller's transaction, that job ``job_id`` (at ``commit_sha``) changed
    and its forge must hear."""
    if not commit_sha:
        return
    if isinstance(s, DirectTransaction):  # SQLite: it has the upsert
        s.execute(_UPSERTS[s.dialect.name], {"job_id": job_id, "now": now})
        return
    upsert = _UPSERTS.get(s.get_bind().dialect.name)
    if upsert is not None:  # one statement, built once: every transition runs it
        s.execute(upsert, {"job_id": job_id, "now": now})
        return
    fresh = {"tries": 0, "gave_up": False, "next_try_at": now, "last_error": None}
    res = s.execute(
        update(StatusOutbox)
        .where(StatusOutbox.job_id == job_id)
        .values(seq=StatusOutbox.seq + 1, **fresh)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount == 0:  # type: ignore[attr-defined]
        s.execute(insert(StatusOutbox).values(job_id=job_id, seq=1, sent_seq=0, **fresh))


def due(db: Database, limit: int = 100) -> list[str]:
    """Jobs with an undelivered change whose next try is due and that nobody is sending."""
    now = utcnow()
    with db.session(write=False) as s:
        rows = s.scalars(
            select(StatusOutbox.job_id)
            .where(
                StatusOutbox.sent_seq < StatusOutbox.seq,
                StatusOutbox.gave_up.is_(False),
                StatusOutbox.next_try_at <= now,
                or_(StatusOutbox.lease_until.is_(None), StatusOutbox.lease_until < now),
            )
            .order_by(StatusOutbox.next_try_at)
            .limit(limit)
        )
        return list(rows)


def take(db: Database, job_id: str, lease: float) -> Taken | None:
    """Take a job's row for ``lease`` seconds when it has something to send and nobody else
    holds it; None otherwise."""
    now = utcnow()
    with db.session() as s:
        res = s.execute(
            update(StatusOutbox)
            .where(
                StatusOutbox.job_id == job_id,
                StatusOutbox.sent_seq < StatusOutbox.seq,
                StatusOutbox.gave_up.is_(False),
                or_(StatusOutbox.lease_until.is_(None), StatusOutbox.lease_until < now),
            )
            .values(lease_until=now + timedelta(seconds=lease))
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return None
        row = s.execute(
            select(StatusOutbox.seq, StatusOutbox.tries).where(StatusOutbox.job_id == job_id)
        ).one()
        return Taken(job_id, row.seq, row.tries)


def delivered(db: Database, taken: Taken, sent_state: str | None) -> None:
    """The change ``taken.seq`` reached the forge (or needs no post): release the row."""
    with db.session() as s:
        s.execute(
            update(StatusOutbox)
            .where(StatusOutbox.job_id == taken.job_id)
            .values(
                sent_seq=taken.seq,
                lease_until=None,
                last_error=None,
                **({"sent_state": sent_state} if sent_state else {}),
            )
            .execution_options(synchronize_session=False)
        )


def failed(db: Database, taken: Taken, error: str, retry_in: float | None) -> None:
    """A post failed: try again in ``retry_in`` seconds, or give up (None). A newer change
    that arrived meanwhile keeps its own fresh count and is due at once."""
    now = utcnow()
    with db.session() as s:
        s.execute(
            update(StatusOutbox)
            .where(StatusOutbox.job_id == taken.job_id, StatusOutbox.seq == taken.seq)
            .values(
                tries=taken.tries + 1,
                gave_up=retry_in is None,
                next_try_at=now + timedelta(seconds=retry_in or 0),
                lease_until=None,
                last_error=error[:500],
            )
            .execution_options(synchronize_session=False)
        )
        s.execute(
            update(StatusOutbox)
            .where(StatusOutbox.job_id == taken.job_id, StatusOutbox.seq != taken.seq)
            .values(lease_until=None)
            .execution_options(synchronize_session=False)
        )


def outbox_row(db: Database, job_id: str) -> StatusOutbox | None:
    """A job's outbox row as it stands (for ``show`` and the tests)."""
    with db.session(write=False) as s:
        return s.get(StatusOutbox, job_id)
