"""What a job's steps see: its expression context and its environment variables."""

from __future__ import annotations

from typing import Any

from ci_pool.core import scheduler
from ci_pool.core.specs import github_repository
from ci_pool.store import Store
from ci_pool.worker.attempt import Attempt


def expression_context(store: Store, att: Attempt) -> dict[str, Any]:
    """The expression context of this job: github, env, matrix, needs (steps grows)."""
    job = att.job
    ref = job.ref if job.ref.startswith("refs/") else f"refs/heads/{job.ref}"
    ctx: dict[str, Any] = {
        "github": {
            "ref": ref,
            "sha": att.evidence.commit_sha or job.commit_sha or "",
            "repository": github_repository(job.repo),
            "event_name": "push",
            "job": job.job_ref or job.id,
            "run_id": job.pipeline_id or job.id,
        },
        "env": {str(k): str(v) for k, v in job.env.items()},
        "matrix": dict(job.matrix or {}),
        "needs": {},
        "steps": {},
    }
    if job.pipeline_id:
        pipeline = store.get_pipeline(job.pipeline_id)
        ctx["github"]["event_name"] = pipeline.event
        rows = [scheduler.view(r) for r in store.pipeline_jobs(job.pipeline_id)]
        keys = set(job.needs or ())
        refs = {r.job_ref for r in rows if r.key in keys}
        ctx["needs"] = scheduler.needs_context(rows, refs)
    return ctx


def job_env(att: Attempt) -> dict[str, str]:
    """The job's environment: its own env, its secrets and the CI_POOL_* facts."""
    job = att.job
    return {
        **{str(k): str(v) for k, v in job.env.items()},
        **att.secrets,
        "CI": "true",
        "CI_POOL_JOB_ID": job.id,
        "CI_POOL_ATTEMPT": str(job.attempt),
        "CI_POOL_RUNNER_ID": att.runner_id,
        "CI_POOL_CAPABILITY": job.capability,
        "CI_POOL_REPO": job.repo,
        "CI_POOL_REF": job.ref,
        "CI_POOL_COMMIT_SHA": att.evidence.commit_sha or job.commit_sha or "",
    }
