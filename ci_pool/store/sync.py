"""The local changes jobs carry (``submit/run --sync``): each payload once, by its sha256.

Importing this module registers the ``sync_payloads`` table on the store's ``Base``."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String, select
from sqlalchemy.orm import Mapped, mapped_column

from ci_pool.core.sync import SyncMode, SyncSource
from ci_pool.store.engine import Database
from ci_pool.store.models import Base, utcnow


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
