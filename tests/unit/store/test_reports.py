"""Step summaries and annotations on SQLite and PostgreSQL: kept per attempt, in order."""

from __future__ import annotations

from ci_pool.core.commands import Annotation
from ci_pool.store import Store
from tests.unit.store.test_repository import new_job


def test_summaries_and_annotations_are_kept_per_attempt_in_order(store: Store) -> None:
    job = new_job(store)
    big = "| row |\n" * 100_000  # 800 KB: a step summary near its cap
    store.add_summary(job.id, 1, 3, "report", big)
    store.add_summary(job.id, 1, 1, "build", "## Build\n")
    store.add_summary(job.id, 2, 1, "build", "## Build again\n")
    notes = [
        Annotation(level="error", message="bad\nthing", step=2, file="a.c", line=3, col=1),
        Annotation(level="notice", message="fyi", step=2),
    ]
    store.add_annotations(job.id, 1, notes)
    assert [(s.step, s.name) for s in store.summaries(job.id, 1)] == [(1, "build"), (3, "report")]
    assert store.summaries(job.id, 1)[1].markdown == big
    # Default: the latest attempt that has any.
    assert [s.markdown for s in store.summaries(job.id)] == ["## Build again\n"]
    assert store.annotations(job.id) == notes
    assert store.annotations(job.id, 2) == []
    assert store.summaries("nope") == []
