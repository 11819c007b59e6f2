"""The read model: job, pipeline, runner and queue views for the CLI, the API and the metrics."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ci_pool import defaults

if TYPE_CHECKING:
    # Types only: the API client (remote mode) uses these views without the store,
    # SQLAlchemy or Redis.
    from ci_pool.broker.runners import RunnerInfo
    from ci_pool.core.concurrency import ConcurrencyGroup
    from ci_pool.service.inspection import Inspection
    from ci_pool.store import Job
    from ci_pool.store.models import Pipeline as PipelineRow

#: Keys of a job's view that only the detailed view (``show``) carries.
DETAIL_KEYS = defaults.JOB_DETAIL_KEYS


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _group(group: ConcurrencyGroup | None) -> dict[str, Any] | None:
    """A concurrency group as the views show it: its name and cancel-in-progress."""
    return None if group is None else group.model_dump(mode="json")


def job_dict(
    job: Job, pool: Inspection | None = None, visible: Callable[[Job], bool] | None = None
) -> dict[str, Any]:
    """The public view of a job; with ``pool``, also why it waits (naming no job that
    ``visible`` refuses), artifacts, history, annotations and step summaries."""
    data: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "pipeline_id": job.pipeline_id,
        "state": job.state,
        "capability": job.capability,
        "queue": job.queue,
        "repo": job.repo,
        "ref": job.ref,
        "commit_sha": job.commit_sha,
        "labels": job.labels,
        "runner": job.runner,
        "timeout_s": job.timeout_s,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "runner_id": job.runner_id,
        "exit_code": job.exit_code,
        "reason": job.reason,
        "created_at": _ts(job.created_at),
        "queued_at": _ts(job.queued_at),
        "started_at": _ts(job.started_at),
        "finished_at": _ts(job.finished_at),
        "lease_until": _ts(job.lease_until),
        "evidence": None if job.evidence is None else job.evidence.model_dump(mode="json"),
        "concurrency": _group(job.concurrency),
        "permissions": job.permissions,
        "environment": None if job.environment is None else job.environment.model_dump(),
    }
    if pool is not None:
        data["waiting"] = pool.why_waiting(job, visible)
        data["artifacts"] = [
            {"path": a.path, "size": a.size, "sha256": a.sha256, "attempt": a.attempt}
            for a in pool.store.artifacts(job.id)
        ]
        data["expired_artifacts"] = [
            {"name": e.name, "attempt": e.attempt, "expired_at": _ts(e.expired_at)}
            for e in pool.store.expired_artifacts(job.id)
        ]
        data["events"] = [
            {
                "attempt": e.attempt,
                "from": e.from_state,
                "to": e.to_state,
                "at": _ts(e.at),
                "runner_id": e.runner_id,
                "reason": e.reason,
            }
            for e in pool.store.events(job.id)
        ]
        # What the latest attempt's steps reported: annotations, and step summaries as
        # the markdown they wrote.
        data["annotations"] = [
            a.model_dump(mode="json") for a in pool.store.annotations(job.id, job.attempt)
        ]
        data["summaries"] = [
            {"step": s.step, "name": s.name, "markdown": s.markdown}
            for s in pool.store.summaries(job.id, job.attempt)
        ]
    return data


def summary(view: dict[str, Any]) -> dict[str, Any]:
    """A detailed job view cut down to the fields of ``job_dict(job)``."""
    return {k: v for k, v in view.items() if k not in DETAIL_KEYS}


def pipeline_dict(row: PipelineRow, jobs: list[Job]) -> dict[str, Any]:
    """The public view of a pipeline and each of its jobs."""
    return {
        "id": row.id,
        "name": row.name,
        "run_name": row.run_name,
        "permissions": row.permissions,
        "file": row.file,
        "state": row.state,
        "repo": row.repo,
        "ref": row.ref,
        "commit_sha": row.commit_sha,
        "created_at": row.created_at.isoformat(),
        "finished_at": _ts(row.finished_at),
        "concurrency": _group(row.concurrency),
        "jobs": [
            {
                "id": j.id,
                "key": j.key,
                "state": j.state,
                "capability": j.capability,
                "needs": j.needs,
                "runner_id": j.runner_id,
                "exit_code": j.exit_code,
                "reason": j.reason,
                "attempt": j.attempt,
                "outputs": j.outputs,
                "started_at": _ts(j.started_at),
                "finished_at": _ts(j.finished_at),
                "concurrency": _group(j.concurrency),
            }
            for j in jobs
        ],
    }


RunnerState = Literal["online", "busy", "draining", "unhealthy", "lost"]


class RunnerStatus(BaseModel):
    """One runner as ``ci-pool runners``, ``GET /v1/runners`` and the metrics see it."""

    model_config = ConfigDict(frozen=True)

    runner_id: str
    capability: str
    queue: str
    host: str
    pid: int
    #: Jobs the runner runs at once.
    concurrency: int
    version: str
    started_at: float = Field(description="Unix time the runner started.")
    last_seen: float = Field(description="Unix time of its last heartbeat.")
    state: RunnerState
    #: Ids of the jobs it runs now.
    jobs: list[str] = Field(default_factory=list)
    #: Why it is draining ("drained", "max-jobs", ...), or None.
    draining: str | None = None
    #: Why it takes no job now (its Docker engine is down, its image is missing), or None.
    unhealthy: str | None = None
    #: What the runner reports about itself: its capability image and that image's id.
    extra: dict[str, Any] = Field(default_factory=dict)


def runner_state(runner: RunnerInfo, running: int, *, lost: bool = False) -> RunnerState:
    """``lost`` (stopped heartbeating), ``unhealthy`` (cannot run jobs now), ``draining``,
    ``busy`` (every slot taken) or ``online`` (live with a free slot)."""
    if lost:
        return "lost"
    if runner.extra.get("unhealthy"):
        return "unhealthy"
    if runner.extra.get("draining"):
        return "draining"
    return "busy" if running >= runner.concurrency else "online"


def runner_statuses(
    live: Iterable[RunnerInfo], lost: Iterable[RunnerInfo], running: Mapping[str, list[str]]
) -> list[RunnerStatus]:
    """Every runner heard from, live ones first; ``running`` maps runner ids to job ids."""
    rows = []
    for is_lost, group in ((False, live), (True, lost)):
        for r in group:
            jobs = list(running.get(r.runner_id, []))
            rows.append(
                RunnerStatus(
                    **asdict(r),
                    state=runner_state(r, len(jobs), lost=is_lost),
                    jobs=jobs,
                    draining=r.extra.get("draining") or None,
                    unhealthy=r.extra.get("unhealthy") or None,
                )
            )
    return rows


class QueueStatus(BaseModel):
    """One capability's queue as ``ci-pool status`` and ``GET /v1/queues`` show it."""

    model_config = ConfigDict(frozen=True)

    capability: str
    queued: int
    blocked: int
    #: Seconds the oldest queued job has waited, or None when none waits.
    oldest_wait_s: float | None
    running: int
    #: Live workers and their slots; None when the broker (the runner registry) is down.
    workers: int | None
    slots: int | None
    #: Jobs that ended in the last hour; of those, builds that failed or timed out, and
    #: attempts that ended in an infrastructure error.
    finished_1h: int
    failed_1h: int
    errors_1h: int = 0
    #: Run time percentiles of the last hour's jobs, in seconds.
    p50_s: float | None
    p95_s: float | None


