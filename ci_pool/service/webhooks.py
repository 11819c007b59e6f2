"""Webhooks from Gitea, Forgejo and GitHub: check the HMAC signature, refuse replayed
deliveries, read the repository's workflows at the pushed commit (or a pull request's head,
see ``pull_requests``) and submit those the event triggers.

Deliveries are recorded (and replays refused, by delivery id and by content) in
``ci_pool.store.deliveries`` before anything is submitted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ci_pool.core.jsontext import json_depth
from ci_pool.core.names import check_ref, check_repo_url, is_sha
from ci_pool.core.policy import SecretUnavailable, Submitter, read_secret_source
from ci_pool.core.triggers import bounded_payload, push_trigger, skip_marker
from ci_pool.core.workflow.parser import parse_workflow
from ci_pool.core.workflow.run_context import RunFacts
from ci_pool.defaults import MAX_JSON_DEPTH
from ci_pool.exceptions import CIPoolError, InputError
from ci_pool.git import GitRunner
from ci_pool.service.pool import Pool
from ci_pool.service.pull_requests import parse_pull_request, run_workflows
from ci_pool.settings import Settings
from ci_pool.store.deliveries import HookRefused as HookRefused
from ci_pool.store.deliveries import Push as Push
from ci_pool.store.deliveries import WebhookDelivery as WebhookDelivery
from ci_pool.store.deliveries import forget, record_delivery, set_pipelines

log = logging.getLogger("ci_pool.service.webhooks")

Provider = Literal["gitea", "github", "forgejo"]
PROVIDERS: tuple[Provider, ...] = ("gitea", "github", "forgejo")
#: Events a provider names for a pull request (Gitea may name the new-commits one apart).
PULL_REQUEST_EVENTS = frozenset({"pull_request", "pull_request_sync"})


@dataclass(frozen=True, slots=True)
class _Headers:
    signature: str
    event: str
    delivery: str
    #: What precedes the hex digest in the signature header.
    prefix: str
    #: Where the workflows are read from, the first directory holding any winning.
    workflow_dirs: tuple[str, ...]


HEADERS: dict[Provider, _Headers] = {
    "gitea": _Headers(
        "x-gitea-signature",
        "x-gitea-event",
        "x-gitea-delivery",
        "",
        (".gitea/workflows", ".github/workflows"),
    ),
    "github": _Headers(
        "x-hub-signature-256",
        "x-github-event",
        "x-github-delivery",
        "sha256=",
        (".github/workflows",),
    ),
    "forgejo": _Headers(
        "x-forgejo-signature",
        "x-forgejo-event",
        "x-forgejo-delivery",
        "",
        (".forgejo/workflows", ".gitea/workflows", ".github/workflows"),
    ),
}

#: A webhook sender waits about 10 s for an answer; reading the workflows must be quick.
FETCH_TIMEOUT = 60.0
#: Largest body accepted (GitHub caps its payloads at 25 MB; pushes are far smaller).
MAX_BODY = 5 * 1024 * 1024
MAX_WORKFLOW_BYTES = 512 * 1024
MAX_WORKFLOWS = 50
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_DELIVERY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


# -- signatures -----------------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``body``, as both providers compute it."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(
    provider: Provider, secret: str, body: bytes, headers: Mapping[str, str]
) -> None:
    """Raise a 401 HookRefused unless the provider's signature header signs ``body``.

    Messages name the header and the expected form, never the secret or a digest."""
    spec = HEADERS[provider]
    name = _header_title(spec.signature)
    given = headers.get(spec.signature)
    if not given:
        raise HookRefused(
            401,
            "unauthorized",
            f"the {name} header is missing; set the webhook's secret in {_who(provider)}",
        )
    digest = given.strip()
    if spec.prefix:
        if not digest.startswith(spec.prefix):
            raise HookRefused(
                401,
                "unauthorized",
                f"the {name} header must be {spec.prefix!r} followed by the hex HMAC-SHA256 "
                "of the body",
            )
        digest = digest[len(spec.prefix) :]
    if not _HEX64.match(digest):
        raise HookRefused(
            401, "unauthorized", f"the {name} header is not a hex HMAC-SHA256 of the body"
        )
    if not hmac.compare_digest(sign(secret, body), digest.lower()):
        raise HookRefused(
            401,
            "unauthorized",
            f"the {name} header does not match the body; check that the webhook's secret "
            "is the one configured for ci-pool",
        )


def _header_title(name: str) -> str:
    return "-".join("GitHub" if p == "github" else p.title() for p in name.split("-"))


def _who(provider: str) -> str:
    return {"github": "GitHub", "gitea": "Gitea", "forgejo": "Forgejo"}[provider]


# -- payloads ---------------------------------------------------------------------------------


class HookRepository(BaseModel):
    model_config = ConfigDict(extra="ignore")

    clone_url: str = Field(min_length=1, max_length=2048)
    full_name: str = Field(default="", max_length=512)


class HookCommit(BaseModel):
    model_config = ConfigDict(extra="ignore")

    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    modified: list[str] = Field(default_factory=list)


#: A commit list this long may have been cut short by the forge (GitHub lists at most 2048).
MAX_LISTED_COMMITS = 2048


class PushPayload(BaseModel):
    """The fields of a push event (same names in Gitea and GitHub) that ci-pool reads."""

    model_config = ConfigDict(extra="ignore")

    ref: str = Field(min_length=1, max_length=255)
    before: str = Field(default="", max_length=64)
    after: str = Field(min_length=1, max_length=64)
    #: GitHub says so; Gitea gives an ``after`` of zeros.
    deleted: bool = False
    repository: HookRepository
    #: The pushed commits with the files each touched (capped by the forge).
    commits: list[HookCommit] = Field(default_factory=list)
    #: Gitea: how many commits the push had, of which ``commits`` may hold fewer.
    total_commits: int | None = None

    def changed_files(self) -> frozenset[str] | None:
        """Every file the pushed commits touched, or None when the payload cannot say:
        a new ref (no ``before``), no commit list, or a list cut short by the forge."""
        if not self.commits or not self.before or set(self.before) == {"0"}:
            return None
        if self.total_commits is not None and self.total_commits > len(self.commits):
            return None
        if len(self.commits) >= MAX_LISTED_COMMITS:
            return None
        return frozenset(f for c in self.commits for f in (*c.added, *c.removed, *c.modified))


def load_body(body: bytes, content_type: str) -> Any:
    """The JSON of a delivery, sent as JSON or as GitHub's form-encoded ``payload=`` field."""
    try:
        text = body
        if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            fields = parse_qs(body.decode(), strict_parsing=True)
            if "payload" not in fields:
                raise InputError("a form-encoded delivery needs a payload field", field="payload")
            text = fields["payload"][0].encode()
        if json_depth(text) > MAX_JSON_DEPTH:
            raise InputError(
                f"the body is nested too deeply to be a push event (over {MAX_JSON_DEPTH} levels)",
                field="body",
            )
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"the body is not valid JSON: {exc}", field="body") from None


