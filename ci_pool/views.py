"""The public views of jobs and pipelines: the CLI's ``--json`` and the API's bodies."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ci_pool.store import Job
from ci_pool.store.models import Pipeline as PipelineRow

if TYPE_CHECKING:
    from ci_pool.pool import Pool

#: Keys of a job's view that only the detailed view (``show``) carries.
DETAIL_KEYS = ("waiting", "artifacts", "events")


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def job_dict(job: Job, pool: Pool | None = None) -> dict[str, Any]:
    """The public view of a job; with ``pool``, also why it waits, artifacts and history."""
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
    }
    if pool is not None:
        data["waiting"] = pool.why_waiting(job)
        data["artifacts"] = [
            {"path": a.path, "size": a.size, "sha256": a.sha256, "attempt": a.attempt}
            for a in pool.store.artifacts(job.id)
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
    return data


def summary(view: dict[str, Any]) -> dict[str, Any]:
    """A detailed job view cut down to the fields of ``job_dict(job)``."""
    return {k: v for k, v in view.items() if k not in DETAIL_KEYS}


def pipeline_dict(row: PipelineRow, jobs: list[Job]) -> dict[str, Any]:
    """The public view of a pipeline and each of its jobs."""
    return {
        "id": row.id,
        "name": row.name,
        "file": row.file,
        "state": row.state,
        "repo": row.repo,
        "ref": row.ref,
        "commit_sha": row.commit_sha,
        "created_at": row.created_at.isoformat(),
        "finished_at": _ts(row.finished_at),
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
            }
            for j in jobs
        ],
    }