def queue_statuses(
    capabilities: Iterable[str],
    summary: Mapping[str, Mapping[str, Any]],
    runners: list[RunnerInfo] | None,
    now: datetime,
) -> list[QueueStatus]:
    """One row per capability (configured or seen in the store), from the store's
    ``pool_summary`` and the live runners (None: the broker did not answer)."""
    rows = []
    for name in sorted(set(capabilities) | set(summary)):
        info = summary.get(name, {"states": {}, "oldest_queued": None, "durations": []})
        states: Mapping[str, int] = info["states"]
        mine = [r for r in runners or [] if r.capability == name]
        durations = sorted(info["durations"])
        oldest = info["oldest_queued"]

        rows.append(
            QueueStatus(
                capability=name,
                queued=states.get("queued", 0),
                blocked=states.get("blocked", 0),
                oldest_wait_s=round((now - oldest).total_seconds(), 1) if oldest else None,
                running=states.get("running", 0),
                workers=None if runners is None else len(mine),
                slots=None if runners is None else sum(r.concurrency for r in mine),
                finished_1h=sum(v for k, v in states.items() if k.startswith("finished_")),
                failed_1h=_ended(states, "failed", "timed_out"),
                errors_1h=_ended(states, "error"),
                p50_s=_percentile(durations, 50),
                p95_s=_percentile(durations, 95),
            )
        )
    return rows


def _ended(states: Mapping[str, int], *final: str) -> int:
    """Jobs of the window that ended in one of the ``final`` states."""
    return sum(states.get(f"finished_{state}", 0) for state in final)


def _percentile(values: list[float], pct: int) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return None
    rank = max(0, min(len(values) - 1, math.ceil(pct / 100 * len(values)) - 1))
    return round(values[rank], 2)
