"""Artifact retention: an artifact set past its expiry (upload-artifact's
``retention-days``, else the pool's ``artifact_retention_days``, at most
``artifact_retention_max_days``) loses its files and file rows at the periodic sweep; its
set row stays, marked expired, for ``show``, the API and download-artifact to say so."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime
from pathlib import Path

from ci_pool.exceptions import CIPoolError
from ci_pool.service.inspection import Inspection
from ci_pool.store.models import utcnow

log = logging.getLogger(__name__)


def sweep_expired_artifacts(pool: Inspection, now: datetime | None = None) -> int:
    """Remove the artifact sets past their expiry (files, then rows); how many."""
    root = pool.settings.resolved_artifact_root
    done = 0
    for row in pool.store.due_artifact_sets(now or utcnow()):
        for art in pool.store.artifact_set_files(row):
            try:
                pool.artifact_path(art).unlink(missing_ok=True)
            except (CIPoolError, OSError) as exc:
                log.warning("artifact %s of job %s: not removed (%s)", art.path, art.job_id, exc)
        attempt_dir = root / row.job_id / str(row.attempt)
        if row.name and "/" not in row.name and row.name not in (".", ".."):
            shutil.rmtree(attempt_dir / row.name, ignore_errors=True)
        _prune_empty(attempt_dir, root)
        pool.store.expire_artifact_set(row)
        done += 1
    return done


def _prune_empty(top: Path, root: Path) -> None:
    """Remove the empty directories under and up from ``top``, never ``root`` itself."""
    if not top.is_dir() or top.is_symlink():
        return
    for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            try:
                path.rmdir()
            except OSError:
                pass
    for path in (top, top.parent):
        if path != root and path.is_relative_to(root):
            try:
                path.rmdir()
            except OSError:
                return
