"""Concurrency groups in the store: a member's claim of its group applied under one fenced
update of the group's row, with the cancellations the claim decides, in one transaction.

Which member holds a group and which waits is kept on the group's row; whether either has
ended is read from the members' own rows, so a member that ends by any path (finished,
cancelled, rejected, lost with its runner) frees its group without a write of its own."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import ColumnElement, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from ci_pool import defaults
from ci_pool.core.concurrency import (
    ConcurrencyGroup,
    Slot,
    Verdict,
    claim,
    describe,
    group_key,
    split_member,
)
from ci_pool.core.specs import FINAL_STATES
from ci_pool.store.engine import Database
from ci_pool.store.models import ConcurrencySlot, Job, utcnow
from ci_pool.store.transitions import cancel_job

log = logging.getLogger(__name__)

_FINAL = [s.value for s in FINAL_STATES]


@dataclass(frozen=True, slots=True)
class GroupClaim:
    """What a member's claim of its group came to."""

    #: None when the member has ended meanwhile: there is nothing to start.
    verdict: Verdict | None
    #: The group's holder after the claim.
    holder: str | None
    #: The holder is being cancelled for this member (cancel-in-progress).
    cancelling: bool = False
    #: Pipelines with jobs the claim cancelled, to be advanced (and closed) next.
    touched: tuple[str, ...] = ()


class _Lost(Exception):
    """Another claim wrote the group's row between our read and our fenced update."""


def _is(column: InstrumentedAttribute[str | None], value: str | None) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


def _live(s: Session, member: str | None) -> bool:
    """Whether a member has yet to end: a pipeline with a job not final, a job not final."""
    if member is None:
        return False
    kind, ident = split_member(member)
    column = Job.pipeline_id if kind == "pipeline" else Job.id
    return bool(s.scalar(select(exists().where(column == ident, Job.state.not_in(_FINAL)))))


def _pipeline_of(s: Session, member: str) -> str | None:
    kind, ident = split_member(member)
    if kind == "pipeline":
        return ident
    return s.scalar(select(Job.pipeline_id).where(Job.id == ident))


class ConcurrencyQueries(Database):
    """Claims of concurrency groups, and what explain and the scheduler read of them."""

    def claim_group(self, member: str, repo: str, group: ConcurrencyGroup) -> GroupClaim:
        """``member`` (which has yet to end) asks for its group: it holds it (RUN) or waits.

        Safe from several schedulers at once: the group's row changes only by a fenced
        UPDATE on the holder and waiting member that were read; a claim that lost the
        race reads again."""
        key = group_key(repo, group.name)
        with self.session(write=False) as s:
            holder = s.scalar(select(ConcurrencySlot.holder).where(ConcurrencySlot.key == key))
            if holder == member:
                return GroupClaim(Verdict.RUN, member)
        for _ in range(defaults.CONCURRENCY_CLAIM_TRIES):
            try:
                with self.session() as s:
                    return self._claim(s, key, member, repo, group)
            except (_Lost, IntegrityError):
                continue
        log.warning("concurrency group %r: claim of %s kept losing races", group.name, member)
        return GroupClaim(Verdict.WAIT, None)

    def _claim(
        self, s: Session, key: str, member: str, repo: str, group: ConcurrencyGroup
    ) -> GroupClaim:
        row = s.scalars(
            select(ConcurrencySlot)
            .where(ConcurrencySlot.key == key)
            .execution_options(populate_existing=True)
        ).first()
        if row is None:  # the group's first member: two first claims collide on the key
            row = ConcurrencySlot(key=key, repo=repo, name=group.name, updated_at=utcnow())
            s.add(row)
            s.flush()
        if not _live(s, member):
            return GroupClaim(None, row.holder)
        slot = Slot(row.holder, _live(s, row.holder), row.pending, _live(s, row.pending))
        decision = claim(slot, member, group.cancel_in_progress)
        if decision.changes(slot):
            self._write(s, key, slot.holder, slot.pending, decision.holder, decision.pending)
        touched: list[str] = []
        where = f"concurrency group {group.name}"
        if decision.supersede is not None:
            touched += self._cancel(
                s, decision.supersede, f"superseded by {describe(member)} in {where}"
            )
        if decision.cancel is not None:
            why = f"cancelled by {describe(member)} in {where} (cancel-in-progress)"
            touched += self._cancel(s, decision.cancel, why)
            if not _live(s, decision.cancel):  # nothing of it was running: take over now
                self._write(s, key, decision.holder, member, member, None)
                return GroupClaim(Verdict.RUN, member, touched=tuple(touched))
        return GroupClaim(
            decision.verdict,
            decision.holder,
            cancelling=decision.cancel is not None,
            touched=tuple(touched),
        )

    def _write(
        self,
        s: Session,
        key: str,
        holder: str | None,
        pending: str | None,
        new_holder: str | None,
        new_pending: str | None,
    ) -> None:
        res = s.execute(
            update(ConcurrencySlot)
            .where(
                ConcurrencySlot.key == key,
                _is(ConcurrencySlot.holder, holder),
                _is(ConcurrencySlot.pending, pending),
            )
            .values(holder=new_holder, pending=new_pending, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            raise _Lost

    def _cancel(self, s: Session, member: str, reason: str) -> list[str]:
        """Cancel every job of a member that has not ended (running ones through their
        worker); the pipelines touched."""
        kind, ident = split_member(member)
        column = Job.pipeline_id if kind == "pipeline" else Job.id
        jobs = s.scalars(select(Job.id).where(column == ident, Job.state.not_in(_FINAL))).all()
        for job_id in jobs:
            cancel_job(s, job_id, reason)
        pipeline = _pipeline_of(s, member)
        return [pipeline] if pipeline else []

    def released_waiters(self, holders: list[str]) -> list[str]:
        """Pipelines of the members waiting for groups these members hold (or held)."""
        if not holders:
            return []
        with self.session(write=False) as s:
            pending = s.scalars(
                select(ConcurrencySlot.pending).where(
                    ConcurrencySlot.holder.in_(holders), ConcurrencySlot.pending.is_not(None)
                )
            ).all()
            found = [_pipeline_of(s, p) for p in pending if p]
        return [p for p in dict.fromkeys(found) if p]

    def concurrency_slot(self, repo: str, name: str) -> ConcurrencySlot | None:
        """The group's row: who holds it and who waits (None: no member asked yet)."""
        with self.session(write=False) as s:
            return s.get(ConcurrencySlot, group_key(repo, name))
