"""Reading the pool: jobs, pipelines, runners, why a job waits, queue status, logs and artifacts."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from ci_pool.broker.logstream import follow_stream
from ci_pool.broker.runners import RunnerInfo, RunnerRegistry
from ci_pool.core.specs import (
    FINAL_STATES,
    JobState,
)
from ci_pool.exceptions import (
    InfraError,
    InputError,
    NotFound,
)
from ci_pool.service import waiting
from ci_pool.service.base import PoolBase
from ci_pool.service.views import QueueStatus, RunnerStatus, queue_statuses, runner_statuses
from ci_pool.store import Job
from ci_pool.store.models import Artifact
from ci_pool.store.models import Pipeline as PipelineRow


class Inspection(PoolBase):
    """Read-only views of the pool."""

    def pipeline(self, pipeline_id: str) -> tuple[PipelineRow, list[Job]]:
        return self.store.get_pipeline(pipeline_id), self.store.pipeline_jobs(pipeline_id)

    def get(self, job_id: str) -> Job:
        return self.store.get_job(job_id)

    def runners(self, capability: str | None = None) -> list[RunnerInfo]:
        return RunnerRegistry(self.redis, self.settings.runner_ttl).live(capability)

    def runner_statuses(self) -> list[RunnerStatus]:
        """Every runner heard from (live, then lost) with its state and running jobs."""
        registry = RunnerRegistry(self.redis, self.settings.runner_ttl)
        live, lost = registry.live(), registry.lost()
        return runner_statuses(live, lost, self.store.job_counts().running)

    def why_waiting(self, job: Job, visible: Callable[[Job], bool] | None = None) -> str | None:
        """Plain words on why a job has not started, or None if it is not waiting; with
        ``visible``, naming no other job it refuses."""
        return waiting.why_waiting(self, job, visible)

    def status(self) -> list[QueueStatus]:
        """Per capability: queue depth, oldest wait, running, workers, last hour's jobs."""
        now = datetime.now(UTC)
        counts = self.store.job_counts()
        finished = self.store.finished_since(now - timedelta(hours=1))
        try:
            runners: list[RunnerInfo] | None = self.runners()
        except redis.RedisError:
            runners = None
        return queue_statuses(self.settings.capabilities, counts, finished, runners, now)

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.2) -> Job:
        """Block until the job reaches a final state (or ``timeout`` seconds pass)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if JobState(job.state) in FINAL_STATES:
                return job
            if end is not None and time.monotonic() >= end:
                return job
            time.sleep(poll)

    def download_artifacts(self, job_id: str, dest: Path, attempt: int | None = None) -> list[Path]:
        """Copy a job's artifacts from the artifact store, verifying each sha256."""
        index = self.store.artifacts(job_id, attempt)
        if not index:
            expired = [e for e in self.store.expired_artifacts(job_id) if e.expired_at]
            if expired and (attempt is None or any(e.attempt == attempt for e in expired)):
                when = max(e.expired_at for e in expired if e.expired_at is not None)
                raise NotFound(
                    f"the artifacts of job {job_id} expired (removed {when:%Y-%m-%d %H:%M} UTC "
                    "after their retention); run the job again to make them anew"
                )
            raise NotFound(f"job {job_id} has no artifacts")
        copied = []
        for art in index:
            src = self.artifact_path(art)
            target = (dest / art.path).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise InputError(f"artifact path {art.path!r} leaves {dest}", field="dest")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(src, target)
            except OSError as exc:
                raise NotFound(
                    f"artifact {art.path} is missing from the artifact store: {exc}"
                ) from None
            if hashlib.sha256(target.read_bytes()).hexdigest() != art.sha256:
                raise InfraError(f"artifact {art.path} does not match its sha256; not trusted")
            copied.append(target)
        return copied

    def artifact_path(self, art: Artifact) -> Path:
        """Where the artifact store keeps one artifact."""
        root = self.settings.resolved_artifact_root / art.job_id / str(art.attempt)
        path = (root / art.path).resolve()
        if not path.is_relative_to(root.resolve()):
            raise InputError(f"artifact path {art.path!r} leaves the artifact store", field="path")
        return path

    def artifact(self, job_id: str, path: str, attempt: int | None = None) -> Artifact:
        """One artifact of the latest attempt that has it (or of ``attempt``)."""
        found = [a for a in self.store.artifacts(job_id, attempt) if a.path == path]
        if not found:
            raise NotFound(f"job {job_id} has no artifact {path!r}")
        return max(found, key=lambda a: a.attempt)

    def follow(self, job_id: str) -> Iterator[tuple[str | None, str]]:
        """(timestamp, line) as the lines happen; ends when the job is final and its stream
        is drained. Without a live stream the stored log is given once the job ends."""
        for item in self.follow_ticking(job_id):
            if item is not None:
                yield item

    def follow_ticking(self, job_id: str) -> Generator[tuple[str | None, str] | None]:
        """``follow``, plus None after each second without a line, so a reader can send a
        keep-alive or notice that its client left."""
        last = "0-0"
        attempt_seen: str | None = None
        capability = self.get(job_id).capability
        while True:
            got = False
            try:
                for entry_id, fields in follow_stream(self.redis, capability, job_id, last_id=last):
                    got = True
                    last = entry_id
                    if fields.get("a") != attempt_seen and attempt_seen is not None:
                        yield fields.get("t"), f"##[ci-pool] --- attempt {fields.get('a')} ---"
                    attempt_seen = fields.get("a")
                    if "l" in fields:
                        yield fields.get("t"), fields["l"]
            except redis.RedisError:  # no live stream: the stored log once the job ends
                while JobState(self.get(job_id).state) not in FINAL_STATES:
                    time.sleep(1.0)
                    yield None
                for line in self.store.read_log(job_id).splitlines():
                    yield None, line
                return
            if not got:
                job = self.get(job_id)
                if JobState(job.state) in FINAL_STATES:
                    if attempt_seen is None:
                        for line in self.store.read_log(job_id).splitlines():
                            yield None, line
                    return
                yield None
