"""Triggers from the forge, end to end: signed webhooks to a real API under uvicorn, the
loopback git daemon, a real linux worker; schedules started by real ``ci-pool beat``
processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ci_pool.api.server import make_server, running
from ci_pool.embedded import free_port, make_repo
from ci_pool.service import webhooks
from ci_pool.store.models import Pipeline as PipelineRow
from tests.conftest import APP_FILES, SECRET_VALUE, GitServer, Harness, Worker
from tests.integration.test_api import auth, make_token
from tests.integration.test_webhooks import webhook_settings

pytestmark = pytest.mark.integration

PR_CI = """\
name: pr-ci
on:
  pull_request:
    branches: [main]
jobs:
  test:
    runs-on: linux
    steps:
      - run: |
          echo "pr-run sha=$CI_POOL_COMMIT_SHA token=[${API_TOKEN:-}]"
          cat feature.txt
"""
PR_DEPLOY = """\
name: pr-deploy
on: pull_request
jobs:
  ship:
    runs-on: deploy
    steps:
      - run: echo shipping
"""
PR_DOCS = """\
name: pr-docs
on:
  pull_request:
    paths: ['docs/**']
jobs:
  docs:
    runs-on: linux
    steps:
      - run: echo docs
"""
PR_TARGET = """\
name: pr-target
on: pull_request_target
jobs:
  label:
    runs-on: linux
    steps:
      - run: echo target
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
      - run: echo "releasing $(cat VERSION) at $CI_POOL_REF"
"""
MANUAL = """\
name: manual
on:
  workflow_dispatch:
    inputs:
      target:
        required: true
      level:
        default: info
jobs:
  go:
    runs-on: linux
    steps:
      - run: echo "dispatched by hand"
