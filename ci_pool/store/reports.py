"""What a job's steps report besides their log: step summaries (markdown written to
$GITHUB_STEP_SUMMARY) and annotations (``::error|warning|notice::``), per attempt.

Importing this module registers the ``step_summaries`` and ``annotations`` tables on the
store's ``Base``. Both are bounded where they are made (``defaults.STEP_SUMMARY_MAX_BYTES``,
``MAX_STEP_SUMMARIES``, ``ANNOTATIONS_PER_JOB``), and masked before they get here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, mapped_column

from ci_pool.core.commands import Annotation
from ci_pool.store.engine import Database
from ci_pool.store.models import Base, SpecType, utcnow


class StepSummaryRow(Base):
    """The markdown one step wrote to $GITHUB_STEP_SUMMARY."""

    __tablename__ = "step_summaries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200), default="")
    markdown: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_step_summaries_job", "job_id", "attempt", "step", unique=True),)


class AnnotationRow(Base):
    """One annotation of a job attempt, in the order its steps printed them."""

    __tablename__ = "annotations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(16))
    data: Mapped[Annotation] = mapped_column(SpecType(Annotation))
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_annotations_job", "job_id", "attempt", "id"),)


@dataclass(frozen=True, slots=True)
class StepSummary:
    """A step's summary as the read model shows it."""

    attempt: int
    step: int
    name: str
    markdown: str


class StepReports(Database):
    """Queries over the step summaries and annotations of each job attempt."""

    def add_summary(self, job_id: str, attempt: int, step: int, name: str, markdown: str) -> None:
        with self.session() as s:
            s.add(
                StepSummaryRow(
                    job_id=job_id, attempt=attempt, step=step, name=name, markdown=markdown
                )
            )

    def summaries(self, job_id: str, attempt: int | None = None) -> list[StepSummary]:
        """The step summaries of one attempt (default: the latest that wrote any)."""
        with self.session(write=False) as s:
            if attempt is None:
                attempt = s.scalar(
                    select(func.max(StepSummaryRow.attempt)).where(StepSummaryRow.job_id == job_id)
                )
            rows = s.scalars(
                select(StepSummaryRow)
                .where(StepSummaryRow.job_id == job_id, StepSummaryRow.attempt == attempt)
                .order_by(StepSummaryRow.step)
            )
            return [StepSummary(r.attempt, r.step, r.name, r.markdown) for r in rows]

    def add_annotations(self, job_id: str, attempt: int, found: Iterable[Annotation]) -> None:
        with self.session() as s:
            for a in found:
                s.add(AnnotationRow(job_id=job_id, attempt=attempt, level=a.level, data=a))

    def annotations(self, job_id: str, attempt: int | None = None) -> list[Annotation]:
        """The annotations of one attempt (default: the latest that made any), in order."""
        with self.session(write=False) as s:
            if attempt is None:
                attempt = s.scalar(
                    select(func.max(AnnotationRow.attempt)).where(AnnotationRow.job_id == job_id)
                )
            rows = s.scalars(
                select(AnnotationRow.data)
                .where(AnnotationRow.job_id == job_id, AnnotationRow.attempt == attempt)
                .order_by(AnnotationRow.id)
            )
            return list(rows)
