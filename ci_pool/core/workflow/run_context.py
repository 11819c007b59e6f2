"""The facts of one run that a workflow's ``github.*`` context shows, built in one place
for the pool (a job's ``if:``) and the runner (everything a step sees).

A pipeline keeps ``RunFacts``, what started the run: the event (its name, ref and commit as
the forge reported them, a pull request's head and base, a schedule's slot, the payload),
the dispatch inputs, ``vars`` as they were at submission, the actor, the run number and
whether its jobs may receive secrets. ``github_context`` joins them with the repository,
ref and commit of the run, as GitHub Actions names them.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ci_pool.core.names import EVENT_PATTERN, github_repository, is_sha
from ci_pool.defaults import MAX_EVENT_BYTES


class RunFacts(BaseModel):
    """What started a pipeline run, beyond its repository, ref and commit: one record, kept
    with the pipeline row (``pipelines.context``), read by the pool (``if:``, concurrency,
    the pull request policy) and the runner (``github.*``, secrets)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    #: ``github.event``: the webhook's payload (bounded), or what ``run`` or a dispatch
    #: was given.
    event: dict[str, Any] = Field(default_factory=dict)
    #: ``inputs.*`` of a ``workflow_dispatch`` run, typed.
    inputs: dict[str, Any] = Field(default_factory=dict)
    #: ``vars.*``: the ``[vars]`` of the configuration when the run was submitted.
    vars: dict[str, str] = Field(default_factory=dict)
    #: Who caused it (the pusher, the pull request's sender, ``ci-pool`` for a schedule).
    actor: str = Field(default="", max_length=200)
    #: ``github.run_number``: this run's number among the runs of the same workflow file
    #: of the same repository, from 1.
    run_number: int = Field(default=1, ge=1)
    #: The trigger that started it (push, pull_request, schedule, workflow_dispatch); ""
    #: for a run submitted by hand (``ci-pool run``, ``POST /v1/pipelines``).
    event_name: str = Field(default="", max_length=64)
    #: The full ref the trigger named (``refs/heads/main``, ``refs/tags/v1``), its type
    #: and short name, and the commit it pointed at.
    ref: str = Field(default="", max_length=255)
    ref_type: Literal["branch", "tag", ""] = ""
    ref_name: str = Field(default="", max_length=255)
    sha: str = Field(default="", max_length=64)
    #: Pull requests: the head and base branches, their repositories, the number and action.
    head_ref: str = Field(default="", max_length=255)
    base_ref: str = Field(default="", max_length=255)
    head_repo: str = Field(default="", max_length=2048)
    base_repo: str = Field(default="", max_length=2048)
    number: int | None = None
    action: str = Field(default="", max_length=64)
    #: A schedule's cron text and slot (ISO UTC).
    schedule: str = Field(default="", max_length=100)
    slot: str = Field(default="", max_length=40)
    #: Whether the jobs may receive capability secrets (not for pull requests by default).
    secrets_allowed: bool = True

    @field_validator("event_name")
    @classmethod
    def _event_name(cls, value: str) -> str:
        if value and not re.match(EVENT_PATTERN, value):
            raise ValueError(f"{value!r} is not an event name (lower-case letters and _)")
        return value

    @field_validator("event")
    @classmethod
    def _event(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, default=str).encode())
        if size > MAX_EVENT_BYTES:
            raise ValueError(f"the event payload is {size} bytes; at most {MAX_EVENT_BYTES}")
        return value


def ref_facts(ref: str) -> tuple[str, str, str]:
    """(``github.ref``, ``ref_name``, ``ref_type``) of a submitted ref."""
    if ref.startswith("refs/tags/"):
        return ref, ref.removeprefix("refs/tags/"), "tag"
    if ref.startswith("refs/heads/"):
        return ref, ref.removeprefix("refs/heads/"), "branch"
    if ref.startswith("refs/pull/"):
        return ref, ref.removeprefix("refs/pull/"), ""
    if ref.startswith("refs/"):
        return ref, ref.removeprefix("refs/"), ""
    if is_sha(ref):
        return "", ref, ""
    return f"refs/heads/{ref}", ref, "branch"


def server_url(repo: str) -> str:
    """``github.server_url``: the scheme and host of the repository's URL (https for ssh)."""
    if "://" in repo:
        parts = urlsplit(repo)
        if not parts.hostname:
            return ""
        scheme = parts.scheme if parts.scheme in ("http", "https") else "https"
        port = f":{parts.port}" if parts.port and scheme == parts.scheme else ""
        return f"{scheme}://{parts.hostname}{port}"
    if "@" in repo and ":" in repo:  # user@host:owner/name
        return "https://" + repo.split("@", 1)[1].split(":", 1)[0]
    return ""


def _pull_refs(event: dict[str, Any]) -> tuple[str, str]:
    pr = event.get("pull_request")
    if not isinstance(pr, dict):
        return "", ""
    head, base = pr.get("head"), pr.get("base")
    head_ref = head.get("ref") if isinstance(head, dict) else None
    base_ref = base.get("ref") if isinstance(base, dict) else None
    return str(head_ref or ""), str(base_ref or "")


def _actor(facts: RunFacts) -> str:
    if facts.actor:
        return facts.actor
    for key in ("sender", "pusher"):
        who = facts.event.get(key)
        if isinstance(who, dict):
            name = who.get("login") or who.get("username") or who.get("name")
            if isinstance(name, str):
                return name
    return ""


def github_context(
    *,
    repo: str,
    ref: str,
    sha: str,
    event_name: str,
    facts: RunFacts,
    run_id: str,
    job: str = "",
    attempt: int = 1,
    workspace: str = "",
    event_path: str = "",
    token: str = "",
    workflow: str = "",
) -> dict[str, Any]:
    """``github.*`` (also ``gitea.*`` and ``forgejo.*``) of a run, or of one job of it."""
    full_ref, ref_name, ref_type = ref_facts(ref)
    repository = github_repository(repo)
    head_ref, base_ref = (
        _pull_refs(facts.event) if event_name.startswith("pull_request") else ("", "")
    )
    return {
        "action": "",
        "action_path": "",
        "action_ref": "",
        "action_repository": "",
        "actor": _actor(facts),
        "base_ref": base_ref,
        "event": facts.event,
        "event_name": event_name,
        "event_path": event_path,
        "head_ref": head_ref,
        "job": job,
        "ref": full_ref,
        "ref_name": ref_name,
        "ref_type": ref_type,
        "repository": repository,
        "repository_owner": repository.split("/", 1)[0] if "/" in repository else "",
        "run_attempt": str(attempt),
        "run_id": run_id,
        "run_number": str(facts.run_number),
        "server_url": server_url(repo),
        "sha": sha,
        "token": token,
        "workflow": workflow,
        "workspace": workspace,
    }
