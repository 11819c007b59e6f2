"""``actions/upload-artifact`` and ``actions/download-artifact``, built in: named artifacts
in the pool's artifact store, found by name by the other jobs of the same pipeline.

Uploading reads the workspace the way job-declared artifacts are collected
(``worker.artifacts``: no symlink followed). Downloading writes into the workspace through
a held directory fd, creating every directory and file itself and never following a name
the job made; the stored names are checked again (no ``..``, nothing absolute)."""

from __future__ import annotations

import hashlib
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from ci_pool import defaults
from ci_pool.core.globs import glob_match
from ci_pool.exceptions import ActionError, JobFileRefused
from ci_pool.store.models import utcnow
from ci_pool.worker import artifacts
from ci_pool.worker.actions.call import ActionCall, builtin
from ci_pool.worker.actions.workspace_paths import Paths, workspace_paths
from ci_pool.worker.api_store import ApiRunnerStore
from ci_pool.worker.jobfiles import JobDir, safe_parts
from ci_pool.worker.runner_store import RunnerStore

_NAME_FORBIDDEN = set('":<>|*?\\/\r\n\0')
_NO_FILES = ("warn", "error", "ignore")


def _check_name(name: str, what: str = "name") -> str:
    """An artifact name as Actions accepts it: a single path component."""
    bad = sorted(_NAME_FORBIDDEN & set(name))
    if not name or name in (".", "..") or bad or len(name) > defaults.ARTIFACT_NAME_MAX:
        raise ActionError(
            f"input {what}: {name[:80]!r} is not a valid artifact name; use up to "
            f'{defaults.ARTIFACT_NAME_MAX} characters without / \\ " : < > | * ? or '
            "line breaks"
        )
    return name


def _flag(call: ActionCall, name: str, default: bool = False) -> bool:
    value = call.input(name).strip().lower()
    if not value:
        return default
    if value in ("true", "false"):
        return value == "true"
    raise ActionError(f"input {name}: {value!r} is not true or false")


def _store(call: ActionCall) -> RunnerStore:
    return call.files.store


def _open_stored(call: ActionCall, src: Path, row: Any) -> IO[bytes]:
    """A stored artifact file: from the pool's artifact root, or through the API."""
    store = _store(call)
    if isinstance(store, ApiRunnerStore):
        return store.open_artifact(call.att.job.id, row)
    return src.open("rb")


def _artifact_root(call: ActionCall) -> Path:
    assert call.att.settings is not None
    return call.att.settings.resolved_artifact_root


def _workspace(call: ActionCall) -> Path:
    if call.att.workspace is None:
        raise ActionError("this job has no workspace on the runner")
    return call.att.workspace


@builtin(
    "actions/upload-artifact",
    # compression-level only tunes how the real action packs its upload.
    inputs=(
        "name",
        "path",
        "if-no-files-found",
        "retention-days",
        "overwrite",
        "compression-level",
    ),
)
def upload(call: ActionCall) -> int:
    """Store the files ``path`` selects as the artifact ``name`` of this job attempt."""
    settings = call.att.settings
    assert settings is not None
    job, store = call.att.job, _store(call)
    name = _check_name(call.input("name") or "artifact")
    when_none = call.input("if-no-files-found").strip().lower() or "warn"
    if when_none not in _NO_FILES:
        raise ActionError(
            f"input if-no-files-found: {when_none!r} is not one of warn, error, ignore"
        )
    retention = call.input("retention-days").strip()
    if retention and not retention.isdigit():
        raise ActionError(f"input retention-days: {retention!r} is not a number of days")
    days = settings.artifact_days(int(retention) if retention else None)
    overwrite = _flag(call, "overwrite")
    paths = workspace_paths(call, call.input("path"), "path")
    run_id = job.pipeline_id or job.id
    expires = utcnow() + timedelta(days=days)
    holder = store.claim_artifact(run_id, job.id, job.attempt, name, expires, overwrite=overwrite)
    existing = [
        a
        for a in store.named_artifacts(job.pipeline_id, job.id, name)
        if not (a.job_id == job.id and a.attempt != job.attempt)  # an earlier attempt's
    ]
    if holder is not None or (existing and not overwrite):
        if holder is None:
            store.release_artifact(run_id, name, job.id, job.attempt)
        raise ActionError(
            f"an artifact named {name!r} was already uploaded in this run (job "
            f"{holder or existing[0].job_id}); set overwrite: true to replace it or choose "
            "another name"
        )
    try:
        return _upload(call, name, paths, when_none, existing, (days, expires))
    except BaseException:
        if not store.named_artifacts(job.pipeline_id, job.id, name):
            store.release_artifact(run_id, name, job.id, job.attempt)
        raise


