"""The CLI's client of the HTTP API at ``settings.api_url`` (``ci_pool.cli.client.connect``
makes it when ``CI_POOL_API_URL`` is set)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from ci_pool import defaults
from ci_pool.addresses import check_api_url
from ci_pool.cli.client import Inputs, _explain, _is_final
from ci_pool.cli.http_calls import RunnerCalls
from ci_pool.cli.views import LogStream
from ci_pool.core.policy import SIGNATURE_HEADER, read_secret_source, sign
from ci_pool.core.submissions import JobCreate
from ci_pool.core.sync import SyncSource
from ci_pool.exceptions import (
    CIPoolError,
    ConfigError,
    InfraError,
    InputError,
    NotFound,
)
from ci_pool.service.job_views import ArtifactView, JobAck, JobView, PipelineAck, PipelineView
from ci_pool.service.views import QueueStatus

__all__ = ["HttpClient", "check_api_url"]


class HttpClient(RunnerCalls):
    """The HTTP API at ``settings.api_url``, with ``settings.api_token`` as bearer token."""

    def _job_or_ack(self, path: str) -> JobView | JobAck:
        """An action's answer: the job's view, or only its id and state to a token that
        may not read the job."""
        data = self._json("POST", path)
        if isinstance(data, dict) and set(data) == {"id", "state"}:
            return self._answer(JobAck, data, path)
        return self._answer(JobView, data, path)

    def _signature(self, body: dict[str, object]) -> dict[str, str]:
        """The signature header over ``body`` when a signing key is configured."""
        key_id, source = self.settings.sign_key_id, self.settings.sign_key
        if not (key_id and source):
            return {}
        try:
            key = read_secret_source(source, f"signing key {key_id}")
        except CIPoolError as exc:
            raise ConfigError(str(exc), key="CI_POOL_SIGN_KEY") from None
        return {SIGNATURE_HEADER: sign(key.encode(), key_id, body)}

    @staticmethod
    def _job_path(job_id: str, *rest: str) -> str:
        return "/".join(("/v1/jobs", quote(job_id, safe=""), *rest))

    # -- jobs ------------------------------------------------------------------------------

    def submit_job(self, job: JobCreate) -> JobView:
        body = job.body()
        return self._model(JobView, "POST", "/v1/jobs", json=body, headers=self._signature(body))

    def job(self, job_id: str) -> JobView:
        return self._model(JobView, "GET", self._job_path(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.job(job_id)
            if _is_final(view) or (end is not None and time.monotonic() >= end):
                return view
            time.sleep(defaults.API_POLL_INTERVAL)

    def log(self, job_id: str, attempt: int | None = None) -> str:
        params = {} if attempt is None else {"attempt": attempt}
        return self._call("GET", self._job_path(job_id, "logs"), params=params).text

    def follow(self, job_id: str) -> Iterator[tuple[str | None, str]]:
        """The job's Server-Sent Events: ``line`` events, then one ``end``."""
        # The server sends a keep-alive every second while the job is quiet, so a stream
        # silent for the whole answer timeout means the server or the network is gone.
        import httpx

        timeout = httpx.Timeout(defaults.API_TIMEOUT, connect=defaults.API_CONNECT_TIMEOUT)
        path = self._job_path(job_id, "logs")
        stream = LogStream()
        with (
            self._reaching(),
            self._http.stream("GET", path, params={"follow": 1}, timeout=timeout) as res,
        ):
            if res.is_error:
                res.read()
                raise self._error(res)
            yield from stream.lines(res.iter_lines())
        if not stream.ended:
            raise InfraError(f"the log stream from {self.url} broke off before job {job_id} ended")

    def cancel(self, job_id: str) -> JobView | JobAck:
        return self._job_or_ack(self._job_path(job_id, "cancel"))

    def retry_job(self, job_id: str) -> JobView | JobAck:
        return self._job_or_ack(self._job_path(job_id, "retry"))

    def download_artifacts(self, job_id: str, dest: Path, attempt: int | None = None) -> list[Path]:
        params = {} if attempt is None else {"attempt": attempt}
        index = self._page(ArtifactView, self._job_path(job_id, "artifacts"), params=params)
        if not index:
            raise NotFound(f"job {job_id} has no artifacts")
        copied = []
        for art in index:
            target = (dest / art.path).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise InputError(f"artifact path {art.path!r} leaves {dest}", field="dest")
            target.parent.mkdir(parents=True, exist_ok=True)
            path = self._job_path(job_id, "artifacts", quote(art.path, safe="/"))
            if self._download(path, {"attempt": art.attempt}, target) != art.sha256:
                target.unlink(missing_ok=True)
                raise InfraError(f"artifact {art.path} does not match its sha256; not trusted")
            copied.append(target)
        return copied

    def _download(self, path: str, params: dict[str, int], target: Path) -> str:
        """Stream one file to ``target``; its sha256."""
        digest = hashlib.sha256()
        with self._reaching(), self._http.stream("GET", path, params=params) as res:
            if res.is_error:
                res.read()
                raise self._error(res)
            with target.open("wb") as fh:
                for chunk in res.iter_bytes():
                    digest.update(chunk)
                    fh.write(chunk)
        return digest.hexdigest()

    def status(self) -> list[QueueStatus]:
        return self._page(QueueStatus, "/v1/queues")

    def waiting(self, job_id: str) -> str | None:
        return self.job(job_id).waiting

    def explain(self, job_id: str) -> str:
        view = self.job(job_id)
        return _explain(view, view.lease_until or "-")

    # -- pipelines ---------------------------------------------------------------------

    def upload_sync(self, mode: str, data: bytes) -> SyncSource:
        return self._model(
            SyncSource,
            "POST",
            "/v1/sync",
            params={"mode": mode},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )

    def submit_pipeline(
        self,
        text: str,
        file: str,
        repo: str,
        ref: str,
        event: str,
        inputs: Inputs = None,
        sync: SyncSource | None = None,
        runner: str | None = None,
    ) -> PipelineView:
        body: dict[str, object] = {
            "workflow": text,
            "file": file,
            "repo": repo,
            "ref": ref,
            "event": event,
        }
        if inputs:
            body["inputs"] = inputs
        if sync:
            body["sync"] = sync.model_dump(mode="json")
        if runner:
            body["runner"] = runner
        headers = self._signature(body)
        return self._model(PipelineView, "POST", "/v1/pipelines", json=body, headers=headers)

    def pipeline(self, pipeline_id: str) -> PipelineView:
        return self._model(PipelineView, "GET", f"/v1/pipelines/{quote(pipeline_id, safe='')}")

    def cancel_pipeline(self, pipeline_id: str) -> PipelineView | PipelineAck:
        path = f"/v1/pipelines/{quote(pipeline_id, safe='')}/cancel"
        data = self._json("POST", path)
        if isinstance(data, dict) and set(data) == {"id", "state"}:
            return self._answer(PipelineAck, data, path)
        return self._answer(PipelineView, data, path)

    def retry_pipeline(self, pipeline_or_job_id: str) -> tuple[str, int]:
        try:
            before = self.pipeline(pipeline_or_job_id)
        except NotFound:  # a job id: retry its pipeline
            job = self.job(pipeline_or_job_id)
            if not job.pipeline_id:
                raise InputError(f"job {job.id} is not part of a pipeline", field="ID") from None
            before = self.pipeline(job.pipeline_id)
        pipeline_id = before.id
        path = f"/v1/pipelines/{quote(pipeline_id, safe='')}/retry"
        after = self._model(PipelineView, "POST", path)
        # The jobs run again are those the retry moved (reset, or already claimed).
        was = {j.id: (j.state, j.attempt) for j in before.jobs}
        again = [j for j in after.jobs if was.get(j.id) != (j.state, j.attempt)]
        return pipeline_id, len(again)
