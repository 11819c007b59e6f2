"""The read model of runners and queues for the CLI, the API and the metrics (jobs and
pipelines: ``job_views``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ci_pool.core.specs import JobState

if TYPE_CHECKING:
    # Types only: the API client (remote mode) uses these views without the store,
    # SQLAlchemy or Redis.
    from ci_pool.broker.runners import RunnerInfo
    from ci_pool.store.jobs import FinishedJobs, JobCounts

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
    counts: JobCounts,
    finished: Mapping[str, FinishedJobs],
    runners: list[RunnerInfo] | None,
    now: datetime,
) -> list[QueueStatus]:
    """One row per capability (configured or seen in the store), from the store's
    ``job_counts`` and ``finished_since`` and the live runners (None: the broker did not
    answer)."""
    rows = []
    active = {cap for cap, state in counts.by_state if state in _ACTIVE}
    for name in sorted(set(capabilities) | active | set(finished)):
        ended = finished.get(name)
        ended_states: Mapping[str, int] = ended.states if ended else {}
        mine = [r for r in runners or [] if r.capability == name]
        durations = sorted(ended.durations) if ended else []
        oldest = counts.oldest_queued.get(name)

        rows.append(
            QueueStatus(
                capability=name,
                queued=counts.of(name, JobState.QUEUED),
                blocked=counts.of(name, JobState.BLOCKED),
                oldest_wait_s=round((now - oldest).total_seconds(), 1) if oldest else None,
                running=counts.of(name, JobState.RUNNING),
                workers=None if runners is None else len(mine),
                slots=None if runners is None else sum(r.concurrency for r in mine),
                finished_1h=sum(ended_states.values()),
                failed_1h=_ended(ended_states, "failed", "timed_out"),
                errors_1h=_ended(ended_states, "error"),
                p50_s=_percentile(durations, 50),
                p95_s=_percentile(durations, 95),
            )
        )
    return rows


#: The states whose capability gets a ``status`` row even when none is configured.
_ACTIVE = frozenset(s.value for s in (JobState.QUEUED, JobState.RUNNING, JobState.BLOCKED))


def _ended(states: Mapping[str, int], *final: str) -> int:
    """Jobs of the window that ended in one of the ``final`` states."""
    return sum(states.get(state, 0) for state in final)


def _percentile(values: list[float], pct: int) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return None
    rank = max(0, min(len(values) - 1, math.ceil(pct / 100 * len(values)) - 1))
    return round(values[rank], 2)
