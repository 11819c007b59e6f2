"""The quick way to the home's running ``ci-pool up``: ``show``, ``status``, ``submit``,
``logs``, ``cancel`` and ``runners`` ask its API on loopback with the admin token up keeps in
the home, so they start on the standard library alone: no SQLAlchemy, Celery, redis-py,
httpx, pydantic or the service layer (answers are read into ``ci_pool.cli.views``).

Taken only when nothing points the CLI at another pool: none of ``ELSEWHERE_KEYS`` in the
environment (``CI_POOL_*``) or the config file, and a live ``up.json`` in the home. Else
(and for every other command) the CLI goes its usual way (``ci_pool.cli.client``); both
give the same views and raise the same errors, so output and exit codes do not change.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from ci_pool import __version__, defaults
from ci_pool.addresses import is_loopback
from ci_pool.apierrors import api_error, error_body
from ci_pool.cli.views import (
    JobAck,
    JobView,
    LogStream,
    QueueStatus,
    RunnerStatus,
    read_view,
    read_view_rows,
)
from ci_pool.exceptions import InfraError
from ci_pool.home import default_home, legacy_notice, read_up_record


def _config() -> dict[str, Any] | None:
    """The config file's keys (as ``ci_pool.settings`` finds the file), {} without one,
    None when it cannot be read (the usual way then reports why)."""
    env = os.environ
    path: Path | None = None
    if env.get("CI_POOL_CONFIG"):
        path = Path(env["CI_POOL_CONFIG"])
    elif Path(defaults.CONFIG_FILE).is_file():
        path = Path(defaults.CONFIG_FILE)
    else:
        in_home = Path(env.get("CI_POOL_HOME") or default_home()) / defaults.CONFIG_FILE
        path = in_home if in_home.is_file() else None
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return None


def up_client() -> UpClient | None:
    """A client of the home's ``ci-pool up`` when the CLI may take the quick way, else None."""
    env = os.environ
    if any(f"CI_POOL_{key.upper()}" in env for key in defaults.ELSEWHERE_KEYS):
        return None
    data = _config()
    if data is None or any(key in data for key in defaults.ELSEWHERE_KEYS):
        return None
    home = Path(env.get("CI_POOL_HOME") or data.get("home") or default_home())
    record = read_up_record(home)
    if record is None:
        return None
    parts = urlsplit(record.api_url)
    if parts.scheme != "http" or not parts.hostname or not is_loopback(parts.hostname):
        return None
    try:
        token = Path(record.token_file).read_text().strip()
    except OSError:
        return None
    if not token:
        return None
    notice = legacy_notice(Path.cwd(), home)
    if notice:
        print(notice, file=sys.stderr)
    return UpClient(
        record.api_url, parts.hostname, parts.port or 80, token, home, record.token_file
    )


class UpClient:
    """The API of the home's ``ci-pool up`` on loopback (plain HTTP, one request each)."""

    def __init__(self, url: str, host: str, port: int, token: str, home: Path, token_file: str):
        self.url = url.rstrip("/")
        self.home = home
        self._host, self._port = host, port
        self._token, self._token_file = token, token_file

    def _open(
        self, method: str, path: str, body: dict[str, object] | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """The connection and the answer's status line and headers (the body unread); an
        error status is the CIPoolError local mode raises for the same problem."""
        headers = {
            "Authorization": f"Bearer {self._token}",
            "User-Agent": f"ci-pool/{__version__}",
        }
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self._host, self._port, timeout=defaults.API_TIMEOUT)
        with self._reaching(conn):
            conn.request(method, path, body=payload, headers=headers)
            res = conn.getresponse()
            if res.status >= 400:
                text = res.read().decode("utf-8", "replace")
                conn.close()
                hint = f"the token in {self._token_file}"
                raise api_error(self.url, res.status, error_body(text, res.reason), token_hint=hint)
        return conn, res

    @contextlib.contextmanager
    def _reaching(self, conn: http.client.HTTPConnection) -> Iterator[None]:
        """Network failures become InfraError naming up's API (the connection closed)."""
        try:
            yield
        except TimeoutError:
            conn.close()
            raise InfraError(f"ci-pool up's API at {self.url} did not answer in time") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise InfraError(
                f"cannot reach ci-pool up's API at {self.url} ({exc or type(exc).__name__}); "
                "check that `ci-pool up` still runs"
            ) from None

    def _text(self, method: str, path: str, body: dict[str, object] | None = None) -> str:
        conn, res = self._open(method, path, body)
        try:
            with self._reaching(conn):
                return res.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def _json(self, method: str, path: str, body: dict[str, object] | None = None) -> Any:
        text = self._text(method, path, body)
        try:
            return json.loads(text)
        except ValueError:
            raise InfraError(
                f"the API at {self.url} answered {path} with something other than JSON"
            ) from None

    @staticmethod
    def _job_path(job_id: str, *rest: str) -> str:
        return "/".join(("/v1/jobs", quote(job_id, safe=""), *rest))

    def job(self, job_id: str) -> JobView:
        """The detailed view of a job (``show``)."""
        path = self._job_path(job_id)
        return read_view(JobView, self._json("GET", path), self.url, path)

    def submit_job(self, body: dict[str, object]) -> JobView:
        """Submit one job (the request body, checked by the API as ``JobCreate``); its view."""
        sent = {k: v for k, v in body.items() if v is not None}
        return read_view(JobView, self._json("POST", "/v1/jobs", sent), self.url, "/v1/jobs")

    def status(self) -> list[QueueStatus]:
        """The rows of ``ci-pool status``, one per capability."""
        return read_view_rows(QueueStatus, self._json("GET", "/v1/queues"), self.url, "/v1/queues")

    def runners(self) -> list[RunnerStatus]:
        """Every runner heard from, with its state and running jobs."""
        rows = self._json("GET", "/v1/runners")
        return read_view_rows(RunnerStatus, rows, self.url, "/v1/runners")

    def cancel(self, job_id: str) -> JobView | JobAck:
        """Cancel a job; its view after the request."""
        path = self._job_path(job_id, "cancel")
        data = self._json("POST", path)
        if isinstance(data, dict) and set(data) == {"id", "state"}:
            return read_view(JobAck, data, self.url, path)
        return read_view(JobView, data, self.url, path)

    def log(self, job_id: str, attempt: int | None = None) -> str:
        """The stored log of one attempt (default: the latest)."""
        query = "" if attempt is None else "?" + urlencode({"attempt": attempt})
        return self._text("GET", self._job_path(job_id, "logs") + query)

    def follow(self, job_id: str) -> Iterator[tuple[str | None, str]]:
        """(timestamp, line) as the job writes them, until it ends: the API's Server-Sent
        Events (a keep-alive every second while the job is quiet)."""
        conn, res = self._open("GET", self._job_path(job_id, "logs") + "?follow=1")
        stream = LogStream()
        try:
            with self._reaching(conn):
                yield from stream.lines(
                    raw.decode("utf-8", "replace").rstrip("\r\n") for raw in res
                )
        finally:
            conn.close()
        if not stream.ended:
            raise InfraError(f"the log stream from {self.url} broke off before job {job_id} ended")


def quick_repo(repo: str) -> bool:
    """Whether up's API reads ``repo`` as this shell does: anything but a relative path
    (up resolves those against its own directory)."""
    return not repo.startswith(".") and not (repo.startswith("file:") and "://" not in repo)
