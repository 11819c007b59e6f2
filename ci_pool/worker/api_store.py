"""``ApiRunnerStore``: the worker's store calls made to the API's runner routes
(``/v1/runner``) with the runner's own credential (``Authorization: Bearer circ_...``).

Every call about a job names the job and the attempt this process claimed; the API
refuses the others. A 401 means the credential was revoked (or never was): every call
then raises ``RunnerCutOff`` and the worker stops taking jobs."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

import httpx

from ci_pool import __version__, defaults
from ci_pool.addresses import check_api_url
from ci_pool.apierrors import error_body
from ci_pool.core.retry import AfterAttempt, Next
from ci_pool.core.specs import JobState
from ci_pool.exceptions import (
    AccessDenied,
    ConfigError,
    InfraError,
    InputError,
    NotFound,
    RunnerCutOff,
)
from ci_pool.settings import Settings
from ci_pool.store.artifact_sets import ArtifactSet
from ci_pool.store.lifecycle import Claim
from ci_pool.store.models import Artifact, Job, Pipeline
from ci_pool.store.wire import load_row
from ci_pool.tls import client_verify, untrusted_message

log = logging.getLogger(__name__)


class ApiRunnerStore:
    """The ``RunnerStore`` of a runner that holds no database URL."""

    settles_outcomes = True

    def __init__(self, settings: Settings, client: httpx.Client | None = None):
        credential = settings.runner_credential_value()
        if not credential:
            raise ConfigError("no runner credential is set", key="runner_credential")
        self.settings = settings
        self.base = check_api_url(settings.api_url) + defaults.RUNNER_API_PREFIX
        self.client = client or httpx.Client(
            timeout=defaults.RUNNER_API_TIMEOUT,
            headers={
                "Authorization": f"Bearer {credential}",
                "User-Agent": f"ci-pool-runner/{__version__}",
            },
            follow_redirects=False,
            verify=client_verify(settings, self.base),
        )
        # One line per call at INFO would bury the worker's own log.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        #: Jobs this process claimed and has not closed, by id (their attempt is current).
        self._claims: dict[str, Job] = {}
        self._lock = threading.Lock()

    # -- plumbing --

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            res = self.client.request(method, self.base + path, **kw)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if res.status_code >= 400:
            self._raise_for(res)
        return res

    def _unreachable(self, exc: Exception) -> InfraError:
        untrusted = untrusted_message(self.settings.api_url, exc)
        if untrusted is not None:
            return InfraError(untrusted)
        return InfraError(f"the pool API at {self.settings.api_url} did not answer: {exc}")

    def _attempt(self, job_id: str) -> str:
        with self._lock:
            job = self._claims.get(job_id)
        if job is None:
            raise AccessDenied(f"job {job_id} is not claimed by this runner process")
        return f"/jobs/{job_id}/attempts/{job.attempt}"

    def _in_pipeline(self, pipeline_id: str) -> str:
        with self._lock:
            held = [j for j in self._claims.values() if j.pipeline_id == pipeline_id]
        if not held:
            raise AccessDenied(f"no job of pipeline {pipeline_id} is claimed by this runner")
        return f"/jobs/{held[-1].id}/attempts/{held[-1].attempt}"

    def _in_run(self, run_id: str) -> str:
        """A claimed attempt of the run ``run_id`` (its pipeline, or the job itself)."""
        with self._lock:
            held = [j for j in self._claims.values() if (j.pipeline_id or j.id) == run_id]
        if not held:
            raise AccessDenied(f"no job of run {run_id} is claimed by this runner")
        return f"/jobs/{held[-1].id}/attempts/{held[-1].attempt}"

    def _current(self) -> str:
        with self._lock:
            held = list(self._claims.values())
        if not held:
            raise AccessDenied("no job is claimed by this runner process")
        return f"/jobs/{held[-1].id}/attempts/{held[-1].attempt}"

    # -- the runner itself --

    def whoami(self, since: datetime | None = None) -> dict[str, Any]:
        """The runner's registered name and capabilities (checks the credential)."""
        params = {} if since is None else {"since": since.isoformat()}
        data: dict[str, Any] = self._call("GET", "/self", params=params).json()
        return data

    def count_claims(self, runner_id: str, since: datetime | None = None) -> int:
        return int(self.whoami(since)["claims"])

    def count_running(self, runner_id: str) -> int:
        return int(self.whoami()["running"])

    def take_exec_request(self, request: str) -> tuple[list[str], float] | None:
        """The command of a ``runner exec`` request made for this runner (taken once)."""
        try:
            data = self._call("POST", "/exec-requests/take", json={"request": request}).json()
        except NotFound:
            return None
        return [str(a) for a in data["argv"]], float(data["timeout"])

    # -- claim and lease --

    def claim(self, job_id: str, runner_id: str, lease_ttl: float) -> Claim | None:
        data = self._call("POST", f"/jobs/{job_id}/claim", json={"lease_ttl": lease_ttl}).json()
        if data.get("job") is None:
            return None
        job = load_row(Job, data["job"])
        with self._lock:
            self._claims[job.id] = job
        return Claim(job, data.get("took_over"))

    def heartbeat(self, job_id: str, attempt: int, lease_ttl: float) -> bool | None:
        try:
            res = self._call(
                "POST",
                f"/jobs/{job_id}/attempts/{attempt}/heartbeat",
                json={"lease_ttl": lease_ttl},
            )
        except AccessDenied:
            return None  # no longer ours: cancelled while queued, or taken over
        return bool(res.json()["cancel_requested"])

    def append_log(self, job_id: str, attempt: int, seq: int, data: str) -> None:
        self._call(
            "POST", f"/jobs/{job_id}/attempts/{attempt}/log", json={"seq": seq, "data": data}
        )

    def close_attempt(
        self,
        job_id: str,
        attempt: int,
        state: JobState,
        *,
        runner_id: str | None,
        reason: str | None = None,
        lease_expired: bool = False,
        values: dict[str, Any] | None = None,
        backoff: float = defaults.RETRY_BACKOFF,
    ) -> tuple[Job, AfterAttempt] | None:
        values = values or {}
        evidence = values.get("evidence")
        body = {
            "state": JobState(state).value,
            "reason": reason,
            "exit_code": values.get("exit_code"),
            "evidence": evidence.model_dump(mode="json") if evidence is not None else None,
        }
        try:
            data = self._call(
                "POST", f"/jobs/{job_id}/attempts/{attempt}/outcome", json=body
            ).json()
        except AccessDenied:
            return None  # lost the fence (the reaper closed it, or a cancel)
        finally:
            with self._lock:
                self._claims.pop(job_id, None)
        after = AfterAttempt(Next(data["next"]), float(data["delay"]), str(data["reason"]))
        return load_row(Job, data["job"]), after

    # -- what an attempt leaves --

    def set_outputs(self, job_id: str, attempt: int, outputs: dict[str, Any]) -> None:
        self._call("PUT", f"/jobs/{job_id}/attempts/{attempt}/outputs", json={"outputs": outputs})

    def add_summary(self, job_id: str, attempt: int, step: int, name: str, markdown: str) -> None:
        body = {"step": step, "name": name, "markdown": markdown}
        self._call("POST", f"/jobs/{job_id}/attempts/{attempt}/summaries", json=body)

    def add_annotations(self, job_id: str, attempt: int, found: Iterable[Any]) -> None:
        items = [a.model_dump(mode="json") for a in found]
        if items:
            body = {"annotations": items}
            self._call("POST", f"/jobs/{job_id}/attempts/{attempt}/annotations", json=body)

    def add_artifacts(
        self, job_id: str, attempt: int, files: Iterable[Any], name: str | None = None
    ) -> None:
        """Upload each collected file (copied under the runner's artifact root) with its
        sha256; the API checks it, stores the file and indexes it."""
        local = self.settings.resolved_artifact_root / job_id / str(attempt)
        for f in files:
            path = local / f.path
            params = {"path": f.path, "sha256": f.sha256, "size": str(f.size)}
            if name is not None:
                params["name"] = name
            with path.open("rb") as body:
                self._call(
                    "PUT",
                    f"/jobs/{job_id}/attempts/{attempt}/artifacts",
                    params=params,
                    content=_chunks(body),
                    headers={"Content-Length": str(f.size)},
                )
            path.unlink(missing_ok=True)  # the pool's copy is the one that counts

    def remove_artifacts(self, ids: Iterable[int]) -> None:
        where = self._current()
        for artifact_id in ids:
            self._call("DELETE", f"{where}/artifacts/{artifact_id}")

    def artifacts(self, job_id: str, attempt: int | None = None) -> list[Artifact]:
        rows = self._call("GET", f"{self._attempt(job_id)}/artifacts").json()["artifacts"]
        return [load_row(Artifact, r) for r in rows]

    def named_artifacts(self, pipeline_id: str | None, job_id: str, name: str) -> list[Artifact]:
        res = self._call("GET", f"{self._attempt(job_id)}/named-artifacts", params={"name": name})
        return [load_row(Artifact, r) for r in res.json()["artifacts"]]

    def artifact_names(self, pipeline_id: str | None, job_id: str) -> list[str]:
        res = self._call("GET", f"{self._attempt(job_id)}/artifact-names")
        return [str(n) for n in res.json()["names"]]

    def claim_artifact(
        self,
        run_id: str,
        job_id: str,
        attempt: int,
        name: str,
        expires_at: datetime,
        *,
        overwrite: bool,
    ) -> str | None:
        """Hold ``name`` in the run (the API derives the run from the claimed job)."""
        body = {"name": name, "expires_at": expires_at.isoformat(), "overwrite": overwrite}
        res = self._call("POST", f"{self._attempt(job_id)}/artifact-claims", json=body)
        holder = res.json()["holder"]
        return None if holder is None else str(holder)

    def release_artifact(self, run_id: str, name: str, job_id: str, attempt: int) -> None:
        self._call("DELETE", f"{self._attempt(job_id)}/artifact-claims", params={"name": name})

    def add_artifact_set(
        self, run_id: str, job_id: str, attempt: int, expires_at: datetime
    ) -> None:
        body = {"expires_at": expires_at.isoformat()}
        self._call("POST", f"{self._attempt(job_id)}/artifact-sets", json=body)

    def expired_named(self, run_id: str, name: str) -> ArtifactSet | None:
        res = self._call("GET", f"{self._in_run(run_id)}/expired-artifacts", params={"name": name})
        row = res.json()["expired"]
        return None if row is None else load_row(ArtifactSet, row)

    def open_artifact(self, job_id: str, row: Artifact) -> IO[bytes]:
        """A stored artifact file of this run, downloaded into a temporary file."""
        out = tempfile.TemporaryFile()
        try:
            self._download(f"{self._attempt(job_id)}/artifact-files/{row.id}", out)
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return out

    def _download(self, path: str, out: BinaryIO, params: dict[str, str] | None = None) -> bool:
        try:
            with self.client.stream("GET", self.base + path, params=params) as res:
                if res.status_code == 404:
                    return False
                if res.status_code >= 400:
                    res.read()
                    self._raise_for(res)
                for chunk in res.iter_bytes():
                    out.write(chunk)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        return True

    def _raise_for(self, res: httpx.Response) -> None:
        """The API's refusal as the exception the worker expects of its store."""
        message = error_body(res.text, res.reason_phrase)[1]
        if res.status_code == 401:
            raise RunnerCutOff(f"the pool API refused this runner's credential: {message}")
        if res.status_code == 403:
            raise AccessDenied(message)
        if res.status_code == 404:
            raise NotFound(message)
        if res.status_code in (413, 422):
            raise InputError(message)
        raise InfraError(f"the pool API answered {res.status_code}: {message}")

    # -- what the job reads --

    def get_job(self, job_id: str) -> Job:
        return load_row(Job, self._call("GET", f"/jobs/{job_id}").json()["job"])

    def runners_of(self, job_id: str) -> str | None:
        # A runner reads only the jobs it claimed; the API's claim checks the name instead
        # (and claims nothing for a runner the glob leaves out).
        return None

    def get_pipeline(self, pipeline_id: str) -> Pipeline:
        data = self._call("GET", f"{self._in_pipeline(pipeline_id)}/pipeline").json()
        return load_row(Pipeline, data["pipeline"])

    def pipeline_jobs(self, pipeline_id: str) -> list[Job]:
        data = self._call("GET", f"{self._in_pipeline(pipeline_id)}/pipeline").json()
        return [load_row(Job, j) for j in data["jobs"]]

    def sync_payload(self, sha256: str) -> bytes | None:
        with self._lock:
            held = [
                j
                for j in self._claims.values()
                if j.checkout.sync is not None and j.checkout.sync.sha256 == sha256
            ]
        if not held:
            return None
        res = self._call("GET", f"/jobs/{held[-1].id}/attempts/{held[-1].attempt}/sync")
        data = res.content
        if hashlib.sha256(data).hexdigest() != sha256:
            raise InfraError("the sync payload the API sent does not match its sha256")
        return data

    # -- the pool cache (``worker.cachestore.api``) --

    def cache_call(self, job_id: str, method: str, what: str, **kw: Any) -> httpx.Response:
        return self._call(method, f"{self._attempt(job_id)}/cache{what}", **kw)

    def cache_fetch(self, job_id: str, name: str, out: BinaryIO) -> bool:
        return self._download(f"{self._attempt(job_id)}/cache/archive", out, {"name": name})

    def cache_put(self, job_id: str, name: str, archive: Path) -> None:
        size = archive.stat().st_size
        with archive.open("rb") as body:
            self.cache_call(
                job_id,
                "PUT",
                "/archive",
                params={"name": name},
                content=_chunks(body),
                headers={"Content-Length": str(size)},
            )


def _chunks(fh: BinaryIO, size: int = 1024 * 1024) -> Iterable[bytes]:
    while chunk := fh.read(size):
        yield chunk
