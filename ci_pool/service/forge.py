"""Commit statuses on the forge: posting a job's state to Gitea, Forgejo or GitHub from the
status outbox, off the job's critical path.

The worker hands each change of its job to a ``StatusNotifier`` (a background thread) and
goes on; ``ci-pool beat`` sends whatever is still due (``StatusSender.sweep``): failed
posts again with a doubling backoff, up to ``status_attempts``, then a log line says the
status was given up. A post never changes a job's state.

The request shapes follow the forges' documentation:
- GitHub "Create a commit status" (docs.github.com/en/rest/commits/statuses):
  ``POST {api}/repos/{owner}/{repo}/statuses/{sha}``, ``Authorization: Bearer``, ``Accept:
  application/vnd.github+json``, body ``{state, target_url, description, context}``.
- Gitea/Forgejo ``repoCreateStatus`` (``/api/swagger``, ``CreateStatusOption``): the same
  path under ``/api/v1``, ``Authorization: token``, the same body fields.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from ci_pool import defaults
from ci_pool.addresses import host_matches, refusal
from ci_pool.core.forges import (
    CommitStatus,
    Forge,
    context_name,
    describe,
    job_link,
    status_state,
)
from ci_pool.core.names import repository_name
from ci_pool.core.policy import read_secret_source
from ci_pool.core.specs import JobState
from ci_pool.exceptions import CIPoolError, NotFound
from ci_pool.remotes import effective_url, remote_of
from ci_pool.settings import Settings
from ci_pool.store import Job, Store
from ci_pool.store.outbox import Taken, delivered, due, failed, take

log = logging.getLogger(__name__)

#: Answers worth another try; any other 4xx (bad token, unknown repository, a body the
#: forge refuses) will not change by trying again.
_TRANSIENT = {408, 409, 425, 429}


class StatusNotSent(CIPoolError):
    """A post that did not reach the forge; ``final`` when trying again cannot help."""

    def __init__(self, message: str, *, final: bool = False):
        self.final = final
        super().__init__(message)


def forge_of(settings: Settings, repo: str) -> tuple[str, Forge] | None:
    """The forge configured for a repository URL's host (``host:port`` before ``host``)."""
    if not settings.forges:
        return None
    try:
        remote = remote_of(repo) or remote_of(effective_url(repo, settings.git_url_rewrites))
    except CIPoolError:
        return None
    if remote is None:
        return None
    keys = {k.lower(): k for k in settings.forges}
    for key in (f"{remote.host}:{remote.port}", remote.host):
        if key in keys:
            return keys[key], settings.forges[keys[key]]
    return None


def check_api_address(settings: Settings, key: str, forge: Forge) -> None:
    """Refuse, before any connection, a forge API whose host is not in ``git_hosts`` or
    whose name resolves to a link-local, metadata, or (without ``allow_loopback_git``)
    loopback address."""
    host, port = forge.api_host
    if not host_matches(settings.git_hosts, host, port):
        raise StatusNotSent(f"forges.{key}.api_url: {host} is not in git_hosts", final=True)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise StatusNotSent(f"forges.{key}.api_url: {host} does not resolve") from None
    for address in sorted({str(info[4][0]) for info in infos}):
        why = refusal(address, allow_loopback=settings.allow_loopback_git)
        if why is not None:
            raise StatusNotSent(f"forges.{key}.api_url is refused: {why}", final=True)


def request_of(
    forge: Forge, token: str, repo: str, sha: str, status: CommitStatus
) -> httpx.Request:
    """The documented request of each forge family for one commit status."""
    try:
        owner, name = repository_name(repo).split("/")
    except ValueError:
        raise StatusNotSent(
            f"{repo}: a commit status needs an owner/name repository path", final=True
        ) from None
    url = f"{forge.api_url}/repos/{quote(owner, safe='')}/{quote(name, safe='')}/statuses/{sha}"
    body: dict[str, str] = {
        "state": status.state,
        "description": status.description,
        "context": status.context,
    }
    if status.target_url:
        body["target_url"] = status.target_url
    if forge.kind == "github":
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": "2022-11-28",
        }
    else:
        headers = {"Accept": "application/json", "Authorization": f"token {token}"}
    headers["User-Agent"] = "ci-pool"
    return httpx.Request("POST", url, json=body, headers=headers)


