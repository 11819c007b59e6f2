"""Whose runner call this is: the registered runner, the pool it reaches, and the job
attempts it holds (every call about a job is refused unless its attempt runs under this
runner's lease); the bounds every upload is checked against."""

from __future__ import annotations

from dataclasses import dataclass

from ci_pool.core.specs import JobState
from ci_pool.exceptions import AccessDenied, NotFound, TooLarge
from ci_pool.service.pool import Pool
from ci_pool.store.identities import RunnerIdentity
from ci_pool.store.models import Job


@dataclass(frozen=True, slots=True)
class Stored:
    """A file an upload wrote: where, its size and sha256."""

    path: str
    size: int
    sha256: str


def artifact_parts(path: str) -> list[str] | None:
    """A stored artifact path's components, if it stays inside its directory (no ``..``,
    nothing absolute, no NUL or backslash, no empty or dot component), else None."""
    if not path or len(path) > 4096 or path.startswith("/") or "\0" in path or "\\" in path:
        return None
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return parts


def check_size(what: str, size: int, limit: int, setting: str = "") -> None:
    if size > limit:
        where = f" (setting {setting})" if setting else ""
        raise TooLarge(f"{what} is {size} bytes, over the limit of {limit}{where}", field=what)


class RunnerScope:
    """The runner ``runner``'s view of the pool ``pool``: its name and the jobs it holds."""

    def __init__(self, pool: Pool, runner: RunnerIdentity):
        self.pool, self.runner = pool, runner
        self.store, self.settings = pool.store, pool.settings

    @property
    def name(self) -> str:
        return self.runner.name

    # -- scope --

    def held(self, job_id: str, attempt: int) -> Job:
        """The job, when its attempt ``attempt`` runs under this runner's lease."""
        refused = AccessDenied(
            f"job {job_id} attempt {attempt} is not claimed by runner {self.name}",
            field="job_id",
        )
        try:
            job = self.store.get_job(job_id)
        except NotFound:
            raise refused from None
        if (
            job.state is not JobState.RUNNING
            or job.attempt != attempt
            or job.runner_id != self.name
        ):
            raise refused
        return job

    def own_job(self, job_id: str) -> Job:
        """A job whose latest attempt this runner claimed (running or ended)."""
        try:
            job = self.store.get_job(job_id)
        except NotFound:
            job = None
        if job is None or job.runner_id != self.name:
            raise AccessDenied(f"job {job_id} is not claimed by runner {self.name}", field="job_id")
        return job
