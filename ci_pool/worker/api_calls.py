"""The plumbing of a runner's calls to the API's runner routes (``/v1/runner``) with its
own credential (``Authorization: Bearer circ_...``): the HTTP client, the errors the API
answers as the exceptions a store raises, and the attempts this process claimed, which
scope every later call.

A 401 means the credential was revoked (or never was): every call then raises
``RunnerCutOff`` and the worker stops taking jobs."""

from __future__ import annotations

import logging
import threading
from typing import Any, BinaryIO

import httpx

from ci_pool import __version__, defaults
from ci_pool.addresses import check_api_url
from ci_pool.apierrors import error_body
from ci_pool.exceptions import (
    AccessDenied,
    ConfigError,
    InfraError,
    InputError,
    NotFound,
    RunnerCutOff,
)
from ci_pool.settings import Settings
from ci_pool.store.models import Job
from ci_pool.tls import client_verify, untrusted_message


class RunnerApiCalls:
    """The HTTP calls of a runner that holds no database URL, and its claimed attempts."""

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
