"""What each job attempt leaves behind: its log, stored in chunks, and its artifact index."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, func, select

from ci_pool.store.engine import Database
from ci_pool.store.models import Artifact, LogChunk


class AttemptRecords(Database):
    """Queries over the log chunks and artifacts tables, per job attempt."""

    def append_log(self, job_id: str, attempt: int, seq: int, data: str) -> None:
        with self.session() as s:
            s.add(LogChunk(job_id=job_id, attempt=attempt, seq=seq, data=data))

    def read_log(self, job_id: str, attempt: int | None = None) -> str:
        """The stored log of one attempt (default: the latest one that wrote any)."""
        with self.session(write=False) as s:
            if attempt is None:
                attempt = s.scalar(
                    select(func.max(LogChunk.attempt)).where(LogChunk.job_id == job_id)
                )
                if attempt is None:
                    return ""
            rows = s.scalars(
                select(LogChunk.data)
                .where(and_(LogChunk.job_id == job_id, LogChunk.attempt == attempt))
                .order_by(LogChunk.seq)
            )
            return "".join(rows)

    def add_artifacts(self, job_id: str, attempt: int, files: Iterable[Any]) -> None:
        """Index collected files (objects with path, size and sha256)."""
        with self.session() as s:
            for f in files:
                s.add(
                    Artifact(
                        job_id=job_id, attempt=attempt, path=f.path, size=f.size, sha256=f.sha256
                    )
                )

    def artifacts(self, job_id: str, attempt: int | None = None) -> list[Artifact]:
        """The artifact index of one attempt (default: the latest that has any)."""
        with self.session(write=False) as s:
            if attempt is None:
                attempt = s.scalar(
                    select(func.max(Artifact.attempt)).where(Artifact.job_id == job_id)
                )
            q = select(Artifact).where(Artifact.job_id == job_id, Artifact.attempt == attempt)
            return list(s.scalars(q.order_by(Artifact.path)))
