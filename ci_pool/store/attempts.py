"""What each job attempt leaves behind: its log, stored in chunks, and its artifact index."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select

from ci_pool.store.engine import Database
from ci_pool.store.models import Artifact, Job, LogChunk


def _in_run(pipeline_id: str | None, job_id: str) -> ColumnElement[bool]:
    """The jobs of a pipeline, or the job alone when it is not in one."""
    return Job.pipeline_id == pipeline_id if pipeline_id else Job.id == job_id


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

    def add_artifacts(
        self, job_id: str, attempt: int, files: Iterable[Any], name: str | None = None
    ) -> None:
        """Index collected files (objects with path, size and sha256), uploaded under
        ``name`` when they are a named artifact."""
        with self.session() as s:
            for f in files:
                s.add(
                    Artifact(
                        job_id=job_id,
                        attempt=attempt,
                        path=f.path,
                        size=f.size,
                        sha256=f.sha256,
                        name=name,
                    )
                )

    def named_artifacts(self, pipeline_id: str | None, job_id: str, name: str) -> list[Artifact]:
        """The files of the artifact ``name`` in a pipeline (or, outside one, in the job),
        each job's latest attempt that has it; other attempts of ``job_id`` never count."""
        with self.session(write=False) as s:
            q = select(Artifact).join(Job, Job.id == Artifact.job_id).where(Artifact.name == name)
            q = q.where(_in_run(pipeline_id, job_id))
            rows = list(s.scalars(q.order_by(Artifact.job_id, Artifact.attempt, Artifact.path)))
        latest: dict[str, int] = {}
        for row in rows:
            latest[row.job_id] = max(latest.get(row.job_id, 0), row.attempt)
        return [r for r in rows if r.attempt == latest[r.job_id]]

    def artifact_names(self, pipeline_id: str | None, job_id: str) -> list[str]:
        """The names of the artifacts uploaded in a pipeline (or the job)."""
        with self.session(write=False) as s:
            q = select(Artifact.name).join(Job, Job.id == Artifact.job_id)
            q = q.where(_in_run(pipeline_id, job_id))
            return sorted({n for n in s.scalars(q.where(Artifact.name.is_not(None))) if n})

    def get_artifact(self, artifact_id: int) -> Artifact | None:
        """One artifact index row by id."""
        with self.session(write=False) as s:
            return s.get(Artifact, artifact_id)

    def remove_artifacts(self, ids: Iterable[int]) -> None:
        """Drop index rows (an artifact uploaded again with ``overwrite``)."""
        wanted = list(ids)
        if not wanted:
            return
        with self.session() as s:
            for row in s.scalars(select(Artifact).where(Artifact.id.in_(wanted))):
                s.delete(row)

    def artifacts(self, job_id: str, attempt: int | None = None) -> list[Artifact]:
        """The artifact index of one attempt (default: the latest that has any)."""
        with self.session(write=False) as s:
            if attempt is None:
                attempt = s.scalar(
                    select(func.max(Artifact.attempt)).where(Artifact.job_id == job_id)
                )
            q = select(Artifact).where(Artifact.job_id == job_id, Artifact.attempt == attempt)
            return list(s.scalars(q.order_by(Artifact.path)))
