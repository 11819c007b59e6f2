"""Why a job waits, in plain words (``explain``, the ``waiting`` field of a job's view).

With a ``visible`` predicate (a token limited to some capabilities or repositories), the
words name no job the predicate refuses: busy slots and pending needs held by such jobs
are only counted."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis

from ci_pool.core.specs import FINAL_STATES, JobState
from ci_pool.store import Job

if TYPE_CHECKING:
    from ci_pool.service.inspection import Inspection

Visible = Callable[[Job], bool]
#: Running jobs named in a "busy" reason.
SHOWN_BUSY = 5


def _seen(jobs: list[Job], visible: Visible | None) -> tuple[list[Job], int]:
    """The jobs that may be named, and how many others there are."""
    shown = jobs if visible is None else [j for j in jobs if visible(j)]
    return shown, len(jobs) - len(shown)


def why_waiting(pool: Inspection, job: Job, visible: Visible | None = None) -> str | None:
    """Plain words on why a job has not started, or None if it is not waiting."""
    if job.state == JobState.BLOCKED.value:
        return _why_blocked(pool, job, visible)
    if job.state == JobState.REJECTED.value:
        return f"rejected: {job.reason}"
    if job.state != JobState.QUEUED.value:
        return None
    try:
        serving = pool.runners(job.capability)
    except redis.RedisError as exc:
        return f"the broker is unreachable ({exc}); no worker can take the job"
    if not serving:
        return (
            f"no worker is serving capability {job.capability!r} (queue {job.queue!r}); "
            f"start one with: ci-pool worker --capability {job.capability}"
        )
    unhealthy = [r for r in serving if r.extra.get("unhealthy")]
    if len(unhealthy) == len(serving):
        return (
            "; ".join(
                f"runner {r.runner_id} {r.extra['unhealthy']}" for r in unhealthy[:SHOWN_BUSY]
            )
            + "; it runs when a runner is healthy again"
        )
    taking = [r for r in serving if not r.extra.get("draining") and r not in unhealthy]
    slots = sum(r.concurrency for r in taking)
    busy = pool.store.list_jobs(states=[JobState.RUNNING], capability=job.capability)
    if len(busy) >= slots:
        return _busy(busy, len(serving), slots, job.capability, visible)
    if job.attempt and job.queued_at:
        errors = [e for e in pool.store.events(job.id) if e.to_state == JobState.ERROR.value]
        cause = errors[-1].reason if errors else "see its history"
        return (
            f"attempt {job.attempt} ended in error ({cause}); "
            f"waiting out the retry backoff before attempt {job.attempt + 1}"
        )
    return f"waiting for one of {len(serving)} worker(s) of {job.capability!r} to pick it up"


def _busy(
    busy: list[Job], workers: int, slots: int, capability: str, visible: Visible | None
) -> str:
    now = datetime.now(UTC)
    shown, others = _seen(busy, visible)
    held = [
        f"{b.key or b.name or b.id} ({b.id}) on {b.runner_id} for "
        f"{(now - b.started_at).total_seconds():.0f}s"
        for b in shown[:SHOWN_BUSY]
        if b.started_at
    ]
    if others:
        held.append(f"{others} job(s) outside this token's limits")
    return (
        f"all {workers} worker(s) of {capability!r} are busy "
        f"({len(busy)} running job(s), {slots} slot(s)): {'; '.join(held)}; it runs when one "
        "frees up"
    )


def _why_blocked(pool: Inspection, job: Job, visible: Visible | None) -> str:
    if not job.pipeline_id:
        return "blocked"
    by_key = {j.key: j for j in pool.store.pipeline_jobs(job.pipeline_id)}
    needed = [
        by_key[k]
        for k in job.needs or ()
        if k in by_key and JobState(by_key[k].state) not in FINAL_STATES
    ]
    shown, others = _seen(needed, visible)
    pending = [f"{j.key} ({j.state})" for j in shown]
    if others:
        pending.append(f"{others} job(s) outside this token's limits")
    if pending:
        return "its needs are still running: " + ", ".join(pending)
    return "its needs have ended; the scheduler queues or skips it on its next pass"
