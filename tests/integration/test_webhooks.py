"""Push webhooks against the real store, broker, git daemon and a linux worker: signed
deliveries run the repository's matching workflows at the pushed commit."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from ci_pool.api import create_app
from ci_pool.embedded import make_repo
from ci_pool.exceptions import CheckoutError
from ci_pool.service import webhooks
from ci_pool.service.pool import Pool
from ci_pool.service.webhooks import WebhookDelivery, sign
from ci_pool.settings import Settings, load_settings
from ci_pool.store.models import Pipeline as PipelineRow
from tests.conftest import APP_FILES, GitServer, Harness, Worker

pytestmark = pytest.mark.integration

CI = """\
name: ci
on:
  push:
    branches: [main]
jobs:
  build:
    runs-on: linux
    steps:
      - run: sh build.sh
"""
RELEASE = """\
name: release
on:
  push:
    tags: ['v*']
jobs:
  publish:
    runs-on: linux
    steps:
      - run: echo "releasing $(cat VERSION) from $CI_POOL_COMMIT_SHA"
"""
BROKEN = """\
name: broken
on: push
jobs:
  a:
    runs-on: linux
    steps:
      - uses: actions/setup-node
"""
GITHUB = """\
name: gh
on: [push]
jobs:
  check:
    runs-on: linux
    steps:
      - run: echo "github workflow on $CI_POOL_REF"
