"""Forges a pool reports results to, and what a job's state looks like there as a commit
status: the state, a bounded description, the context name and the link (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, field_validator

from ci_pool.core.specs import JobState

ForgeKind = Literal["gitea", "forgejo", "github"]
#: What the status APIs of both forge families accept (Gitea/Forgejo add "warning").
StatusState = Literal["pending", "success", "failure", "error"]

#: GitHub refuses a longer description (422); Gitea and Forgejo take it as well.
DESCRIPTION_MAX = 140
CONTEXT_MAX = 255
#: Prefix of every context ci-pool posts, so its statuses never clash with another system's.
CONTEXT_PREFIX = "ci-pool"

_STATES: dict[JobState, StatusState] = {
    JobState.QUEUED: "pending",
    JobState.RUNNING: "pending",
    JobState.SUCCEEDED: "success",
    JobState.FAILED: "failure",
    JobState.TIMED_OUT: "failure",
    JobState.ERROR: "error",
    JobState.CANCELLED: "error",
    JobState.REJECTED: "error",
    # Actions reports a skipped job as passing (required checks accept it); a commit
    # status has no "skipped" state, so it is a success that says it was skipped.
    JobState.SKIPPED: "success",
}


class Forge(BaseModel):
    """``[forges."<host>"]``: where the commit statuses of that host's repositories go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ForgeKind
    #: The API root: ``https://git.example.com/api/v1`` (Gitea, Forgejo),
    #: ``https://api.github.com`` (GitHub) or a GitHub Enterprise ``https://host/api/v3``.
    api_url: str
    #: ``env:VAR`` or ``file:/path`` holding the token; never the token itself.
    token: str

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} must be an http(s) URL such as https://host/api/v1")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(
                f"{value!r}: give the API root only (no user, query or fragment); the token "
                "goes in 'token'"
            )
        return value.rstrip("/")

    @field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        kind, _, ref = value.partition(":")
        if kind not in ("env", "file") or not ref:
            raise ValueError(
                "must be 'env:VARIABLE' or 'file:/path' naming where the token is kept "
                "(the token itself never goes in the config)"
            )
        return value

    @property
    def api_host(self) -> tuple[str, int]:
        parts = urlsplit(self.api_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return (parts.hostname or "").lower(), port


@dataclass(frozen=True, slots=True)
class CommitStatus:
    """One status to post: the same body on every forge (the API paths differ)."""

    state: StatusState
    context: str
    description: str
    target_url: str = ""


def bounded(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with a visible ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def context_name(job_name: str, workflow: str | None = None) -> str:
    """``ci-pool/<workflow>/<job>`` for a workflow job, ``ci-pool/<job>`` for one job."""
    parts = [CONTEXT_PREFIX, *([workflow] if workflow else []), job_name or "job"]
    return bounded("/".join(parts), CONTEXT_MAX)


def describe(state: JobState, reason: str | None, runner_id: str | None) -> str:
    """The short description shown next to the status on the forge."""
    if state is JobState.RUNNING:
        text = f"running on {runner_id}" if runner_id else "running"
    elif state is JobState.SUCCEEDED:
        text = "succeeded"
    elif state is JobState.QUEUED:
        text = "queued"
    else:
        text = f"{state.value.replace('_', ' ')}: {reason}" if reason else state.value
    return bounded(text, DESCRIPTION_MAX)


def status_state(state: JobState) -> StatusState | None:
    """The forge state of a job state; None while the job waits on its needs (blocked)."""
    return _STATES.get(state)


def job_link(public_url: str, job_id: str) -> str:
    """The job's page on the pool's API (empty when no public URL is configured)."""
    return f"{public_url.rstrip('/')}/v1/jobs/{job_id}" if public_url else ""
