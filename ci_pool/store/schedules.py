"""Registered repositories and the schedule slots started for them.

Importing this module registers the ``repositories`` and ``schedule_slots`` tables on the
store's ``Base``. A repository is registered by an operator (``ci-pool repos add``); ``beat``
reads its workflows at the registered ref and keeps their ``on.schedule`` crons here.

A slot (repository, workflow file, cron, minute) is claimed by inserting its row: the
primary key lets exactly one beat win, however many run at once, so each slot starts at
most one pipeline. The store is the truth; no lock lives in Redis.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, Text, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from ci_pool.exceptions import InputError, NotFound
from ci_pool.store import Store
from ci_pool.store.models import Base, utcnow


class Repository(Base):
    """A repository whose workflows' schedules ``beat`` runs."""

    __tablename__ = "repositories"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(Text, unique=True)
    ref: Mapped[str] = mapped_column(String(255))
    added_at: Mapped[datetime] = mapped_column(default=utcnow)
    added_by: Mapped[str] = mapped_column(String(200), default="")
    #: The commit the schedules below were read at, and when.
    scanned_commit: Mapped[str | None] = mapped_column(String(64), default=None)
    scanned_at: Mapped[datetime | None] = mapped_column(default=None)
    #: [{"file": path, "cron": text}, ...] of that commit's workflows.
    schedules: Mapped[list[object]] = mapped_column(JSON, default=list)
    #: Why the last scan read nothing (a workflow refused, the server unreachable).
    scan_error: Mapped[str | None] = mapped_column(Text, default=None)


class ScheduleSlot(Base):
    """One slot of one cron of one workflow, claimed by the beat that started it."""

    __tablename__ = "schedule_slots"

    repo_id: Mapped[str] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True
    )
    file: Mapped[str] = mapped_column(String(500), primary_key=True)
    cron: Mapped[str] = mapped_column(String(100), primary_key=True)
    slot: Mapped[datetime] = mapped_column(primary_key=True)
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str] = mapped_column(String(200), default="")
    pipeline_id: Mapped[str | None] = mapped_column(String(32), default=None)
    #: Why the slot started no pipeline (its workflow was refused, the fetch failed).
    error: Mapped[str | None] = mapped_column(Text, default=None)


@dataclass(frozen=True, slots=True)
class Schedule:
    """One cron of one workflow file of a registered repository."""

    file: str
    cron: str


def add_repository(store: Store, url: str, ref: str, who: str = "") -> Repository:
    """Register ``url`` at ``ref``; InputError when it is registered already."""
    row = Repository(id=uuid.uuid4().hex[:16], url=url, ref=ref, added_at=utcnow(), added_by=who)
    row.schedules = []
    try:
        with store.session() as s:
            s.add(row)
    except IntegrityError:
        raise InputError(
            f"{url} is registered already; remove it first to change its ref", field="url"
        ) from None
    return row


def list_repositories(store: Store) -> list[Repository]:
    with store.session(write=False) as s:
        return list(s.scalars(select(Repository).order_by(Repository.added_at, Repository.id)))


def find_repository(store: Store, key: str) -> Repository:
    """A registration by id or URL; NotFound otherwise."""
    with store.session(write=False) as s:
        row = s.get(Repository, key) or s.scalar(select(Repository).filter_by(url=key))
    if row is None:
        raise NotFound(f"no registered repository {key!r} (see ci-pool repos list)")
    return row


def remove_repository(store: Store, key: str) -> Repository:
    row = find_repository(store, key)
    with store.session() as s:
        s.execute(delete(ScheduleSlot).where(ScheduleSlot.repo_id == row.id))
        s.execute(delete(Repository).where(Repository.id == row.id))
    return row


def record_scan(
    store: Store, repo_id: str, commit: str | None, schedules: list[Schedule], error: str | None
) -> None:
    """What a scan of the repository at ``commit`` found."""
    with store.session() as s:
        row = s.get(Repository, repo_id)
        if row is None:
            return
        if commit is not None:
            row.scanned_commit = commit
            row.schedules = [{"file": x.file, "cron": x.cron} for x in schedules]
        row.scanned_at = utcnow()
        row.scan_error = error


def schedules_of(row: Repository) -> list[Schedule]:
    return [
        Schedule(str(x["file"]), str(x["cron"]))
        for x in row.schedules
        if isinstance(x, dict) and "file" in x and "cron" in x
    ]


def claim_slot(store: Store, repo_id: str, file: str, cron: str, slot: datetime, by: str) -> bool:
    """Insert the slot's row; True for the one caller that inserted it."""
    try:
        with store.session() as s:
            s.add(
                ScheduleSlot(
                    repo_id=repo_id,
                    file=file,
                    cron=cron,
                    slot=slot,
                    claimed_at=utcnow(),
                    claimed_by=by,
                )
            )
    except IntegrityError:
        return False
    return True


def finish_slot(
    store: Store,
    repo_id: str,
    file: str,
    cron: str,
    slot: datetime,
    *,
    pipeline_id: str | None = None,
    error: str | None = None,
) -> None:
    with store.session() as s:
        row = s.get(ScheduleSlot, (repo_id, file, cron, slot))
        if row is not None:
            row.pipeline_id, row.error = pipeline_id, error


def slots_of(store: Store, repo_id: str) -> list[ScheduleSlot]:
    with store.session(write=False) as s:
        q = select(ScheduleSlot).where(ScheduleSlot.repo_id == repo_id)
        return list(s.scalars(q.order_by(ScheduleSlot.slot)))


def release_slot(store: Store, repo_id: str, file: str, cron: str, slot: datetime) -> None:
    """Give a claimed slot back (it started nothing), so a later tick may claim it."""
    with store.session() as s:
        s.execute(
            delete(ScheduleSlot).where(
                ScheduleSlot.repo_id == repo_id,
                ScheduleSlot.file == file,
                ScheduleSlot.cron == cron,
                ScheduleSlot.slot == slot,
                ScheduleSlot.pipeline_id.is_(None),
            )
        )
