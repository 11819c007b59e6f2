"""Artifact sets: one row per artifact a job attempt uploaded (``actions/upload-artifact``,
by name) or collected (its ``artifacts:`` paths, no name), with when it expires.

A name is held by one job attempt of a run (the pipeline, or the job outside one): the
unique (run, name) row is the claim two jobs uploading the same name at once race for, and
only one wins. Expired sets lose their files and file rows to the periodic sweep; the set
row stays, marked expired, so ``show``, the API and download-artifact can say so.

Importing this module registers the ``artifact_sets`` table on the store's ``Base``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    UniqueConstraint,
    and_,
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from ci_pool.store.engine import Database
from ci_pool.store.models import Artifact, Base, utcnow


class ArtifactSet(Base):
    """One uploaded (named) or collected (unnamed) artifact of a job attempt."""

    __tablename__ = "artifact_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The pipeline id, or the job id of a job outside one.
    run_id: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    #: None for the files of the job's ``artifacts:`` paths (never unique).
    name: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    #: When the sweep removed its files, None while they are kept.
    expired_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_artifact_sets_run_name"),)


def _files_of(row: ArtifactSet) -> ColumnElement[bool]:
    """The condition selecting a set's file rows."""
    named = Artifact.name.is_(None) if row.name is None else Artifact.name == row.name
    return and_(Artifact.job_id == row.job_id, Artifact.attempt == row.attempt, named)


class ArtifactSets(Database):
    """Claims, retention and expiry of artifact sets."""

    def claim_artifact(
        self,
        run_id: str,
        job_id: str,
        attempt: int,
        name: str,
        expires_at: datetime,
        *,
        overwrite: bool,
    ) -> str | None:
        """Hold ``name`` in the run for this job attempt: None when held now, else the job
        that holds it. An expired set, or an earlier attempt of this job, gives way;
        another holder only with ``overwrite``. Two claims at once: one wins."""
        holder = job_id
        for _ in range(3):
            try:
                with self.session() as s:
                    s.add(
                        ArtifactSet(
                            run_id=run_id,
                            job_id=job_id,
                            attempt=attempt,
                            name=name,
                            expires_at=expires_at,
                        )
                    )
                return None
            except IntegrityError:
                pass
            with self.session() as s:
                row = s.scalar(
                    select(ArtifactSet).where(
                        ArtifactSet.run_id == run_id, ArtifactSet.name == name
                    )
                )
                if row is None:
                    continue  # released meanwhile: claim again
                mine_before = row.job_id == job_id and row.attempt != attempt
                if not (overwrite or mine_before or row.expired_at is not None):
                    return row.job_id
                taken = s.execute(
                    update(ArtifactSet)
                    .where(
                        ArtifactSet.id == row.id,
                        ArtifactSet.job_id == row.job_id,
                        ArtifactSet.attempt == row.attempt,
                    )
                    .values(
                        job_id=job_id,
                        attempt=attempt,
                        expires_at=expires_at,
                        expired_at=None,
                        created_at=utcnow(),
                    ),
                    execution_options={"synchronize_session": False},
                )
                if getattr(taken, "rowcount", 0) == 1:
                    return None
                holder = row.job_id
        return holder

    def release_artifact(self, run_id: str, name: str, job_id: str, attempt: int) -> None:
        """Give up a claim this attempt holds (it uploaded nothing after all)."""
        with self.session() as s:
            s.execute(
                delete(ArtifactSet).where(
                    ArtifactSet.run_id == run_id,
                    ArtifactSet.name == name,
                    ArtifactSet.job_id == job_id,
                    ArtifactSet.attempt == attempt,
                )
            )

    def add_artifact_set(
        self, run_id: str, job_id: str, attempt: int, expires_at: datetime
    ) -> None:
        """Record the collected (unnamed) files of a job attempt, expiring at ``expires_at``."""
        with self.session() as s:
            s.add(ArtifactSet(run_id=run_id, job_id=job_id, attempt=attempt, expires_at=expires_at))

    def due_artifact_sets(self, now: datetime) -> list[ArtifactSet]:
        """The sets past their expiry whose files are still kept."""
        with self.session(write=False) as s:
            q = select(ArtifactSet).where(
                ArtifactSet.expires_at <= now, ArtifactSet.expired_at.is_(None)
            )
            return list(s.scalars(q.order_by(ArtifactSet.expires_at)))

    def artifact_set_files(self, row: ArtifactSet) -> list[Artifact]:
        with self.session(write=False) as s:
            return list(s.scalars(select(Artifact).where(_files_of(row))))

    def expire_artifact_set(self, row: ArtifactSet) -> int:
        """Drop the set's file rows and mark it expired (fenced: a set claimed again since
        is left alone); how many file rows went."""
        with self.session() as s:
            marked = s.execute(
                update(ArtifactSet)
                .where(
                    ArtifactSet.id == row.id,
                    ArtifactSet.job_id == row.job_id,
                    ArtifactSet.attempt == row.attempt,
                    ArtifactSet.expired_at.is_(None),
                )
                .values(expired_at=utcnow()),
                execution_options={"synchronize_session": False},
            )
            if getattr(marked, "rowcount", 0) != 1:
                return 0
            gone = s.execute(
                delete(Artifact).where(_files_of(row)),
                execution_options={"synchronize_session": False},
            )
            return int(getattr(gone, "rowcount", 0) or 0)

    def expired_artifacts(self, job_id: str) -> list[ArtifactSet]:
        """The sets of a job whose files expired."""
        with self.session(write=False) as s:
            q = select(ArtifactSet).where(
                ArtifactSet.job_id == job_id, ArtifactSet.expired_at.is_not(None)
            )
            return list(s.scalars(q.order_by(ArtifactSet.attempt, ArtifactSet.name)))

    def expired_named(self, run_id: str, name: str) -> ArtifactSet | None:
        """The run's set ``name`` if its files expired."""
        with self.session(write=False) as s:
            return s.scalar(
                select(ArtifactSet).where(
                    ArtifactSet.run_id == run_id,
                    ArtifactSet.name == name,
                    ArtifactSet.expired_at.is_not(None),
                )
            )
