"""``/v1/runner``: how a registered runner reaches the store (claim, heartbeat, log chunks,
outcome, outputs, summaries, annotations, artifacts, the pool cache). Authenticated by the
runner's own credential only (``circ_...``), never by an API token; every call about a
job is scoped server-side (``service.runner_io``)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from ci_pool import defaults
from ci_pool.api.deps import PoolDep, StoreDep
from ci_pool.api.errors import ApiError
from ci_pool.api.routes_jobs import ERRORS
from ci_pool.core.commands import Annotation
from ci_pool.core.evidence import Evidence
from ci_pool.core.specs import JobState
from ci_pool.exceptions import InputError, NotFound, TooLarge
from ci_pool.service.runner_io import RunnerIO, Stored, check_size
from ci_pool.store.identities import CREDENTIAL_PREFIX, RunnerIdentity, verify_runner
from ci_pool.store.lifecycle import FinalChunk
from ci_pool.store.wire import dump_closed, dump_row

router = APIRouter(prefix=defaults.RUNNER_API_PREFIX, responses=ERRORS, tags=["runner"])
_bearer = HTTPBearer(auto_error=False, description="The runner's own credential (circ_...).")


def current_runner(
    store: StoreDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> RunnerIdentity:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(
            401,
            "unauthorized",
            "runner routes need an Authorization: Bearer <runner credential> header",
            headers=challenge,
        )
    if not credentials.credentials.startswith(CREDENTIAL_PREFIX):
        raise ApiError(
            401,
            "unauthorized",
            f"runner routes take a runner credential ({CREDENTIAL_PREFIX}...), never an API token",
            headers=challenge,
        )
    row = verify_runner(store, credentials.credentials)
    if row is None:
        raise ApiError(
            401,
            "unauthorized",
            "the runner credential is revoked or unknown; this runner is cut off from the pool",
            headers=challenge,
        )
    return row


def runner_io(
    pool: PoolDep, runner: Annotated[RunnerIdentity, Depends(current_runner)]
) -> RunnerIO:
    return RunnerIO(pool, runner)


RunnerDep = Annotated[RunnerIO, Depends(runner_io)]
Attempt = "/jobs/{job_id}/attempts/{attempt}"


class LeaseBody(BaseModel):
    lease_ttl: float = Field(gt=0, le=86_400)


class LogBody(BaseModel):
    seq: int = Field(ge=0)
    data: str


class OutcomeBody(BaseModel):
    state: JobState
    reason: str | None = Field(default=None, max_length=defaults.RUNNER_REASON_MAX)
    exit_code: int | None = None
    evidence: Evidence | None = None
    #: The attempt's last log chunk, stored in the outcome's transaction.
    log: LogBody | None = None


class OutputsBody(BaseModel):
    outputs: dict[Annotated[str, Field(max_length=200)], str] = Field(max_length=1000)


class SummaryBody(BaseModel):
    step: int = Field(ge=0, le=100_000)
    name: str = Field(max_length=500)
    markdown: str


class AnnotationsBody(BaseModel):
    annotations: list[Annotation]


@router.get("/self")
def whoami(io: RunnerDep, since: datetime | None = None) -> dict[str, Any]:
    """The runner's registered name and capabilities, its running jobs and its claims
    (all, or since ``since``: a runner name outlives its processes)."""
    return io.summary(since)


class ExecRequestBody(BaseModel):
    request: str = Field(min_length=1, max_length=200)


@router.post("/exec-requests/take")
def take_exec_request(body: ExecRequestBody, io: RunnerDep) -> dict[str, Any]:
    """The diagnostic command of a ``runner exec`` request made for this runner, taken once:
    ``argv`` and ``timeout``; 404 when it is unknown, another runner's, taken or expired."""
    taken = io.take_exec_request(body.request)
    if taken is None:
        raise NotFound(f"no exec request for runner {io.name} (unknown, taken already or expired)")
    return {"argv": taken[0], "timeout": taken[1]}


@router.post("/jobs/{job_id}/claim")
def claim(job_id: str, body: LeaseBody, io: RunnerDep) -> dict[str, Any]:
    """Fenced claim under the runner's registered name (a runner id in a body is never
    read); ``job`` null when there was nothing to claim."""
    got = io.claim(job_id, body.lease_ttl)
    if got is None:
        return {"job": None, "took_over": None}
    return {"job": dump_row(got.job), "took_over": got.took_over}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, io: RunnerDep) -> dict[str, Any]:
    """A job this runner claimed last (to judge what its containers belong to)."""
    return {"job": dump_row(io.own_job(job_id))}


@router.post(Attempt + "/heartbeat")
def heartbeat(job_id: str, attempt: int, body: LeaseBody, io: RunnerDep) -> dict[str, Any]:
    return {"cancel_requested": io.heartbeat(job_id, attempt, body.lease_ttl)}