def parse_push(data: Any, allow_local_repos: bool) -> Push | str:
    """The push a payload describes, or why it starts nothing (a deleted ref, a ref that is
    neither a branch nor a tag). Invalid payloads raise InputError naming the field."""
    try:
        event = PushPayload.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or None
        raise InputError(err["msg"].removeprefix("Value error, "), field=where) from None
    if event.deleted or set(event.after) == {"0"}:
        return f"{event.ref} was deleted; there is no commit to run"
    if not is_sha(event.after):
        raise InputError(f"{event.after!r} is not a full commit id", field="after")
    kind: Literal["branch", "tag"]
    if event.ref.startswith("refs/heads/"):
        kind, name = "branch", event.ref.removeprefix("refs/heads/")
    elif event.ref.startswith("refs/tags/"):
        kind, name = "tag", event.ref.removeprefix("refs/tags/")
    else:
        return f"{event.ref} is neither a branch nor a tag"
    try:
        check_ref(name)
    except ValueError as exc:
        raise InputError(f"{name!r} {exc}", field="ref") from None
    repo = event.repository.clone_url
    try:
        check_repo_url(repo, allow_local=allow_local_repos)
    except ValueError as exc:
        raise InputError(str(exc), field="repository.clone_url") from None
    return Push(kind, name, event.after, repo, event.changed_files(), event.before)


# -- workflows at the pushed commit ---------------------------------------------------------


