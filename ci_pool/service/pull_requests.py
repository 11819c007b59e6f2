"""Pull request webhooks (Gitea, Forgejo, GitHub): run the workflows of the pull request's
head commit that ``on.pull_request`` selects, under the pull request policy.

The head commit is fetched from the head repository (a fork, or the base repository
itself) only when its git server passes ``git_hosts`` and the address fences; otherwise the
delivery is refused before any connection. Its pipelines get no capability secrets (unless
``pull_request_secrets``) and run only on capabilities that are not strict (see
``core.policy.check_pull_request``): a job routed to ``iso`` or ``deploy`` is ``rejected``
with the reason. ``pull_request_target`` is never run.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ci_pool.core.names import check_ref, check_repo_url, is_sha
from ci_pool.core.policy import Submitter
from ci_pool.core.triggers import bounded_payload, pr_action, pull_request_trigger
from ci_pool.core.workflow.parser import parse_workflow
from ci_pool.core.workflow.run_context import RunFacts
from ci_pool.exceptions import CIPoolError, InputError
from ci_pool.git import GitRunner
from ci_pool.remotes import check_remote
from ci_pool.service.pool import Pool
from ci_pool.settings import Settings
from ci_pool.store.deliveries import Push

log = logging.getLogger("ci_pool.service.webhooks")

#: Commits of each side fetched to find where the pull request forked from its base.
DIFF_DEPTH = 200
#: Files listed for ``paths`` filters; a larger change counts as unknown (the workflow runs).
MAX_CHANGED_FILES = 3000


class _PRRepository(BaseModel):
    model_config = ConfigDict(extra="ignore")

    clone_url: str = Field(min_length=1, max_length=2048)
    full_name: str = Field(default="", max_length=512)


class _PRBranch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ref: str = Field(min_length=1, max_length=255)
    sha: str = Field(min_length=1, max_length=64)
    #: GitHub sends null when the fork was deleted.
    repo: _PRRepository | None = None


class _PRBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    head: _PRBranch
    base: _PRBranch


class _Sender(BaseModel):
    model_config = ConfigDict(extra="ignore")

    login: str = Field(default="", max_length=255)


class PullRequestPayload(BaseModel):
    """The fields of a pull_request event (same names in Gitea, Forgejo and GitHub)."""

    model_config = ConfigDict(extra="ignore")

    action: str = Field(min_length=1, max_length=64, pattern=r"^[a-z_]+$")
    number: int = Field(ge=1, le=2**31)
    pull_request: _PRBody
    repository: _PRRepository
    sender: _Sender = Field(default_factory=_Sender)


@dataclass(frozen=True, slots=True)
class PullRequest:
    """A pull request event: its head commit where it lives, and the branch it targets."""

    action: str
    number: int
    head_repo: str
    head_ref: str
    head_sha: str
    base_repo: str
    base_ref: str
    base_sha: str
    actor: str

    @property
    def ref(self) -> str:
        return f"refs/pull/{self.number}/head"

    def as_push(self) -> Push:
        """The delivery record's view: one per (pull request, action, head commit)."""
        return Push("branch", f"pull/{self.number}/{self.action}", self.head_sha, self.base_repo)


def parse_pull_request(data: Any, settings: Settings) -> PullRequest:
    """The pull request a payload describes. Invalid payloads raise InputError naming the
    field; a head repository the pool may not contact raises RemoteRefused (before any
    connection)."""
    try:
        event = PullRequestPayload.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or None
        raise InputError(err["msg"].removeprefix("Value error, "), field=where) from None
    head, base = event.pull_request.head, event.pull_request.base
    for side, branch in (("head", head), ("base", base)):
        if not is_sha(branch.sha):
            raise InputError(f"{branch.sha!r} is not a full commit id", field=f"{side}.sha")
        try:
            check_ref(branch.ref)
        except ValueError as exc:
            raise InputError(f"{branch.ref!r} {exc}", field=f"{side}.ref") from None
    if head.repo is None:
        raise InputError(
            "the pull request's head repository is gone (a deleted fork); nothing to run",
            field="pull_request.head.repo",
        )
    for where, url in (
        ("pull_request.head.repo.clone_url", head.repo.clone_url),
        ("repository.clone_url", event.repository.clone_url),
    ):
        try:
            check_repo_url(url, allow_local=settings.allow_local_repos)
        except ValueError as exc:
            raise InputError(str(exc), field=where) from None
    try:
        check_remote(head.repo.clone_url, settings)
    except InputError as exc:
        raise InputError(
            f"the pull request's head repository {head.repo.clone_url} is refused: {exc}",
            field="pull_request.head.repo.clone_url",
        ) from None
    return PullRequest(
        action=pr_action(event.action),
        number=event.number,
        head_repo=head.repo.clone_url,
        head_ref=head.ref.removeprefix("refs/heads/"),
        head_sha=head.sha,
        base_repo=event.repository.clone_url,
        base_ref=base.ref.removeprefix("refs/heads/"),
        base_sha=base.sha,
        actor=event.sender.login,
    )