class StatusSender:
    """Sends the outbox's due statuses; safe beside other senders (rows are leased)."""

    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store

    def sweep(self) -> int:
        """Send every due status once; how many reached their forge."""
        return sum(self.deliver(job_id) for job_id in due(self.store, defaults.STATUS_SWEEP_BATCH))

    def deliver(self, job_id: str) -> bool:
        """Post the job's current state if its forge has yet to hear it; never raises."""
        taken = take(self.store, job_id, defaults.STATUS_LEASE)
        if taken is None:
            return False
        try:
            return self._deliver(taken)
        except Exception as exc:  # a status must never break the worker or the reaper
            log.exception("commit status of job %s: unexpected failure", job_id)
            self._failed(taken, StatusNotSent(f"internal error: {type(exc).__name__}"), "")
            return False

    def _deliver(self, taken: Taken) -> bool:
        try:
            job = self.store.get_job(taken.job_id)
        except NotFound:
            delivered(self.store, taken, None)
            return False
        found = forge_of(self.settings, job.repo)
        state = status_state(JobState(job.state))
        if found is None or state is None or not job.commit_sha:
            delivered(self.store, taken, None)  # nothing to tell (no forge, or blocked)
            return False
        key, forge = found
        status = self.status_of(job)
        token = ""
        try:
            check_api_address(self.settings, key, forge)
            token = read_secret_source(forge.token, f"forges.{key}.token")
            self._post(request_of(forge, token, job.repo, job.commit_sha, status))
        except CIPoolError as exc:
            self._failed(taken, exc, token, status.context)
            return False
        delivered(self.store, taken, status.state)
        log.info("job %s: commit status %s %s posted", job.id, status.context, status.state)
        return True

    def status_of(self, job: Job) -> CommitStatus:
        """The status a job's current state shows on its commit."""
        workflow = None
        if job.pipeline_id:
            pipeline = self.store.get_pipeline(job.pipeline_id)
            workflow = pipeline.name or Path(pipeline.file).stem or pipeline.id
        state = JobState(job.state)
        return CommitStatus(
            state=status_state(state) or "pending",
            context=context_name(job.key or job.name or job.id, workflow),
            description=describe(state, job.reason, job.runner_id),
            target_url=job_link(self.settings.public_url, job.id),
        )

    def _post(self, request: httpx.Request) -> None:
        host = urlsplit(str(request.url)).netloc
        try:
            with httpx.Client(
                timeout=self.settings.status_timeout, follow_redirects=False, trust_env=False
            ) as client:
                answer = client.send(request)
        except httpx.HTTPError as exc:
            raise StatusNotSent(f"{host} did not answer: {type(exc).__name__}") from None
        if not answer.is_success:
            final = 400 <= answer.status_code < 500 and answer.status_code not in _TRANSIENT
            raise StatusNotSent(f"{host} answered HTTP {answer.status_code}", final=final)

    def _failed(self, taken: Taken, exc: CIPoolError, token: str, context: str = "") -> None:
        text = str(exc).replace(token, "***") if token else str(exc)
        tries = taken.tries + 1
        final = isinstance(exc, StatusNotSent) and exc.final
        if final or tries >= self.settings.status_attempts:
            failed(self.store, taken, text, None)
            log.warning(
                "job %s: commit status %s given up after %d attempt(s): %s",
                taken.job_id,
                context or "-",
                tries,
                text,
            )
            return
        wait = self.settings.status_backoff * 2 ** (tries - 1)
        failed(self.store, taken, text, wait)
        log.info(
            "job %s: commit status %s not sent (%s); attempt %d/%d in %gs",
            taken.job_id,
            context or "-",
            text,
            tries + 1,
            self.settings.status_attempts,
            wait,
        )


class StatusNotifier:
    """Hands a job's changes to a background thread, in order: the job never waits for
    the forge, and what the thread cannot send the beat sends later."""

    def __init__(self, sender: StatusSender):
        self.sender = sender
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __call__(self, job_id: str) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="ci-pool-status", daemon=True
                )
                self._thread.start()
        self._queue.put(job_id)

    def _run(self) -> None:
        while True:
            self.sender.deliver(self._queue.get())


def worker_notifier(settings: Settings) -> Callable[[Store], Callable[[str], None]] | None:
    """What a worker process builds its notifier from (None: no forge is configured)."""
    if not settings.forges:
        return None

    def build(store: Store) -> Callable[[str], None]:
        return StatusNotifier(StatusSender(settings, store))

    return build