@dataclass
class Workflows:
    """The workflow files of one commit (path, text) and the files left out (path, why)."""

    commit: str
    files: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def fetch_workflows(settings: Settings, provider: Provider, repo: str, commit: str) -> Workflows:
    """Fetch ``commit`` alone (depth 1, no blobs but those read) into a temporary
    repository and read its workflow files; failures are CheckoutErrors."""
    git = GitRunner.for_settings(settings, repo)
    with tempfile.TemporaryDirectory(prefix="ci-pool-hook-") as tmp:
        git.run("init", "-q", "--bare", tmp)
        git.run("-C", tmp, "config", "remote.origin.url", repo)
        fetch = ["-C", tmp, "fetch", "-q", "--no-tags", "--depth=1"]
        if settings.checkout_filter:
            fetch.append(f"--filter={settings.checkout_filter}")
        git.run(*fetch, "--end-of-options", "origin", commit, timeout=FETCH_TIMEOUT)
        # An annotated tag's push names the tag object; jobs check out its commit.
        peeled = git.run("-C", tmp, "rev-parse", "--verify", "-q", f"{commit}^{{commit}}")
        found = Workflows(peeled.stdout.strip())
        for directory in HEADERS[provider].workflow_dirs:
            listing = git.run("-C", tmp, "ls-tree", "-z", found.commit, "--", directory + "/")
            for entry in listing.stdout.split("\0"):
                meta, _, path = entry.partition("\t")
                if not path.endswith((".yml", ".yaml")):
                    continue
                mode, kind, oid = meta.split()
                if kind == "blob":
                    _read_workflow(git, tmp, path, mode, oid, found)
            if found.files or found.skipped:
                break
    return found


def _read_workflow(
    git: GitRunner, repo: str, path: str, mode: str, oid: str, into: Workflows
) -> None:
    """Read one workflow blob (fetched on demand) into ``into``, or say why not."""
    if mode == "120000":
        into.skipped.append((path, "symbolic links are not read as workflows"))
        return
    if len(into.files) >= MAX_WORKFLOWS:
        into.skipped.append((path, f"more than {MAX_WORKFLOWS} workflow files"))
        return
    size = git.run("-C", repo, "cat-file", "-s", oid, timeout=FETCH_TIMEOUT).stdout.strip()
    if int(size) > MAX_WORKFLOW_BYTES:
        into.skipped.append((path, f"larger than {MAX_WORKFLOW_BYTES} bytes"))
        return
    try:
        text = git.run("-C", repo, "cat-file", "blob", oid).stdout
    except UnicodeDecodeError:
        into.skipped.append((path, "not UTF-8 text"))
        return
    into.files.append((path, text))


# -- one delivery ---------------------------------------------------------------------------


@dataclass
class HookResult:
    """What a delivery did: (file, pipeline id) started and (file, reason) not run."""

    delivery: str
    event: str
    #: 200 for a ping, 202 for everything else accepted.
    status: int
    message: str
    pipelines: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def webhook_secret(settings: Settings, provider: Provider) -> str:
    """The provider's secret; without one every delivery is refused (403)."""
    source = settings.webhook_secrets.get(provider)
    if not source:
        raise HookRefused(
            403,
            "webhooks_disabled",
            f"{provider} webhooks are off: the operator has configured no secret for them "
            f"(webhook_secrets.{provider})",
        )
    try:
        secret = read_secret_source(source, f"webhook secret for {provider}")
    except SecretUnavailable as exc:
        log.error("webhook %s: %s", provider, exc)
        raise HookRefused(
            503, "webhooks_unavailable", f"the {provider} webhook secret cannot be read"
        ) from None
    if not secret:
        raise HookRefused(503, "webhooks_unavailable", f"the {provider} webhook secret is empty")
    return secret