@router.post(Attempt + "/log", status_code=204)
def append_log(job_id: str, attempt: int, body: LogBody, io: RunnerDep) -> Response:
    io.append_log(job_id, attempt, body.seq, body.data)
    return Response(status_code=204)


@router.post(Attempt + "/outcome")
def outcome(job_id: str, attempt: int, body: OutcomeBody, io: RunnerDep) -> dict[str, Any]:
    """Close the attempt; the API queues the retry or the pipeline's next jobs."""
    last = None if body.log is None else FinalChunk(body.log.seq, body.log.data)
    done, after = io.close(
        job_id, attempt, body.state, body.reason, body.exit_code, body.evidence, last
    )
    return {
        # What the runner needs of the job (its state), not the whole row; runners that
        # read a whole row from here get a job with these columns.
        "job": dump_closed(done),
        "next": after.next.value,
        "delay": after.delay,
        "reason": after.reason,
    }


@router.put(Attempt + "/outputs", status_code=204)
def set_outputs(job_id: str, attempt: int, body: OutputsBody, io: RunnerDep) -> Response:
    io.set_outputs(job_id, attempt, body.outputs)
    return Response(status_code=204)


@router.post(Attempt + "/summaries", status_code=204)
def add_summary(job_id: str, attempt: int, body: SummaryBody, io: RunnerDep) -> Response:
    io.add_summary(job_id, attempt, body.step, body.name, body.markdown)
    return Response(status_code=204)


@router.post(Attempt + "/annotations", status_code=204)
def add_annotations(job_id: str, attempt: int, body: AnnotationsBody, io: RunnerDep) -> Response:
    io.add_annotations(job_id, attempt, body.annotations)
    return Response(status_code=204)


@router.get(Attempt + "/pipeline")
def pipeline(job_id: str, attempt: int, io: RunnerDep) -> dict[str, Any]:
    """The job's pipeline and its jobs (for ``needs``, ``strategy`` and ``github``)."""
    row, jobs = io.pipeline(job_id, attempt)
    return {"pipeline": dump_row(row), "jobs": [dump_row(j) for j in jobs]}


@router.get(Attempt + "/sync")
def sync_payload(job_id: str, attempt: int, io: RunnerDep) -> Response:
    return Response(io.sync_payload(job_id, attempt), media_type="application/octet-stream")


# -- artifacts --


@router.get(Attempt + "/artifacts")
def artifacts(job_id: str, attempt: int, io: RunnerDep) -> dict[str, Any]:
    io.held(job_id, attempt)
    return {"artifacts": [dump_row(a) for a in io.store.artifacts(job_id, attempt)]}


@router.get(Attempt + "/named-artifacts")
def named_artifacts(
    job_id: str, attempt: int, io: RunnerDep, name: str = Query(max_length=255)
) -> dict[str, Any]:
    job = io.held(job_id, attempt)
    rows = io.store.named_artifacts(job.pipeline_id, job.id, name)
    return {"artifacts": [dump_row(a) for a in rows]}


@router.get(Attempt + "/artifact-names")
def artifact_names(job_id: str, attempt: int, io: RunnerDep) -> dict[str, Any]:
    job = io.held(job_id, attempt)
    return {"names": io.store.artifact_names(job.pipeline_id, job.id)}


