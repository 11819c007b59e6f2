"""Why a job waits, in plain words (``explain``, the ``waiting`` field of a job's view).

With a ``visible`` predicate (a token limited to some capabilities or repositories), the
words name no job the predicate refuses: busy slots and pending needs held by such jobs
are only counted."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis

from ci_pool.broker.runners import RunnerInfo
from ci_pool.core.concurrency import ConcurrencyGroup, job_member, pipeline_member, split_member
from ci_pool.core.runner_names import name_matches
from ci_pool.core.specs import FINAL_STATES, JobState
from ci_pool.exceptions import NotFound
from ci_pool.store import Job

if TYPE_CHECKING:
    from ci_pool.service.inspection import Inspection

Visible = Callable[[Job], bool]
#: Running jobs named in a "busy" reason.
SHOWN_BUSY = 5
#: Runner names listed in a reason.
SHOWN_RUNNERS = 10


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
    if job.runner:
        return _why_targeted(pool, job, job.runner, serving, visible)
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


def _names(runners: list[RunnerInfo]) -> str:
    names = [r.runner_id for r in runners]
    more = f", and {len(names) - SHOWN_RUNNERS} more" if len(names) > SHOWN_RUNNERS else ""
    return ", ".join(names[:SHOWN_RUNNERS]) + more if names else "none"


def _why_targeted(
    pool: Inspection, job: Job, glob: str, serving: list[RunnerInfo], visible: Visible | None
) -> str:
    """Why a job sent to runners by name waits: none matches, or each match is busy,
    draining or unhealthy."""
    cap = job.capability
    matching = [r for r in serving if name_matches(glob, r.runner_id)]
    if not matching:
        return (
            f"no live runner matches {glob!r}; live {cap} runners: {_names(serving)}; it runs "
            f"when one whose name matches starts (ci-pool worker --capability {cap} --name NAME)"
        )
    running = pool.store.list_jobs(states=[JobState.RUNNING], capability=cap)
    now = datetime.now(UTC)
    words: list[str] = []
    free: list[str] = []
    for r in matching[:SHOWN_RUNNERS]:
        held = [j for j in running if j.runner_id == r.runner_id]
        if r.extra.get("unhealthy"):
            words.append(f"{r.runner_id} is unhealthy ({r.extra['unhealthy']})")
        elif r.extra.get("draining"):
            words.append(f"{r.runner_id} is draining ({r.extra['draining']})")
        elif len(held) >= r.concurrency:
            shown, others = _seen(held, visible)
            jobs = [
                f"{b.key or b.name or b.id} ({b.id})"
                + (f" for {(now - b.started_at).total_seconds():.0f}s" if b.started_at else "")
                for b in shown
            ] + ([f"{others} job(s) outside this token's limits"] if others else [])
            words.append(f"{r.runner_id} is busy with {', '.join(jobs)}")
        else:
            free.append(r.runner_id)
    if free:
        return (
            f"sent to a runner matching {glob!r} ({', '.join(free)} has a free slot); "
            "waiting for it to pick the job up"
        )
    return (
        f"{len(matching)} live runner(s) match {glob!r}, none free: {'; '.join(words)}; it "
        "runs when one frees up"
    )


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


def _holder_words(pool: Inspection, holder: str, visible: Visible | None) -> tuple[str, bool]:
    """The holder of a group in words, and whether it has yet to end."""
    kind, ident = split_member(holder)
    if kind == "pipeline":
        jobs = pool.store.pipeline_jobs(ident)
        live = any(JobState(j.state) not in FINAL_STATES for j in jobs)
        shown = visible is None or any(visible(j) for j in jobs)
        return (f"pipeline {ident}" if shown else "a pipeline outside this token's limits"), live
    try:
        held = pool.store.get_job(ident)
    except NotFound:
        return f"job {ident}", False
    live = JobState(held.state) not in FINAL_STATES
    if visible is not None and not visible(held):
        return "a job outside this token's limits", live
    return f"job {held.key or held.name} ({held.id}) of pipeline {held.pipeline_id}", live


def _group_wait(
    pool: Inspection, repo: str, group: ConcurrencyGroup, me: str, visible: Visible | None
) -> str | None:
    """Why ``me`` waits for its concurrency group, or None when it does not (yet)."""
    slot = pool.store.concurrency_slot(repo, group.name)
    if slot is None or slot.holder is None or slot.holder == me:
        return None
    words, live = _holder_words(pool, slot.holder, visible)
    if not live:
        return (
            f"concurrency group {group.name} was released by {words}; the scheduler starts "
            "it on its next pass"
        )
    if group.cancel_in_progress:
        return (
            f"waiting for concurrency group {group.name} (held by {words}, which is being "
            "cancelled: cancel-in-progress)"
        )
    return f"waiting for concurrency group {group.name} (held by {words})"


def _why_blocked(pool: Inspection, job: Job, visible: Visible | None) -> str:
    if not job.pipeline_id:
        return "blocked"
    pipeline = pool.store.get_pipeline(job.pipeline_id)
    if pipeline.concurrency is not None:
        me = pipeline_member(pipeline.id)
        why = _group_wait(pool, pipeline.repo, pipeline.concurrency, me, visible)
        if why is not None:
            return why
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
    if job.concurrency is not None:
        why = _group_wait(pool, job.repo, job.concurrency, job_member(job.id), visible)
        if why is not None:
            return why
    return "its needs have ended; the scheduler queues or skips it on its next pass"