def _upload(
    call: ActionCall,
    name: str,
    paths: Paths,
    when_none: str,
    existing: list[Any],
    kept: tuple[int, datetime],
) -> int:
    """Collect and index the files of an upload whose name this attempt holds, kept
    ``kept`` (days, until)."""
    settings = call.att.settings
    assert settings is not None
    job, store = call.att.job, _store(call)
    days, expires = kept
    _remove(call, existing)
    already = store.artifacts(job.id, job.attempt)
    used = sum(a.size for a in already)
    sel = artifacts.Selection(
        patterns=paths.include,
        exclude=paths.exclude,
        base=paths.base,
        max_files=settings.artifact_max_files,
    )
    dest = _artifact_root(call) / job.id / str(job.attempt) / name
    found = artifacts.collect_selection(
        _workspace(call), sel, dest, max(0, settings.artifact_max_bytes - used)
    )
    for problem in found.problems:
        if not problem.endswith(": no file matched"):
            call.line(f"##[warning]{problem}")
    if not found.files:
        shutil.rmtree(dest, ignore_errors=True)
        store.release_artifact(job.pipeline_id or job.id, name, job.id, job.attempt)
        message = f"No files were found with the provided path: {call.input('path').strip()}"
        if when_none == "error":
            raise ActionError(f"{message}. No artifacts will be uploaded.")
        if when_none == "warn":
            call.line(f"##[warning]{message}. No artifacts will be uploaded.")
        return 0
    stored = [artifacts.ArtifactFile(f"{name}/{f.path}", f.size, f.sha256) for f in found.files]
    store.add_artifacts(job.id, job.attempt, stored, name=name)
    call.att.note_artifacts(stored)
    total = sum(f.size for f in stored)
    call.line(f"artifact {name}: {len(stored)} files, {total} bytes uploaded")
    call.line(f"kept {days} day(s), until {expires:%Y-%m-%d %H:%M} UTC")
    call.outputs["artifact-id"] = f"{job.id}/{job.attempt}/{name}"
    public = settings.public_url.rstrip("/")
    call.outputs["artifact-url"] = (
        f"{public}/jobs/{job.id}/artifacts?attempt={job.attempt}" if public else ""
    )
    call.outputs["artifact-digest"] = _digest(stored)
    return 0


def _digest(files: list[artifacts.ArtifactFile]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.path}\0{f.sha256}\n".encode())
    return h.hexdigest()


def _remove(call: ActionCall, rows: list[Any]) -> None:
    """Drop an artifact being replaced (``overwrite: true``): its files and index rows."""
    root = _artifact_root(call)
    for row in rows:
        parts = safe_parts(row.path)
        if parts is not None:
            (root / row.job_id / str(row.attempt) / "/".join(parts)).unlink(missing_ok=True)
    _store(call).remove_artifacts(r.id for r in rows)


@builtin("actions/download-artifact", inputs=("name", "path", "pattern", "merge-multiple"))
def download(call: ActionCall) -> int:
    """Write the artifact ``name`` (or all, or those ``pattern`` matches) of this run into
    the workspace at ``path``."""
    job, store = call.att.job, _store(call)
    name = call.input("name").strip()
    pattern = call.input("pattern").strip()
    if len(pattern) > defaults.GLOB_MAX_LENGTH:
        raise ActionError(f"input pattern: longer than {defaults.GLOB_MAX_LENGTH} characters")
    merge = _flag(call, "merge-multiple")
    target = workspace_paths(call, call.input("path") or ".", "path", single=True).base
    if name:
        names = [_check_name(name)]
    else:
        names = [n for n in store.artifact_names(job.pipeline_id, job.id)]
        if pattern:
            names = [n for n in names if glob_match(pattern, n)]
    total = 0
    with JobDir(_workspace(call).resolve()) as wdir:
        for art in names:
            rows = store.named_artifacts(job.pipeline_id, job.id, art)
            if not rows:
                gone = store.expired_named(job.pipeline_id or job.id, art) if name else None
                if gone is not None and gone.expired_at is not None:
                    raise ActionError(
                        f"artifact {art!r} expired: its retention ended and it was removed "
                        f"on {gone.expired_at:%Y-%m-%d %H:%M} UTC; upload it again (re-run "
                        f"job {gone.job_id}) or raise its retention-days"
                    )
                if name:
                    raise ActionError(
                        f"no artifact named {art!r} in this run; uploaded here: "
                        f"{', '.join(store.artifact_names(job.pipeline_id, job.id)) or 'none'}"
                    )
                continue
            # One artifact by name goes to ``path``; several go to ``path/<name>`` unless
            # merged.
            where = target if (name or merge) else "/".join(p for p in (target, art) if p)
            total += _write_artifact(call, wdir, rows, art, where)
    call.outputs["download-path"] = str(Path(call.ctx["github"]["workspace"]) / target)
    call.line(f"downloaded {len(names)} artifact(s), {total} bytes, to {target or '.'}")
    return 0


def _write_artifact(call: ActionCall, wdir: JobDir, rows: list[Any], name: str, where: str) -> int:
    """Copy one artifact's files from the store under ``where`` (workspace-relative)."""
    root = _artifact_root(call)
    total = 0
    for row in rows:
        parts = safe_parts(row.path)
        if parts is None or parts[0] != name or len(parts) < 2:
            raise ActionError(f"artifact {name}: stored path {row.path!r} is refused")
        rel = "/".join(parts[1:])
        src = root / row.job_id / str(row.attempt) / "/".join(parts)
        dest = f"{where}/{rel}" if where else rel
        try:
            with _open_stored(call, src, row) as fh:
                size, sha256 = wdir.write_file(dest, fh, row.size)
        except OSError as exc:
            raise ActionError(f"artifact {name}: {rel} is missing from the store ({exc})") from None
        except JobFileRefused as exc:
            raise ActionError(f"artifact {name}: {exc}; not written") from None
        if (size, sha256) != (row.size, row.sha256):
            raise ActionError(f"artifact {name}: {rel} does not match its sha256; not trusted")
        total += size
    return total