class ArtifactClaimBody(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    expires_at: datetime
    overwrite: bool = False


class ArtifactSetBody(BaseModel):
    expires_at: datetime


@router.post(Attempt + "/artifact-claims")
def claim_artifact(
    job_id: str, attempt: int, body: ArtifactClaimBody, io: RunnerDep
) -> dict[str, Any]:
    """Hold an artifact name in the job's run; ``holder`` names the job holding it when
    this attempt may not."""
    holder = io.claim_artifact(job_id, attempt, body.name, body.expires_at, body.overwrite)
    return {"holder": holder}


@router.delete(Attempt + "/artifact-claims", status_code=204)
def release_artifact(
    job_id: str, attempt: int, io: RunnerDep, name: str = Query(max_length=255)
) -> Response:
    io.release_artifact(job_id, attempt, name)
    return Response(status_code=204)


@router.post(Attempt + "/artifact-sets", status_code=204)
def add_artifact_set(job_id: str, attempt: int, body: ArtifactSetBody, io: RunnerDep) -> Response:
    """Record the attempt's collected (unnamed) files with their expiry."""
    io.add_artifact_set(job_id, attempt, body.expires_at)
    return Response(status_code=204)


@router.get(Attempt + "/expired-artifacts")
def expired_artifact(
    job_id: str, attempt: int, io: RunnerDep, name: str = Query(max_length=255)
) -> dict[str, Any]:
    row = io.expired_named(job_id, attempt, name)
    return {"expired": None if row is None else dump_row(row)}


@router.get(Attempt + "/artifact-files/{artifact_id}")
def artifact_file(job_id: str, attempt: int, artifact_id: int, io: RunnerDep) -> FileResponse:
    """A stored file of an artifact of the same pipeline (download-artifact)."""
    _, path = io.artifact_of_run(job_id, attempt, artifact_id)
    if not path.is_file() or path.is_symlink():
        raise NotFound(f"artifact {artifact_id}: its file is missing from the store")
    return FileResponse(path, media_type="application/octet-stream")


@router.delete(Attempt + "/artifacts/{artifact_id}", status_code=204)
def remove_artifact(job_id: str, attempt: int, artifact_id: int, io: RunnerDep) -> Response:
    """Drop an artifact of the run being replaced (upload-artifact ``overwrite``)."""
    io.remove_artifact(job_id, attempt, artifact_id)
    return Response(status_code=204)


async def _receive(request: Request, into: Path, limit: int, what: str) -> Stored:
    """The request body written to ``into``, bounded by ``limit`` as it streams."""
    digest, size = hashlib.sha256(), 0
    with into.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            check_size(what, size, limit)
            digest.update(chunk)
            out.write(chunk)
    return Stored("", size, digest.hexdigest())


def _temp_in(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".upload-")
    os.close(fd)
    return Path(name)


@router.put(Attempt + "/artifacts", status_code=201)
async def upload_artifact(
    request: Request,
    job_id: str,
    attempt: int,
    io: RunnerDep,
    path: str = Query(max_length=4096),
    sha256: str = Query(pattern="^[0-9a-f]{64}$"),
    size: int = Query(ge=0),
    name: str | None = Query(default=None, max_length=defaults.ARTIFACT_NAME_MAX),
) -> dict[str, Any]:
    """One artifact file as the body: bounded by ``artifact_max_bytes`` for the attempt,
    its sha256 checked here, its path checked (no ``..``, nothing absolute)."""
    parts = await run_in_threadpool(io.check_upload, job_id, attempt, path, name, size)
    tmp = await run_in_threadpool(_temp_in, io.settings.resolved_artifact_root / ".uploads")
    try:
        got = await _receive(request, tmp, size, "artifact")
        if got.size != size or got.sha256 != sha256:
            raise InputError(
                f"artifact {path}: the body ({got.size} bytes, sha256 {got.sha256}) does not "
                f"match what was declared ({size} bytes, sha256 {sha256}); not stored",
                field="sha256",
            )
        stored = Stored(path, got.size, got.sha256)
        await run_in_threadpool(io.store_upload, job_id, attempt, parts, name, tmp, stored)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": path, "size": size, "sha256": sha256}


# -- the pool cache --


@router.get(Attempt + "/cache")
def cache_find(
    job_id: str, attempt: int, io: RunnerDep, prefix: str = Query(max_length=1024)
) -> dict[str, Any]:
    entries = io.cache(job_id, attempt, prefix).find(prefix)
    return {"entries": [{"name": e.name, "size": e.size, "used_at": e.used_at} for e in entries]}


@router.get(Attempt + "/cache/archive")
def cache_fetch(
    job_id: str, attempt: int, io: RunnerDep, name: str = Query(max_length=1024)
) -> Response:
    backend = io.cache(job_id, attempt, name)
    tmp = _temp_in(io.settings.home / "uploads")
    with tmp.open("wb") as out:
        found = backend.fetch(name, out)
    if not found:
        tmp.unlink(missing_ok=True)
        raise NotFound(f"no cache entry {name!r}")
    return FileResponse(
        tmp,
        media_type="application/octet-stream",
        background=BackgroundTask(tmp.unlink, missing_ok=True),
    )


@router.put(Attempt + "/cache/archive", status_code=204)
async def cache_put(
    request: Request,
    job_id: str,
    attempt: int,
    io: RunnerDep,
    name: str = Query(max_length=1024),
) -> Response:
    backend = await run_in_threadpool(io.cache, job_id, attempt, name)
    tmp = await run_in_threadpool(_temp_in, io.settings.home / "uploads")
    try:
        limit = io.settings.cache_entry_max_bytes
        try:
            await _receive(request, tmp, limit, "archive")
        except TooLarge as exc:
            raise TooLarge(f"{exc} (setting cache_entry_max_bytes)", field="archive") from None
        await run_in_threadpool(io.cache_put, backend, name, tmp)
    finally:
        tmp.unlink(missing_ok=True)
    return Response(status_code=204)


@router.post(Attempt + "/cache/touch", status_code=204)
def cache_touch(
    job_id: str, attempt: int, io: RunnerDep, name: str = Query(max_length=1024)
) -> Response:
    io.cache(job_id, attempt, name).touch(name)
    return Response(status_code=204)


@router.delete(Attempt + "/cache/archive", status_code=204)
def cache_delete(
    job_id: str, attempt: int, io: RunnerDep, name: str = Query(max_length=1024)
) -> Response:
    io.cache(job_id, attempt, name).delete(name)
    return Response(status_code=204)