"""
BASE_FILES = {
    **APP_FILES,
    ".gitea/workflows/manual.yml": MANUAL,
    ".gitea/workflows/pr-ci.yml": PR_CI,
    ".gitea/workflows/pr-deploy.yml": PR_DEPLOY,
    ".gitea/workflows/pr-docs.yml": PR_DOCS,
    ".gitea/workflows/pr-target.yml": PR_TARGET,
    ".gitea/workflows/release.yml": RELEASE,
}


@dataclass
class Forge:
    api: str
    secrets: dict[str, str]
    base_url: str
    base_sha: str
    fork_url: str
    head_sha: str


@pytest.fixture(scope="module")
def forge(
    harness: Harness, git_server: GitServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Forge]:
    """A base repository, a fork with one more commit, and the API under uvicorn with a
    webhook secret per provider generated now."""
    base, fork = git_server.base / "trig-base.git", git_server.base / "trig-fork.git"
    for path in (base, fork):
        shutil.rmtree(path, ignore_errors=True)
    base_sha = make_repo(base, BASE_FILES)
    subprocess.run(["git", "clone", "-q", "--bare", str(base), str(fork)], check=True)
    for key in ("uploadpack.allowFilter", "uploadpack.allowAnySHA1InWant"):
        subprocess.run(["git", "-C", str(fork), "config", key, "true"], check=True)
    head_sha = make_repo(fork, {"feature.txt": "only in the fork\n"}, "feature")
    settings, values = webhook_settings(harness, tmp_path_factory.mktemp("trig-secrets"))
    port = free_port()
    with running(make_server(settings, "127.0.0.1", port, log_level="warning")):
        yield Forge(
            f"http://127.0.0.1:{port}",
            values,
            git_server.url("trig-base.git"),
            base_sha,
            git_server.url("trig-fork.git"),
            head_sha,
        )


def deliver(forge: Forge, provider: str, event: str, payload: dict[str, Any]) -> httpx.Response:
    body = json.dumps(payload).encode()
    prefix = {"github": "X-GitHub", "gitea": "X-Gitea", "forgejo": "X-Forgejo"}[provider]
    sig = webhooks.sign(forge.secrets[provider], body)
    headers = {
        f"{prefix}-Event": event,
        f"{prefix}-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256" if provider == "github" else f"{prefix}-Signature": (
            "sha256=" + sig if provider == "github" else sig
        ),
        "Content-Type": "application/json",
    }
    return httpx.post(f"{forge.api}/v1/hooks/{provider}", content=body, headers=headers)


def pr_payload(
    forge: Forge, action: str, number: int, head_url: str | None = None
) -> dict[str, Any]:
    return {
        "action": action,
        "number": number,
        "pull_request": {
            "title": "add a feature",
            "head": {
                "ref": "feature",
                "sha": forge.head_sha,
                "repo": {"clone_url": head_url or forge.fork_url, "full_name": "contrib/trig"},
            },
            "base": {
                "ref": "main",
                "sha": forge.base_sha,
                "repo": {"clone_url": forge.base_url, "full_name": "org/trig"},
            },
        },
        "repository": {"clone_url": forge.base_url, "full_name": "org/trig"},
        "sender": {"login": "contrib"},
    }


def wait_pipeline(harness: Harness, pipeline_id: str, timeout: float = 120) -> PipelineRow:
    store = harness.pool().store
    deadline = time.monotonic() + timeout
    while (row := store.get_pipeline(pipeline_id)).state == "running":
        assert time.monotonic() < deadline, f"pipeline {pipeline_id} did not finish"
        time.sleep(0.1)
    return row


def job_log(harness: Harness, job_id: str) -> str:
    res = harness.cli("logs", job_id)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_a_pull_request_runs_its_head_commit_without_secrets(
    harness: Harness, forge: Forge, linux_worker: Worker
) -> None:
    res = deliver(forge, "gitea", "pull_request", pr_payload(forge, "opened", 7))
    assert res.status_code == 202, res.text
    body = res.json()
    started = {p["file"]: p["pipeline_id"] for p in body["pipelines"]}
    skipped = {s["file"]: s["reason"] for s in body["skipped"]}
    assert list(started) == [".gitea/workflows/pr-ci.yml"], body
    assert "pull request #7 opened" in body["message"]
    assert "matches none of the 1 changed file(s)" in skipped[".gitea/workflows/pr-docs.yml"]
    assert "pull_request_target is not run" in skipped[".gitea/workflows/pr-target.yml"]
    assert "does not include pull_request" in skipped[".gitea/workflows/release.yml"]

    row = wait_pipeline(harness, started[".gitea/workflows/pr-ci.yml"])
    assert row.state == "succeeded"
    assert (row.event, row.repo, row.commit_sha) == ("pull_request", forge.fork_url, forge.head_sha)
    facts = row.context
    assert facts is not None and facts.event_name == "pull_request"
    assert (facts.head_ref, facts.base_ref) == ("feature", "main")
    assert facts.number == 7 and not facts.secrets_allowed
    assert facts.event["pull_request"]["title"] == "add a feature"
    [job] = harness.pool().store.pipeline_jobs(row.id)
    assert job.secrets == []
    log = job_log(harness, job.id)
    assert f"pr-run sha={forge.head_sha} token=[]" in log
    assert "only in the fork" in log
    assert "pull_request #7: this job gets no capability secrets" in log
    assert SECRET_VALUE not in log


def test_a_pull_request_job_for_deploy_is_rejected_with_the_reason(
    harness: Harness, forge: Forge
) -> None:
    res = deliver(forge, "gitea", "pull_request", pr_payload(forge, "synchronized", 8))
    assert res.status_code == 202, res.text
    skipped = {s["file"]: s["reason"] for s in res.json()["skipped"]}
    assert (
        "capability 'deploy' does not run pull requests"
        in skipped[".gitea/workflows/pr-deploy.yml"]
    )
    with harness.pool().store.session(write=False) as s:
        rows = list(
            s.scalars(
                select(PipelineRow).where(
                    PipelineRow.file == ".gitea/workflows/pr-deploy.yml",
                    PipelineRow.commit_sha == forge.head_sha,
                )
            )
        )
    assert rows and all(r.state == "rejected" for r in rows)
    [job] = harness.pool().store.pipeline_jobs(rows[-1].id)
    assert job.state == "rejected"
    assert job.reason is not None and "pull_request_capabilities" in job.reason


def test_pull_request_types_filter_the_actions(harness: Harness, forge: Forge) -> None:
    res = deliver(forge, "forgejo", "pull_request", pr_payload(forge, "closed", 9))
    assert res.status_code == 202, res.text
    body = res.json()
    assert body["pipelines"] == []
    reasons = {s["file"]: s["reason"] for s in body["skipped"]}
    assert "does not include 'closed'" in reasons[".gitea/workflows/pr-ci.yml"]


def test_a_tag_push_runs_the_tag_workflow_with_its_ref_type(
    harness: Harness, forge: Forge, linux_worker: Worker
) -> None:
    payload = {
        "ref": "refs/tags/v2.0.0",
        "before": "0" * 40,
        "after": forge.base_sha,
        "repository": {"clone_url": forge.base_url, "full_name": "org/trig"},
        "pusher": {"login": "maintainer"},
    }
    res = deliver(forge, "gitea", "push", payload)
    assert res.status_code == 202, res.text
    started = {p["file"]: p["pipeline_id"] for p in res.json()["pipelines"]}
    assert list(started) == [".gitea/workflows/release.yml"], res.json()
    row = wait_pipeline(harness, started[".gitea/workflows/release.yml"])
    assert row.state == "succeeded"
    facts = row.context
    assert facts is not None and facts.event_name == "push"
    assert (facts.ref, facts.ref_type, facts.ref_name) == ("refs/tags/v2.0.0", "tag", "v2.0.0")
    assert facts.actor == "maintainer" and facts.secrets_allowed
    [job] = harness.pool().store.pipeline_jobs(row.id)
    assert "releasing 1.2.3 at v2.0.0" in job_log(harness, job.id)


def test_two_beats_over_a_due_slot_start_exactly_one_pipeline(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    bare = git_server.base / "trig-sched.git"
    shutil.rmtree(bare, ignore_errors=True)
    make_repo(bare, APP_FILES)
    url = git_server.url("trig-sched.git")
    res = harness.cli("repos", "add", url, "--ref", "main")
    assert res.returncode == 0, res.stderr
    assert f"registered {url} at main" in res.stdout
    # The slot is the current minute, written after the registration (slots before it
    # never run); beat still starts it for schedule_catchup seconds.
    now = datetime.now(UTC)
    cron = f"{now.minute} {now.hour} * * *"
    nightly = (
        "name: nightly\non:\n  schedule:\n"
        f"    - cron: '{cron}'\n    - cron: '0 0 30 2 *'\n"
        "jobs:\n  build:\n    runs-on: linux\n    steps:\n"
        '      - run: echo "scheduled run of $CI_POOL_COMMIT_SHA"\n'
    )
    sha = make_repo(bare, {".github/workflows/nightly.yml": nightly}, "nightly")

    beats = [
        subprocess.Popen(
            [sys.executable, "-m", "ci_pool", "beat", "--once"],
            env=harness.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [b.communicate(timeout=120) for b in beats]
    assert [b.returncode for b in beats] == [0, 0], outputs
    started = [line for _, errs in outputs for line in errs.splitlines() if "started" in line]
    assert len(started) == 1, outputs

    again = harness.cli("beat", "--once")
    assert again.returncode == 0 and "started" not in again.stderr, again.stderr

    store = harness.pool().store
    with store.session(write=False) as s:
        rows = list(s.scalars(select(PipelineRow).where(PipelineRow.repo == url)))
    assert len(rows) == 1
    row = wait_pipeline(harness, rows[0].id)
    assert (row.state, row.event, row.commit_sha) == ("succeeded", "schedule", sha)
    assert row.context is not None and row.context.schedule == cron
    slot = datetime.fromisoformat(row.context.slot)
    assert (slot.hour, slot.minute) == (now.hour, now.minute)
    [job] = store.pipeline_jobs(row.id)
    assert f"scheduled run of {sha}" in job_log(harness, job.id)

    listed = harness.cli("repos", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = [r for r in json.loads(listed.stdout) if r["url"] == url]
    assert entry["scanned_commit"] == sha
    assert {s["cron"] for s in entry["schedules"]} == {cron, "0 0 30 2 *"}
    assert harness.cli("repos", "remove", url).returncode == 0


def test_workflow_dispatch_runs_the_repositorys_file_with_inputs(
    harness: Harness, forge: Forge, linux_worker: Worker
) -> None:
    headers = auth(make_token(harness, "submit", "read"))
    url = f"{forge.api}/v1/pipelines/dispatch"
    body = {"repo": forge.base_url, "ref": "main", "workflow": "manual.yml"}
    res = httpx.post(url, json={**body, "inputs": {"target": "staging"}}, headers=headers)
    assert res.status_code == 201, res.text
    row = wait_pipeline(harness, res.json()["id"])
    assert (row.state, row.event, row.commit_sha) == (
        "succeeded",
        "workflow_dispatch",
        forge.base_sha,
    )
    assert row.context is not None and row.context.event_name == "workflow_dispatch"
    assert row.context.event["inputs"] == {"target": "staging", "level": "info"}

    missing = httpx.post(url, json=body, headers=headers)
    assert missing.status_code == 422 and "requires input 'target'" in missing.text
    unknown = httpx.post(url, json={**body, "inputs": {"target": "x", "colour": "red"}},
                         headers=headers)  # fmt: skip
    assert unknown.status_code == 422 and "declares no input colour" in unknown.text
    push_only = httpx.post(url, json={**body, "workflow": "release.yml"}, headers=headers)
    assert push_only.status_code == 422
    assert "does not include workflow_dispatch" in push_only.text
    nowhere = httpx.post(url, json={**body, "workflow": "nope.yml"}, headers=headers)
    assert nowhere.status_code == 404
