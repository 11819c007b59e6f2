"""The CLI's client of the HTTP API at ``settings.api_url`` (``ci_pool.cli.client.connect``
makes it when ``CI_POOL_API_URL`` is set)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ci_pool import __version__, defaults
from ci_pool.addresses import check_api_url
from ci_pool.apierrors import api_error, error_body
from ci_pool.core.diagnostics import DiagnosticResult
from ci_pool.core.policy import SIGNATURE_HEADER, read_secret_source, sign
from ci_pool.exceptions import (
    CIPoolError,
    ConfigError,
    InfraError,
    InputError,
    NotFound,
)
from ci_pool.service.views import QueueStatus, RunnerStatus, summary
from ci_pool.settings import Settings
from ci_pool.tls import client_verify, untrusted_message

if TYPE_CHECKING:
    import httpx

    from ci_pool.service.identities import RunnerIdentityView, RunnerTokenPublic

from ci_pool.cli.client import JSON, Inputs, _explain, _is_final


class HttpClient:
    """The HTTP API at ``settings.api_url``, with ``settings.api_token`` as bearer token."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None):
        import httpx

        self.url = check_api_url(settings.api_url)
        self.settings = settings
        headers = {"User-Agent": f"ci-pool/{__version__}"}
        token = settings.api_token.get_secret_value() if settings.api_token else ""
        self._has_token = bool(token)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(defaults.API_TIMEOUT, connect=defaults.API_CONNECT_TIMEOUT),
            transport=transport,
            verify=client_verify(settings, self.url),
        )

    def close(self) -> None:
        self._http.close()

    # -- transport and errors ------------------------------------------------------------

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """Network failures become InfraError naming the API's address."""
        import httpx

        try:
            yield
        except httpx.TimeoutException as exc:
            raise InfraError(
                f"the API at {self.url} did not answer in time ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            untrusted = untrusted_message(self.url, exc)
            if untrusted is not None:
                raise ConfigError(untrusted, key="api_ca_file") from None
            raise InfraError(
                f"cannot reach the API at {self.url} ({exc or type(exc).__name__}); check "
                "CI_POOL_API_URL and that `ci-pool api` runs there"
            ) from None

    def _error(self, res: httpx.Response) -> CIPoolError:
        """The CIPoolError local mode raises for the same problem."""
        body = error_body(res.text, res.reason_phrase)
        hint = "CI_POOL_API_TOKEN" if self._has_token else ""
        return api_error(self.url, res.status_code, body, token_hint=hint)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._reaching():
            res = self._http.request(method, path, **kwargs)
        if res.is_error:
            raise self._error(res)
        return res

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        res = self._call(method, path, **kwargs)
        try:
            return res.json()
        except ValueError:
            raise InfraError(
                f"the API at {self.url} answered {path} with something other than JSON"
            ) from None

    def _signature(self, body: JSON) -> dict[str, str]:
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

    def submit_job(self, body: JSON) -> JSON:
        view = self._json("POST", "/v1/jobs", json=body, headers=self._signature(body))
        return summary(view)

    def job(self, job_id: str) -> JSON:
        view: JSON = self._json("GET", self._job_path(job_id))
        return view

    def wait(self, job_id: str, timeout: float | None = None) -> JSON:
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.job(job_id)
            if _is_final(view) or (end is not None and time.monotonic() >= end):
                return summary(view)
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
        ended = False
        with (
            self._reaching(),
            self._http.stream("GET", path, params={"follow": 1}, timeout=timeout) as res,
        ):
            if res.is_error:
                res.read()
                raise self._error(res)
            event = ""
            for line in res.iter_lines():
                if line.startswith("event:"):
                    event = line.removeprefix("event:").strip()
                elif line.startswith("data:") and event == "line":
                    data = json.loads(line.removeprefix("data:").strip())
                    yield data.get("t"), str(data["line"])
                elif line.startswith("data:") and event == "end":
                    ended = True
        if not ended:
            raise InfraError(f"the log stream from {self.url} broke off before job {job_id} ended")

    def cancel(self, job_id: str) -> JSON:
        return summary(self._json("POST", self._job_path(job_id, "cancel")))

    def retry_job(self, job_id: str) -> JSON:
        return summary(self._json("POST", self._job_path(job_id, "retry")))

    def download_artifacts(self, job_id: str, dest: Path, attempt: int | None = None) -> list[Path]:
        params = {} if attempt is None else {"attempt": attempt}
        index = self._json("GET", self._job_path(job_id, "artifacts"), params=params)["data"]
        if not index:
            raise NotFound(f"job {job_id} has no artifacts")
        copied = []
        for art in index:
            target = (dest / art["path"]).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise InputError(f"artifact path {art['path']!r} leaves {dest}", field="dest")
            target.parent.mkdir(parents=True, exist_ok=True)
            path = self._job_path(job_id, "artifacts", quote(art["path"], safe="/"))
            if self._download(path, {"attempt": art["attempt"]}, target) != art["sha256"]:
                target.unlink(missing_ok=True)
                raise InfraError(f"artifact {art['path']} does not match its sha256; not trusted")
            copied.append(target)
        return copied

    def _download(self, path: str, params: JSON, target: Path) -> str:
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
        return [QueueStatus.model_validate(r) for r in self._json("GET", "/v1/queues")["data"]]

    def waiting(self, job_id: str) -> str | None:
        why = self.job(job_id).get("waiting")
        return None if why is None else str(why)

    def explain(self, job_id: str) -> str:
        view = self.job(job_id)
        return _explain(view, view.get("lease_until") or "-")

    # -- pipelines ---------------------------------------------------------------------

    def upload_sync(self, mode: str, data: bytes) -> JSON:
        source: JSON = self._json(
            "POST",
            "/v1/sync",
            params={"mode": mode},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return source

    def submit_pipeline(
        self,
        text: str,
        file: str,
        repo: str,
        ref: str,
        event: str,
        inputs: Inputs = None,
        sync: JSON | None = None,
        runner: str | None = None,
    ) -> JSON:
        body: JSON = {"workflow": text, "file": file, "repo": repo, "ref": ref, "event": event}
        if inputs:
            body["inputs"] = inputs
        if sync:
            body["sync"] = sync
        if runner:
            body["runner"] = runner
        view: JSON = self._json("POST", "/v1/pipelines", json=body, headers=self._signature(body))
        return view

    def pipeline(self, pipeline_id: str) -> JSON:
        view: JSON = self._json("GET", f"/v1/pipelines/{quote(pipeline_id, safe='')}")
        return view

    def cancel_pipeline(self, pipeline_id: str) -> JSON:
        view: JSON = self._json("POST", f"/v1/pipelines/{quote(pipeline_id, safe='')}/cancel")
        return view

    def retry_pipeline(self, pipeline_or_job_id: str) -> tuple[str, int]:
        try:
            before = self.pipeline(pipeline_or_job_id)
        except NotFound:  # a job id: retry its pipeline
            job = self.job(pipeline_or_job_id)
            if not job.get("pipeline_id"):
                raise InputError(f"job {job['id']} is not part of a pipeline", field="ID") from None
            before = self.pipeline(job["pipeline_id"])
        pipeline_id = str(before["id"])
        after = self._json("POST", f"/v1/pipelines/{quote(pipeline_id, safe='')}/retry")
        # The jobs run again are those the retry moved (reset, or already claimed).
        was = {j["id"]: (j["state"], j["attempt"]) for j in before["jobs"]}
        again = [j for j in after["jobs"] if was.get(j["id"]) != (j["state"], j["attempt"])]
        return pipeline_id, len(again)

    # -- runners -------------------------------------------------------------------------

    def runners(self) -> list[RunnerStatus]:
        rows = self._json("GET", "/v1/runners")["data"]
        return [RunnerStatus.model_validate(r) for r in rows]

    def drain(self, runner_id: str) -> str:
        return str(self._json("POST", f"/v1/runners/{quote(runner_id, safe='')}/drain")["message"])

    def undrain(self, runner_id: str) -> str:
        path = f"/v1/runners/{quote(runner_id, safe='')}/undrain"
        return str(self._json("POST", path)["message"])

    def scale(self, capability: str, slots: int) -> list[str]:
        path = f"/v1/queues/{quote(capability, safe='')}/scale"
        return [str(line) for line in self._json("POST", path, json={"slots": slots})["lines"]]

    def runner_exec(self, name: str, argv: list[str], timeout: float | None) -> DiagnosticResult:
        path = f"/v1/runners/{quote(name, safe='')}/exec"
        # The API waits for the command (up to its timeout) and the runner's answer.
        wait = (timeout or defaults.RUNNER_EXEC_MAX_TIMEOUT) + 2 * defaults.RUNNER_EXEC_REPLY_GRACE
        body = self._json("POST", path, json={"argv": argv, "timeout": timeout}, timeout=wait)
        return DiagnosticResult.model_validate(body)

    def runner_exec_log(self, runner: str | None, limit: int) -> list[JSON]:
        params: dict[str, Any] = {"limit": limit}
        if runner:
            params["runner"] = runner
        return list(self._json("GET", "/v1/runner-execs", params=params)["data"])

    def create_runner_token(
        self, capabilities: list[str], expires: str, name: str | None = None
    ) -> RunnerTokenPublic:
        from ci_pool.service.identities import RunnerTokenPublic

        body: dict[str, Any] = {"capabilities": capabilities, "expires": expires}
        if name:
            body["name"] = name
        return RunnerTokenPublic.model_validate(self._json("POST", "/v1/runner-tokens", json=body))

    def revoke_runner(self, name: str) -> RunnerIdentityView:
        from ci_pool.service.identities import RunnerIdentityView

        path = f"/v1/runners/{quote(name, safe='')}/revoke"
        return RunnerIdentityView.model_validate(self._json("POST", path))

    def runner_identities(self) -> list[RunnerIdentityView]:
        from ci_pool.service.identities import RunnerIdentitiesPublic

        return RunnerIdentitiesPublic.model_validate(
            self._json("GET", "/v1/runner-identities")
        ).data