def receive(pool: Pool, provider: Provider, headers: Mapping[str, str], body: bytes) -> HookResult:
    """Verify, de-duplicate and act on one delivery."""
    headers = {k.lower(): v for k, v in headers.items()}
    spec = HEADERS[provider]
    verify_signature(provider, webhook_secret(pool.settings, provider), body, headers)
    delivery = headers.get(spec.delivery, "")
    if not _DELIVERY.match(delivery):
        raise InputError(
            f"the {_header_title(spec.delivery)} header must be a delivery id "
            "(1-128 letters, digits, '.', '_', ':' or '-')",
            field=spec.delivery,
        )
    event = headers.get(spec.event, "").strip()
    data = load_body(body, headers.get("content-type", "application/json"))
    if event == "ping":
        record_delivery(pool.store, provider, delivery, event)
        return HookResult(delivery, event, 200, "pong")
    if event in PULL_REQUEST_EVENTS:
        return _pull_request(pool, provider, delivery, data)
    if event != "push":
        record_delivery(pool.store, provider, delivery, event[:64] or "unknown")
        return HookResult(
            delivery, event, 202, f"ignored: {event or 'an unnamed'} event is not handled"
        )
    push = parse_push(data, pool.settings.allow_local_repos)
    if isinstance(push, str):
        record_delivery(pool.store, provider, delivery, event)
        return HookResult(delivery, event, 202, f"ignored: {push}")
    marker = skip_marker(data, push.commit)
    if marker is not None:
        record_delivery(pool.store, provider, delivery, event)
        why = f"ignored: the message of {push.commit[:12]} says {marker}"
        log.info("webhook %s delivery %s: %s", provider, delivery, why)
        return HookResult(delivery, event, 202, why)
    window = pool.settings.webhook_replay_window
    record_delivery(pool.store, provider, delivery, event, push, replay_window=window)
    try:
        workflows = fetch_workflows(pool.settings, provider, push.repo, push.commit)
    except CIPoolError:
        forget(pool.store, provider, delivery)
        raise
    result = HookResult(delivery, event, 202, "", skipped=list(workflows.skipped))
    trigger = push_event(push, workflows.commit, data)
    for path, text in workflows.files:
        result.pipelines += _submit(
            pool, push, workflows.commit, path, text, result.skipped, _submitter(provider), trigger
        )
    set_pipelines(pool.store, provider, delivery, [pid for _, pid in result.pipelines])
    dirs = " or ".join(d + "/" for d in spec.workflow_dirs)
    result.message = (
        f"{len(result.pipelines)} pipeline(s) started, {len(result.skipped)} workflow(s) skipped"
        if workflows.files or workflows.skipped
        else f"the commit has no workflow files in {dirs}"
    )
    log.info(
        "webhook %s delivery %s: push of %s %s at %s: %s",
        provider,
        delivery,
        push.kind,
        push.name,
        workflows.commit,
        result.message,
    )
    return result


def push_event(push: Push, commit: str, data: Any) -> RunFacts:
    """The facts of a push kept with its pipelines (``github.ref_type``, ``github.event``)."""
    pusher = data.get("pusher") if isinstance(data, dict) else None
    actor = pusher.get("login") or pusher.get("name") if isinstance(pusher, dict) else ""
    return RunFacts(
        event_name="push",
        ref=push.ref,
        ref_type=push.kind,
        ref_name=push.name,
        sha=commit,
        actor=str(actor or "")[:200],
        event=bounded_payload(data),
    )


def _pull_request(pool: Pool, provider: Provider, delivery: str, data: Any) -> HookResult:
    """Run the workflows of a pull request's head commit that it triggers."""
    pr = parse_pull_request(data, pool.settings)
    window = pool.settings.webhook_replay_window
    record_delivery(
        pool.store, provider, delivery, "pull_request", pr.as_push(), replay_window=window
    )
    try:
        workflows = fetch_workflows(pool.settings, provider, pr.head_repo, pr.head_sha)
    except CIPoolError:
        forget(pool.store, provider, delivery)
        raise
    result = HookResult(delivery, "pull_request", 202, "", skipped=list(workflows.skipped))
    result.pipelines = run_workflows(
        pool, provider, pr, workflows.commit, workflows.files, data, result.skipped
    )
    set_pipelines(pool.store, provider, delivery, [pid for _, pid in result.pipelines])
    result.message = (
        f"pull request #{pr.number} {pr.action}: {len(result.pipelines)} pipeline(s) started, "
        f"{len(result.skipped)} workflow(s) skipped"
    )
    log.info("webhook %s delivery %s: %s", provider, delivery, result.message)
    return result


def _submitter(provider: str) -> Submitter:
    """A verified delivery counts as signed (by the provider's webhook secret); the
    capabilities' repository and ref allowlists still apply."""
    return Submitter(name=f"{provider} webhook", signed_by=f"webhook:{provider}", operator=False)


def _submit(
    pool: Pool,
    push: Push,
    commit: str,
    path: str,
    text: str,
    skipped: list[tuple[str, str]],
    who: Submitter,
    trigger: RunFacts,
) -> list[tuple[str, str]]:
    """Submit one workflow if the push triggers it; refusals are noted in ``skipped``."""
    try:
        on = parse_workflow(text, path, pool.settings.admission).on
        why = push_trigger(on, push.kind, push.name, push.changed)
        if why is not None:
            skipped.append((path, why))
            return []
        row = pool.submit_pipeline(
            text, file=path, repo=push.repo, ref=push.name, commit=commit, who=who, trigger=trigger
        )
    except CIPoolError as exc:
        log.info("webhook: workflow %s not run: %s", path, exc)
        skipped.append((path, str(exc)))
        return []
    return [(path, row.id)]
