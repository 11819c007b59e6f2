"""The local changes jobs carry (``submit/run --sync``): each payload once, by its sha256.

Importing this module registers the ``sync_payloads`` table on the store's ``Base``."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String, Text, cast, delete, exists, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ci_pool.core.specs import JobState
from ci_pool.core.sync import SyncMode, SyncSource
from ci_pool.store.engine import Database
from ci_pool.store.models import Base, Job, utcnow


class SyncPayloadRow(Base):
    """A patch or a gzipped snapshot, stored once for every job that names it."""

    __tablename__ = "sync_payloads"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class SyncPayloads(Database):
    """Queries over the sync payloads."""

    def put_sync_payload(self, mode: SyncMode, data: bytes) -> SyncSource:
        """Keep ``data`` (once per content); the source a job's checkout names."""
        digest = hashlib.sha256(data).hexdigest()
        with self.session() as s:
            if s.get(SyncPayloadRow, digest) is None:
                s.add(SyncPayloadRow(sha256=digest, mode=mode, size=len(data), data=data))
        return SyncSource(mode=mode, sha256=digest, size=len(data))

    def has_sync_payload(self, source: SyncSource) -> bool:
        """Whether the payload ``source`` names is here, of its mode."""
        with self.session(write=False) as s:
            mode = s.scalar(
                select(SyncPayloadRow.mode).where(SyncPayloadRow.sha256 == source.sha256)
            )
            return mode == source.mode

    def sync_payload(self, sha256: str) -> bytes | None:
        with self.session(write=False) as s:
            data: bytes | None = s.scalar(
                select(SyncPayloadRow.data).where(SyncPayloadRow.sha256 == sha256)
            )
            return data

    def drop_unnamed_sync_payload(self, sha256: str) -> bool:
        """Remove the payload ``sha256`` unless a job names it (a ``rejected`` one, which
        never runs, does not count); whether it was removed."""
        with self.session() as s:
            return _drop_unnamed(s, [sha256]) == 1

    def sweep_sync_payloads(self, older_than: datetime) -> int:
        """Remove the payloads kept before ``older_than`` that no job names (rejected
        ones aside); how many."""
        with self.session() as s:
            old = s.scalars(select(SyncPayloadRow.sha256).where(SyncPayloadRow.at < older_than))
            return _drop_unnamed(s, list(old))


def _drop_unnamed(s: Session, digests: list[str]) -> int:
    """Delete the payloads of ``digests`` that no job's checkout names, in one session."""
    removed = 0
    for digest in digests:
        named = exists().where(
            cast(Job.checkout, Text).contains(digest), Job.state != JobState.REJECTED
        )
        res = s.execute(
            delete(SyncPayloadRow).where(SyncPayloadRow.sha256 == digest, ~named),
            execution_options={"synchronize_session": False},
        )
        removed += int(getattr(res, "rowcount", 0) or 0)
    return removed
