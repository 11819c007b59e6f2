"""The files a runner moves through the API: artifacts (uploaded, indexed, read back by
later jobs of the run), named artifact sets and their retention, and the pool cache
scoped to the job's repository. Each body is checked (bounded, sha256, path rules) before
it reaches the pool's stores."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from ci_pool import defaults
from ci_pool.cachestore import CacheBackend, cache_repo_prefix, open_backend
from ci_pool.exceptions import AccessDenied, InputError, NotFound, TooLarge
from ci_pool.service.runner_scope import RunnerScope, Stored, artifact_parts, check_size
from ci_pool.store.artifact_sets import ArtifactSet
from ci_pool.store.models import Artifact, utcnow


class RunnerFiles(RunnerScope):
    """Artifact, artifact-set and cache calls of one registered runner."""

    # -- artifacts --

    def attempt_dir(self, job_id: str, attempt: int) -> Path:
        return self.settings.resolved_artifact_root / job_id / str(attempt)

    def check_upload(
        self, job_id: str, attempt: int, path: str, name: str | None, size: int
    ) -> list[str]:
        """Before the body is read: the path's parts, once the path, the name and the
        attempt's total size are within bounds."""
        self.held(job_id, attempt)
        parts = artifact_parts(path)
        if parts is None:
            raise InputError(
                f"artifact path {path[:200]!r} is refused: use a relative path without "
                "'..', '.', empty parts, backslashes or NUL",
                field="path",
            )
        if name is not None and (len(parts) < 2 or parts[0] != name):
            raise InputError(f"artifact {name!r}: its files go under {name}/", field="path")
        rows = self.store.artifacts(job_id, attempt)
        if len(rows) >= self.settings.artifact_max_files:
            raise TooLarge(
                f"attempt already has {len(rows)} artifact files, the limit "
                "(setting artifact_max_files)",
                field="path",
            )
        used = sum(r.size for r in rows)
        check_size("artifacts", used + size, self.settings.artifact_max_bytes, "artifact_max_bytes")
        return parts

    def store_upload(
        self, job_id: str, attempt: int, parts: list[str], name: str | None, tmp: Path, got: Stored
    ) -> None:
        """Move a checked upload into the artifact store and index it."""
        self.held(job_id, attempt)
        base = self.attempt_dir(job_id, attempt)
        target = base.joinpath(*parts)
        for parent in reversed(target.relative_to(base).parents):
            if (base / parent).is_symlink():
                raise InputError(f"artifact path {got.path!r} is refused", field="path")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            raise InputError(
                f"artifact {got.path} of this attempt was stored already", field="path"
            )
        os.replace(tmp, target)
        try:
            self.store.add_artifacts(job_id, attempt, [got], name=name)
        except IntegrityError:
            target.unlink(missing_ok=True)
            raise InputError(
                f"artifact {got.path} of this attempt was stored already", field="path"
            ) from None

    def artifact_of_run(self, job_id: str, attempt: int, artifact_id: int) -> tuple[Artifact, Path]:
        """An artifact of the same pipeline (or the job itself) and its stored file."""
        job = self.held(job_id, attempt)
        row = self.store.get_artifact(artifact_id)
        owner = self.store.get_job(row.job_id) if row is not None else None
        same = owner is not None and (
            owner.id == job.id
            or (job.pipeline_id is not None and owner.pipeline_id == job.pipeline_id)
        )
        parts = artifact_parts(row.path) if row is not None else None
        if row is None or not same or parts is None:
            raise NotFound(f"no artifact {artifact_id} in the run of job {job_id}")
        return row, self.attempt_dir(row.job_id, row.attempt).joinpath(*parts)

    # -- artifact sets: names held per run, retention --

    def _expiry(self, asked: datetime) -> datetime:
        """``asked``, at most the pool's longest retention from now (no zone: UTC)."""
        if asked.tzinfo is None:
            asked = asked.replace(tzinfo=UTC)
        longest = utcnow() + timedelta(days=self.settings.artifact_retention_max_days)
        return min(asked, longest)

    def claim_artifact(
        self, job_id: str, attempt: int, name: str, expires_at: datetime, overwrite: bool
    ) -> str | None:
        job = self.held(job_id, attempt)
        return self.store.claim_artifact(
            job.pipeline_id or job.id,
            job.id,
            attempt,
            name,
            self._expiry(expires_at),
            overwrite=overwrite,
        )

    def release_artifact(self, job_id: str, attempt: int, name: str) -> None:
        job = self.held(job_id, attempt)
        self.store.release_artifact(job.pipeline_id or job.id, name, job.id, attempt)

    def add_artifact_set(self, job_id: str, attempt: int, expires_at: datetime) -> None:
        job = self.held(job_id, attempt)
        self.store.add_artifact_set(
            job.pipeline_id or job.id, job.id, attempt, self._expiry(expires_at)
        )

    def expired_named(self, job_id: str, attempt: int, name: str) -> ArtifactSet | None:
        job = self.held(job_id, attempt)
        return self.store.expired_named(job.pipeline_id or job.id, name)

    def remove_artifact(self, job_id: str, attempt: int, artifact_id: int) -> None:
        row, path = self.artifact_of_run(job_id, attempt, artifact_id)
        path.unlink(missing_ok=True)
        self.store.remove_artifacts([row.id])

    # -- the pool cache, scoped to the job's repository --

    def cache(self, job_id: str, attempt: int, name: str) -> CacheBackend:
        """The pool cache, once ``name`` (a name or a prefix) is within the job's repository."""
        job = self.held(job_id, attempt)
        scope = cache_repo_prefix(job.repo)
        if not name.startswith(scope) or ".." in name.split("/") or len(name) > 1024:
            raise AccessDenied(
                f"cache name {name[:120]!r} is outside the cache of job {job_id}'s repository "
                f"(its names start {scope})",
                field="name",
            )
        return open_backend(self.settings)

    def cache_put(self, backend: CacheBackend, name: str, archive: Path) -> None:
        backend.put(name, archive)
        backend.evict(self.settings.cache_max_bytes, defaults.CACHE_LAYOUT)
