"""``ApiRunnerStore``: the worker's store calls made to the API's runner routes
(``/v1/runner``) with the runner's own credential (``Authorization: Bearer circ_...``).

Every call about a job names the job and the attempt this process claimed; the API
refuses the others. A 401 means the credential was revoked (or never was): every call
then raises ``RunnerCutOff`` and the worker stops taking jobs. The plumbing is in
``api_calls``, the file transfers in ``api_files``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ci_pool import defaults
from ci_pool.core.retry import AfterAttempt, Next
from ci_pool.core.specs import JobState
from ci_pool.exceptions import AccessDenied, NotFound
from ci_pool.store.lifecycle import Claim, FinalChunk
from ci_pool.store.models import Job, Pipeline
from ci_pool.store.transitions import Closed
from ci_pool.store.wire import load_closed, load_row
from ci_pool.worker.api_files import RunnerApiFiles


class ApiRunnerStore(RunnerApiFiles):
    """The ``RunnerStore`` of a runner that holds no database URL."""

    settles_outcomes = True

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
        log: FinalChunk | None = None,
    ) -> tuple[Closed, AfterAttempt] | None:
        """The outcome, with the last log chunk in the same call (and the same transaction
        server-side) when it fits in one chunk, else stored before it on its own."""
        values = values or {}
        evidence = values.get("evidence")
        if log is not None and len(log.data.encode()) > defaults.RUNNER_LOG_CHUNK_MAX:
            self.append_log(job_id, attempt, log.seq, log.data)
            log = None
        body = {
            "state": JobState(state).value,
            "reason": reason,
            "exit_code": values.get("exit_code"),
            "evidence": evidence.model_dump(mode="json") if evidence is not None else None,
            "log": None if log is None else {"seq": log.seq, "data": log.data},
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
        return load_closed(data["job"]), after

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

    # -- what the job reads --

    def get_job(self, job_id: str) -> Job:
        return load_row(Job, self._call("GET", f"/jobs/{job_id}").json()["job"])

    def get_pipeline(self, pipeline_id: str) -> Pipeline:
        data = self._call("GET", f"{self._in_pipeline(pipeline_id)}/pipeline").json()
        return load_row(Pipeline, data["pipeline"])

    def pipeline_jobs(self, pipeline_id: str) -> list[Job]:
        data = self._call("GET", f"{self._in_pipeline(pipeline_id)}/pipeline").json()
        return [load_row(Job, j) for j in data["jobs"]]