def changed_files(settings: Settings, pr: PullRequest) -> frozenset[str] | None:
    """The files the pull request changes since it forked from its base (what ``paths``
    filters judge), or None when git cannot tell within ``DIFF_DEPTH`` commits."""
    try:
        with tempfile.TemporaryDirectory(prefix="ci-pool-pr-") as tmp:
            head = GitRunner.for_settings(settings, pr.head_repo)
            head.run("init", "-q", "--bare", tmp)
            for url, sha in ((pr.head_repo, pr.head_sha), (pr.base_repo, pr.base_sha)):
                git = GitRunner.for_settings(settings, url)
                git.run("-C", tmp, "fetch", "-q", "--no-tags", f"--depth={DIFF_DEPTH}",
                        "--filter=blob:none", "--end-of-options", url, sha,
                        timeout=60.0)  # fmt: skip
            base = head.run("-C", tmp, "merge-base", pr.base_sha, pr.head_sha, check=False)
            if base.returncode != 0:
                return None
            diff = head.run(
                "-C", tmp, "diff", "--name-only", "-z", "--no-renames", base.stdout.strip(),
                pr.head_sha,
            )  # fmt: skip
    except CIPoolError as exc:
        log.info("pull request #%d: changed files unknown: %s", pr.number, exc)
        return None
    files = [f for f in diff.stdout.split("\0") if f]
    return frozenset(files) if len(files) <= MAX_CHANGED_FILES else None


def trigger_of(pr: PullRequest, settings: Settings, payload: Any) -> RunFacts:
    return RunFacts(
        event_name="pull_request",
        ref=pr.ref,
        ref_type="branch",
        ref_name=f"{pr.number}/head",
        sha=pr.head_sha,
        head_ref=pr.head_ref,
        base_ref=pr.base_ref,
        head_repo=pr.head_repo,
        base_repo=pr.base_repo,
        number=pr.number,
        action=pr.action,
        actor=pr.actor[:200],
        secrets_allowed=settings.pull_request_secrets,
        event=bounded_payload(payload),
    )


class _Changes:
    """The changed files, asked of git once and only when a workflow filters on paths."""

    def __init__(self, settings: Settings, pr: PullRequest):
        self.settings, self.pr = settings, pr
        self.known = False
        self.files: frozenset[str] | None = None

    def get(self) -> frozenset[str] | None:
        if not self.known:
            self.files, self.known = changed_files(self.settings, self.pr), True
        return self.files


def run_workflows(
    pool: Pool,
    provider: str,
    pr: PullRequest,
    commit: str,
    files: list[tuple[str, str]],
    payload: Any,
    skipped: list[tuple[str, str]],
) -> list[tuple[str, str]]:
    """Submit each workflow the pull request triggers; refusals go to ``skipped``."""
    who = Submitter(name=f"{provider} pull request #{pr.number}", operator=False)
    trigger = trigger_of(pr, pool.settings, payload)
    changes = _Changes(pool.settings, pr)
    started = []
    for path, text in files:
        try:
            on = parse_workflow(
                text, path, pool.settings.capabilities, pool.settings.max_jobs_per_pipeline
            ).on
            why = pull_request_trigger(on, pr.action, pr.base_ref)
            if why is None and _filters_paths(on):
                why = pull_request_trigger(on, pr.action, pr.base_ref, changes.get())
            if why is not None:
                skipped.append((path, why))
                continue
            row = pool.submit_pipeline(
                text, file=path, repo=pr.head_repo, ref=pr.ref, commit=commit, who=who,
                trigger=trigger,
            )  # fmt: skip
        except CIPoolError as exc:
            log.info("webhook: workflow %s not run for #%d: %s", path, pr.number, exc)
            skipped.append((path, str(exc)))
            continue
        started.append((path, row.id))
    return started


def _filters_paths(on: Any) -> bool:
    spec = on.get("pull_request") if isinstance(on, dict) else None
    return isinstance(spec, dict) and ("paths" in spec or "paths-ignore" in spec)
