"""The quick way to the home's running ``ci-pool up``: ``show``, ``status`` and ``submit``
ask its API on loopback with the admin token up keeps in the home, so they start without
SQLAlchemy, Celery, redis-py, httpx or pydantic-settings (the standard library, and
pydantic for the views).

Taken only when nothing points the CLI at another pool: none of ``ELSEWHERE_KEYS`` in the
environment (``CI_POOL_*``) or the config file, and a live ``up.json`` in the home. Else
(and for every other command) the CLI goes its usual way (``ci_pool.cli.client``); both
give the same views and raise the same errors, so output and exit codes do not change.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from ci_pool import __version__, defaults
from ci_pool.addresses import is_loopback
from ci_pool.apierrors import api_error, error_body, read_answer, read_rows
from ci_pool.exceptions import InfraError
from ci_pool.home import default_home, legacy_notice, read_up_record

if TYPE_CHECKING:
    from ci_pool.core.submissions import JobCreate
    from ci_pool.service.job_views import JobView
    from ci_pool.service.views import QueueStatus


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

    def _json(self, method: str, path: str, body: dict[str, object] | None = None) -> Any:
        headers = {
            "Authorization": f"Bearer {self._token}",
            "User-Agent": f"ci-pool/{__version__}",
            "Accept": "application/json",
        }
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self._host, self._port, timeout=defaults.API_TIMEOUT)
        try:
            conn.request(method, path, body=payload, headers=headers)
            res = conn.getresponse()
            text = res.read().decode("utf-8", "replace")
        except TimeoutError:
            raise InfraError(f"ci-pool up's API at {self.url} did not answer in time") from None
        except (OSError, http.client.HTTPException) as exc:
            raise InfraError(
                f"cannot reach ci-pool up's API at {self.url} ({exc or type(exc).__name__}); "
                "check that `ci-pool up` still runs"
            ) from None
        finally:
            conn.close()
        if res.status >= 400:
            body_parts = error_body(text, res.reason)
            hint = f"the token in {self._token_file}"
            raise api_error(self.url, res.status, body_parts, token_hint=hint)
        try:
            return json.loads(text)
        except ValueError:
            raise InfraError(
                f"the API at {self.url} answered {path} with something other than JSON"
            ) from None

    def job(self, job_id: str) -> JobView:
        """The detailed view of a job (``show``)."""
        from ci_pool.service.job_views import JobView

        path = f"/v1/jobs/{quote(job_id, safe='')}"
        return read_answer(JobView, self._json("GET", path), self.url, path)

    def submit_job(self, job: JobCreate) -> JobView:
        """Submit one job; its view."""
        from ci_pool.service.job_views import JobView

        answer = self._json("POST", "/v1/jobs", job.body())
        return read_answer(JobView, answer, self.url, "/v1/jobs")

    def status(self) -> list[QueueStatus]:
        """The rows of ``ci-pool status``, one per capability."""
        from ci_pool.service.views import QueueStatus

        return read_rows(QueueStatus, self._json("GET", "/v1/queues"), self.url, "/v1/queues")


def quick_repo(repo: str) -> bool:
    """Whether up's API reads ``repo`` as this shell does: anything but a relative path
    (up resolves those against its own directory)."""
    return not repo.startswith(".") and not (repo.startswith("file:") and "://" not in repo)