"""
FILES = {
    **APP_FILES,
    ".gitea/workflows/ci.yml": CI,
    ".gitea/workflows/release.yaml": RELEASE,
    ".gitea/workflows/broken.yml": BROKEN,
    ".gitea/workflows/notes.txt": "not a workflow\n",
    ".github/workflows/gh.yml": GITHUB,
}
GIT_ENV = {
    **os.environ,
    "GIT_COMMITTER_NAME": "ci-pool",
    "GIT_COMMITTER_EMAIL": "ci-pool@localhost",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


@dataclass
class HookRepo:
    url: str
    commit: str
    #: The annotated tag v1.0.0's own object id (what a tag push may name).
    tag_object: str


@dataclass
class Hooks:
    client: TestClient
    settings: Settings
    secrets: dict[str, str]
    repo: HookRepo


@pytest.fixture(scope="module")
def hook_repo(git_server: GitServer) -> HookRepo:
    bare = git_server.base / "hooks.git"
    # Module-scoped and shared with the security tests: each module gets the repo afresh.
    shutil.rmtree(bare, ignore_errors=True)
    sha = make_repo(bare, FILES)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(bare), *args], env=GIT_ENV, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("branch", "feature/x", sha)
    git("tag", "-a", "-m", "release 1.0.0", "v1.0.0", sha)
    return HookRepo(git_server.url("hooks.git"), sha, git("rev-parse", "v1.0.0"))


def webhook_settings(harness: Harness, keys: Path) -> tuple[Settings, dict[str, str]]:
    """The pool's settings with a fresh secret per provider, generated now and kept in
    files under ``keys``; the secrets by provider."""
    values = {p: secrets.token_urlsafe(24) for p in webhooks.PROVIDERS}
    for provider, value in values.items():
        (keys / provider).write_text(value + "\n")
    settings = load_settings(
        harness.config,
        broker_url=harness.redis_url,
        home=harness.root / "home",
        **harness.overrides,
        webhook_secrets={p: f"file:{keys / p}" for p in webhooks.PROVIDERS},
    )
    return settings, values


@pytest.fixture(scope="module")
def hooks(
    harness: Harness, hook_repo: HookRepo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hooks]:
    """The API with a fresh secret per provider, generated now and kept in files."""
    settings, values = webhook_settings(harness, tmp_path_factory.mktemp("hook-secrets"))
    with TestClient(create_app(settings)) as client:
        yield Hooks(client, settings, values, hook_repo)


def push_body(repo: str, ref: str, after: str, **extra: Any) -> bytes:
    """A push payload; ``before`` is random unless given, so each body is a new push (the
    same push is accepted once, whatever its delivery id)."""
    return json.dumps(
        {
            "ref": ref,
            "before": uuid.uuid4().hex + "0" * 8,
            "after": after,
            "repository": {"clone_url": repo, "full_name": "org/hooks"},
            "pusher": {"login": "dev"},
            **extra,
        }
    ).encode()


def deliver(
    hooks: Hooks,
    provider: str,
    body: bytes,
    *,
    event: str = "push",
    delivery: str | None = None,
    signature: str | None = "valid",
    content_type: str = "application/json",
    signed_body: bytes | None = None,
) -> httpx.Response:
    delivery = delivery or str(uuid.uuid4())
    if provider in ("gitea", "forgejo"):
        name = provider.title()
        headers = {f"X-{name}-Event": event, f"X-{name}-Delivery": delivery}
        sig_header, prefix = f"X-{name}-Signature", ""
    else:
        headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery}
        sig_header, prefix = "X-Hub-Signature-256", "sha256="
    if signature == "valid":
        headers[sig_header] = prefix + sign(hooks.secrets[provider], signed_body or body)
    elif signature is not None:
        headers[sig_header] = signature
    headers["Content-Type"] = content_type
    return hooks.client.post(f"/v1/hooks/{provider}", content=body, headers=headers)


def pipeline_count(harness: Harness) -> int:
    with harness.pool().store.session(write=False) as s:
        return s.scalar(select(func.count()).select_from(PipelineRow)) or 0


def wait_pipeline(harness: Harness, pipeline_id: str, timeout: float = 120) -> PipelineRow:
    store = harness.pool().store
    deadline = time.monotonic() + timeout
    while (row := store.get_pipeline(pipeline_id)).state == "running":
        assert time.monotonic() < deadline, f"pipeline {pipeline_id} did not finish"
        time.sleep(0.1)
    return row


def files_of(res: httpx.Response) -> tuple[list[str], dict[str, str]]:
    body = res.json()
    return [p["file"] for p in body["pipelines"]], {s["file"]: s["reason"] for s in body["skipped"]}


def assert_error(res: httpx.Response, status: int, code: str) -> None:
    assert res.status_code == status, res.text
    assert set(res.json()) == {"error"} and res.json()["error"]["code"] == code


def test_gitea_push_runs_the_matching_workflow_on_a_worker(
    harness: Harness, hooks: Hooks, linux_worker: Worker
) -> None:
    repo = hooks.repo
    res = deliver(hooks, "gitea", push_body(repo.url, "refs/heads/main", repo.commit))
    assert res.status_code == 202, res.text
    ran, skipped = files_of(res)
    assert ran == [".gitea/workflows/ci.yml"]
    assert set(skipped) == {".gitea/workflows/release.yaml", ".gitea/workflows/broken.yml"}
    assert "only tags" in skipped[".gitea/workflows/release.yaml"]
    assert (
        "'actions/setup-node' is not an action reference" in skipped[".gitea/workflows/broken.yml"]
    )
    assert res.json()["message"] == "1 pipeline(s) started, 2 workflow(s) skipped"

    pipeline_id = res.json()["pipelines"][0]["pipeline_id"]
    row = wait_pipeline(harness, pipeline_id)
    assert row.state == "succeeded"
    assert (row.event, row.ref, row.commit_sha, row.repo) == ("push", "main", repo.commit, repo.url)
    store = harness.pool().store
    [job] = store.pipeline_jobs(pipeline_id)
    assert f"building {job.id} at {repo.commit}" in store.read_log(job.id)
    with store.session(write=False) as s:
        recorded = s.get(WebhookDelivery, ("gitea", res.json()["delivery"]))
    assert recorded is not None and recorded.pipeline_ids == [pipeline_id]
    assert (recorded.event, recorded.ref, recorded.commit_sha) == ("push", "main", repo.commit)


def test_github_push_signed_with_x_hub_signature_256(
    harness: Harness, hooks: Hooks, linux_worker: Worker
) -> None:
    repo = hooks.repo
    # GitHub's default content type: the JSON in a form field, signed as sent.
    body = urlencode(
        {"payload": push_body(repo.url, "refs/heads/feature/x", repo.commit).decode()}
    ).encode()
    res = deliver(hooks, "github", body, content_type="application/x-www-form-urlencoded")
    assert res.status_code == 202, res.text
    ran, skipped = files_of(res)
    assert (ran, skipped) == ([".github/workflows/gh.yml"], {})
    row = wait_pipeline(harness, res.json()["pipelines"][0]["pipeline_id"])
    assert row.state == "succeeded" and row.ref == "feature/x"
    [job] = harness.pool().store.pipeline_jobs(row.id)
    assert "github workflow on feature/x" in harness.pool().store.read_log(job.id)


@pytest.mark.parametrize("provider", ["gitea", "github"])
def test_invalid_or_missing_signature_is_401_and_creates_nothing(
    harness: Harness, hooks: Hooks, provider: str
) -> None:
    repo = hooks.repo
    body = push_body(repo.url, "refs/heads/main", repo.commit)
    before = pipeline_count(harness)
    other_secret = prefix_of(provider) + sign("not-the-secret", body)
    bad = deliver(hooks, provider, body, signature=other_secret, delivery="sig-" + provider)
    assert_error(bad, 401, "unauthorized")
    assert "does not match" in bad.json()["error"]["message"]
    tampered = deliver(hooks, provider, body + b" ", signed_body=body, delivery="sig-" + provider)
    assert_error(tampered, 401, "unauthorized")
    missing = deliver(hooks, provider, body, signature=None, delivery="sig-" + provider)
    assert_error(missing, 401, "unauthorized")
    assert "missing" in missing.json()["error"]["message"]
    for res in (bad, tampered, missing):
        assert hooks.secrets[provider] not in res.text
        assert sign(hooks.secrets[provider], body) not in res.text
    assert pipeline_count(harness) == before
    # A delivery id refused for its signature was not recorded: it may come again, signed.
    again = deliver(hooks, provider, body, delivery="sig-" + provider)
    assert again.status_code == 202, again.text
    assert pipeline_count(harness) == before + 1


def prefix_of(provider: str) -> str:
    return "sha256=" if provider == "github" else ""


def test_replayed_delivery_is_409_and_runs_nothing_more(harness: Harness, hooks: Hooks) -> None:
    repo = hooks.repo
    body = push_body(repo.url, "refs/heads/main", repo.commit)
    delivery = f"replay-{uuid.uuid4()}"
    first = deliver(hooks, "gitea", body, delivery=delivery)
    assert first.status_code == 202, first.text
    assert len(first.json()["pipelines"]) == 1
    before = pipeline_count(harness)
    again = deliver(hooks, "gitea", body, delivery=delivery)
    assert_error(again, 409, "replayed")
    assert delivery in again.json()["error"]["message"]
    assert pipeline_count(harness) == before


def test_branch_not_matching_is_202_with_the_workflow_skipped(
    harness: Harness, hooks: Hooks
) -> None:
    repo = hooks.repo
    before = pipeline_count(harness)
    res = deliver(hooks, "gitea", push_body(repo.url, "refs/heads/feature/x", repo.commit))
    assert res.status_code == 202, res.text
    ran, skipped = files_of(res)
    assert ran == []
    assert skipped[".gitea/workflows/ci.yml"] == (
        "on.push.branches (main) does not match branch 'feature/x'"
    )
    assert pipeline_count(harness) == before


def test_tag_push_runs_the_tag_workflow_only(
    harness: Harness, hooks: Hooks, linux_worker: Worker
) -> None:
    repo = hooks.repo
    res = deliver(hooks, "gitea", push_body(repo.url, "refs/tags/v1.0.0", repo.tag_object))
    assert res.status_code == 202, res.text
    ran, skipped = files_of(res)
    assert ran == [".gitea/workflows/release.yaml"]
    assert "only branches" in skipped[".gitea/workflows/ci.yml"]
    row = wait_pipeline(harness, res.json()["pipelines"][0]["pipeline_id"])
    assert row.state == "succeeded"
    # The annotated tag's object is peeled: jobs run at its commit.
    assert (row.ref, row.commit_sha) == ("v1.0.0", repo.commit)
    [job] = harness.pool().store.pipeline_jobs(row.id)
    assert f"releasing 1.2.3 from {repo.commit}" in harness.pool().store.read_log(job.id)


def test_ping_deleted_branch_and_other_events(hooks: Hooks) -> None:
    pong = deliver(hooks, "github", b'{"zen": "Keep it logically awesome."}', event="ping")
    assert pong.status_code == 200 and pong.json()["message"] == "pong"
    body = push_body(hooks.repo.url, "refs/heads/gone", "0" * 40)
    gone = deliver(hooks, "gitea", body)
    assert gone.status_code == 202 and "refs/heads/gone was deleted" in gone.json()["message"]
    issue = deliver(hooks, "gitea", b'{"action": "opened"}', event="issues")
    assert issue.status_code == 202 and issue.json()["message"].startswith("ignored:")


@pytest.mark.parametrize(
    ("provider", "commit_fields"),
    [
        ("github", {"head_commit": {"message": "docs: typo\n\n[skip ci]"}}),
        ("gitea", {"head_commit": {"message": "[CI SKIP] only the readme"}}),
        ("gitea", {"commits": [{"id": "", "message": "[no ci] listed, not the head"}]}),
    ],
)
def test_a_push_whose_head_commit_says_skip_ci_starts_nothing(
    harness: Harness, hooks: Hooks, provider: str, commit_fields: dict[str, Any]
) -> None:
    repo = hooks.repo
    if "commits" in commit_fields:  # the marker in the head commit's entry of the list
        commit_fields = {"commits": [{**commit_fields["commits"][0], "id": repo.commit}]}
    before = pipeline_count(harness)
    res = deliver(
        hooks, provider, push_body(repo.url, "refs/heads/main", repo.commit, **commit_fields)
    )
    assert res.status_code == 202, res.text
    message = res.json()["message"]
    assert message.startswith(f"ignored: the message of {repo.commit[:12]} says [")
    assert res.json()["pipelines"] == []
    assert pipeline_count(harness) == before


def test_a_skip_marker_in_an_earlier_commit_does_not_skip_the_push(
    harness: Harness, hooks: Hooks, linux_worker: Worker
) -> None:
    repo = hooks.repo
    fields = {
        "head_commit": {"id": repo.commit, "message": "fix the build"},
        "commits": [{"id": "0" * 40, "message": "wip [skip ci]"}],
    }
    res = deliver(hooks, "gitea", push_body(repo.url, "refs/heads/main", repo.commit, **fields))
    assert res.status_code == 202, res.text
    assert files_of(res)[0] == [".gitea/workflows/ci.yml"]
    assert wait_pipeline(harness, res.json()["pipelines"][0]["pipeline_id"]).state == "succeeded"


def test_a_commit_without_workflows_starts_nothing(hooks: Hooks, git_server: GitServer) -> None:
    body = push_body(git_server.url(), "refs/heads/main", git_server.shas["app.git"])
    res = deliver(hooks, "gitea", body)
    assert res.status_code == 202, res.text
    assert res.json()["pipelines"] == [] and res.json()["skipped"] == []
    assert "no workflow files in .gitea/workflows/ or .github/workflows/" in res.json()["message"]


def test_local_repository_urls_are_refused(hooks: Hooks, git_server: GitServer) -> None:
    body = push_body(f"file://{git_server.base / 'hooks.git'}", "refs/heads/main", "a" * 40)
    res = deliver(hooks, "gitea", body)
    assert res.status_code == 422, res.text
    assert res.json()["error"]["field"] == "repository.clone_url"


def test_an_unreachable_repository_is_503_and_may_be_delivered_again(
    harness: Harness, hooks: Hooks, git_server: GitServer
) -> None:
    body = push_body(git_server.url("missing.git"), "refs/heads/main", "a" * 40)
    delivery = f"unreachable-{uuid.uuid4()}"
    before = pipeline_count(harness)
    for _ in range(2):
        res = deliver(hooks, "gitea", body, delivery=delivery)
        assert_error(res, 503, "infra_unavailable")
        assert "git fetch failed" in res.json()["error"]["message"]
    assert pipeline_count(harness) == before


def test_fetch_follows_url_rewrites(hooks: Hooks, git_server: GitServer) -> None:
    public = "https://git.example.invalid/org/"
    settings = hooks.settings.model_copy(update={"git_url_rewrites": {public: git_server.url("")}})
    found = webhooks.fetch_workflows(settings, "gitea", public + "hooks.git", hooks.repo.commit)
    assert found.commit == hooks.repo.commit
    assert dict(found.files) == {
        ".gitea/workflows/broken.yml": BROKEN,
        ".gitea/workflows/ci.yml": CI,
        ".gitea/workflows/release.yaml": RELEASE,
    }
    github = webhooks.fetch_workflows(settings, "github", public + "hooks.git", hooks.repo.commit)
    assert dict(github.files) == {".github/workflows/gh.yml": GITHUB}
    with pytest.raises(CheckoutError):
        webhooks.fetch_workflows(hooks.settings, "gitea", public + "hooks.git", hooks.repo.commit)


def test_the_webhook_secrets_appear_in_no_response_log_or_store(
    harness: Harness, hooks: Hooks, linux_worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    repo = hooks.repo
    responses: list[httpx.Response] = []
    for provider in webhooks.PROVIDERS:
        body = push_body(repo.url, "refs/heads/main", repo.commit)
        delivery = f"leak-{provider}-{uuid.uuid4()}"
        responses += [
            deliver(hooks, provider, body, delivery=delivery),
            deliver(hooks, provider, body, delivery=delivery),
            deliver(hooks, provider, body, signature="sha256=" + "0" * 64),
            deliver(hooks, provider, body, signature=None),
            deliver(hooks, provider, b"{broken", event="ping"),
        ]
    assert sorted(r.status_code for r in responses) == sorted(
        [202, 409, 401, 401, 422] * len(webhooks.PROVIDERS)
    )
    for res in responses[:1] + responses[5:6]:
        for p in res.json()["pipelines"]:
            wait_pipeline(harness, p["pipeline_id"])
    texts = [r.text + json.dumps(dict(r.headers)) for r in responses]
    texts.append(caplog.text)
    db = sqlite3.connect(harness.root / "home" / "ci-pool.db")
    try:
        texts.append("\n".join(db.iterdump()))
    finally:
        db.close()
    texts += [w.log.read_text(errors="replace") for w in harness.workers]
    for value in hooks.secrets.values():
        assert not any(value in t for t in texts)
    assert "webhook_deliveries" in texts[-1 - len(harness.workers)]


def test_webhook_pipelines_go_through_policy(hooks: Hooks, git_server: GitServer) -> None:
    """A verified delivery counts as signed, but the capability's allowlists still apply:
    the pipeline is recorded rejected with the rule, and the answer says so."""
    bare = git_server.base / "hooks-deploy.git"
    ship = "on: push\njobs:\n  ship:\n    runs-on: deploy\n    steps:\n      - run: ./ship\n"
    sha = make_repo(bare, {".gitea/workflows/ship.yml": ship})
    deploy = hooks.settings.capabilities["deploy"].model_copy(
        update={"repos": ("org/*", "hooks-*"), "refs": ("refs/heads/main",)}
    )
    caps = {**hooks.settings.capabilities, "deploy": deploy}
    settings = hooks.settings.model_copy(update={"capabilities": caps})
    with TestClient(create_app(settings)) as client:
        strict = Hooks(client, settings, hooks.secrets, hooks.repo)
        url = git_server.url("hooks-deploy.git")
        res = deliver(strict, "gitea", push_body(url, "refs/heads/main", sha))
        assert res.status_code == 202, res.text
        started, skipped = files_of(res)
        assert started == [".gitea/workflows/ship.yml"], res.text
        subprocess.run(["git", "-C", str(bare), "branch", "feature", sha], env=GIT_ENV, check=True)
        res = deliver(strict, "gitea", push_body(url, "refs/heads/feature", sha))
        started, skipped = files_of(res)
        assert started == []
        reason = skipped[".gitea/workflows/ship.yml"]
        assert "denied by rule capabilities.deploy.refs" in reason
        pid = reason.split("pipeline ", 1)[1].split(" ", 1)[0]
        assert Pool(settings).store.get_pipeline(pid).state == "rejected"


def test_path_filters_use_the_files_the_push_touched(
    hooks: Hooks, git_server: GitServer, harness: Harness
) -> None:
    bare = git_server.base / "hooks-paths.git"
    wf = (
        "on:\n  push:\n    paths: ['src/**']\n"
        "jobs:\n  build:\n    runs-on: deploy\n    steps:\n      - run: make\n"
    )
    sha = make_repo(bare, {".gitea/workflows/src.yml": wf, "src/a.c": "int a;\n"})
    url = git_server.url("hooks-paths.git")

    def push(*files: str) -> httpx.Response:
        commits = [{"added": [], "removed": [], "modified": list(files)}]
        before = uuid.uuid4().hex + "1" * 8  # each a push of its own (a known, older tip)
        body = push_body(url, "refs/heads/main", sha, before=before, commits=commits)
        return deliver(hooks, "gitea", body)

    started, skipped = files_of(push("docs/readme.md"))
    assert started == []
    assert "matches none of the 1 changed file(s)" in skipped[".gitea/workflows/src.yml"]
    started, skipped = files_of(push("docs/readme.md", "src/a.c"))
    assert started == [".gitea/workflows/src.yml"], skipped
