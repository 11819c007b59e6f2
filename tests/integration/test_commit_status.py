"""Commit statuses end to end: real workers and beat post each job's state to loopback
servers speaking the Gitea/Forgejo and GitHub status APIs, and a forge that fails or is
down never changes a job's outcome."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from ci_pool.embedded import free_port, make_repo
from ci_pool.store import Store
from ci_pool.store.outbox import outbox_row
from tests.conftest import GitServer, Harness, RedisServer, Worker, isolated_harness
from tests.waiting import until

pytestmark = pytest.mark.integration

#: Where each request shape below comes from.
SHAPES = {
    "gitea": "https://try.gitea.io/api/swagger#/repository/repoCreateStatus (CreateStatusOption)",
    "github": "https://docs.github.com/en/rest/commits/statuses#create-a-commit-status",
}
GITEA_TOKEN = "gitea-test-token-6f1d2c"
GITHUB_TOKEN = "ghp_test_token_93ab5e71"
PUBLIC_URL = "http://ci.example.test"


class GiteaStatusBody(BaseModel):
    """CreateStatusOption of Gitea and Forgejo."""

    model_config = ConfigDict(extra="forbid", strict=True)

    state: Literal["pending", "success", "error", "failure", "warning"]
    target_url: str = ""
    description: str = ""
    context: str = ""


class GitHubStatusBody(BaseModel):
    """The body of GitHub's "Create a commit status"."""

    model_config = ConfigDict(extra="forbid", strict=True)

    state: Literal["error", "failure", "pending", "success"]
    target_url: str | None = None
    description: str | None = Field(default=None, max_length=140)
    context: str = "default"


@dataclass
class Posted:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def state(self) -> str:
        return str(self.body["state"])


@dataclass
class FakeForge:
    """A loopback server answering ``POST .../statuses/{sha}`` (201, or the codes queued in
    ``answers`` first), recording every request; ``down()`` closes its port."""

    kind: str
    port: int
    posted: list[Posted] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    connections: int = 0
    server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        forge = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                forge.connections += 1
                super().setup()

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {k.lower(): v for k, v in self.headers.items()}
                forge.posted.append(Posted(self.path, headers, body))
                code = forge.answers.pop(0) if forge.answers else 201
                answer = json.dumps({"id": len(forge.posted), **body}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def for_sha(self, sha: str, context: str) -> list[Posted]:
        return [
            p for p in self.posted if p.path.endswith(f"/{sha}") and p.body["context"] == context
        ]

    def wait(self, sha: str, context: str, state: str, timeout: float = 60) -> list[Posted]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.for_sha(sha, context)
            if got and got[-1].state == state:
                return got
            assert time.monotonic() < deadline, f"{context}: {[p.body for p in got]}"
            time.sleep(0.05)


@dataclass
class Forges:
    h: Harness
    gitea: FakeForge
    github: FakeForge
    gitea_repo: str
    github_repo: str
    sha: str
    worker: Worker

    def store(self) -> Store:
        return self.h.pool().store

    def beat(self) -> str:
        res = self.h.cli("beat", "--once")
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr, res.stderr
        return res.stderr


@pytest.fixture(scope="module")
def forges(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    busybox_image: str,
    git_server: GitServer,
) -> Iterator[Forges]:
    repo = git_server.base / "org" / "app.git"
    sha = make_repo(repo, {"README.md": "status app\n"})
    port = git_server.url().split(":")[2].split("/")[0]
    gitea, github = FakeForge("gitea", free_port()), FakeForge("github", free_port())
    gitea.up()
    github.up()
    root = tmp_path_factory.mktemp("statuses") / "pool"
    h = isolated_harness(
        root,
        redis_server,
        busybox_image,
        13,
        public_url=PUBLIC_URL,
        status_backoff=0.2,
        status_attempts=3,
    )
    (root / "gitea-token").write_text(GITEA_TOKEN + "\n")
    os.environ["FORGE_TEST_GITHUB_TOKEN"] = GITHUB_TOKEN
    with h.config.open("a") as fh:
        fh.write(
            f'\n[forges."127.0.0.1:{port}"]\nkind = "gitea"\n'
            f'api_url = "http://127.0.0.1:{gitea.port}/api/v1"\n'
            f'token = "file:{root / "gitea-token"}"\n'
            f'\n[forges."localhost:{port}"]\nkind = "github"\n'
            f'api_url = "http://127.0.0.1:{github.port}"\n'
            'token = "env:FORGE_TEST_GITHUB_TOKEN"\n'
        )
    worker = h.start_worker("linux", concurrency=2)
    try:
        yield Forges(
            h,
            gitea,
            github,
            f"git://127.0.0.1:{port}/org/app.git",
            f"git://localhost:{port}/org/app.git",
            sha,
            worker,
        )
    finally:
        h.stop()
        gitea.down()
        github.down()
        os.environ.pop("FORGE_TEST_GITHUB_TOKEN", None)


def submit(f: Forges, repo: str, name: str, run: str) -> str:
    res = f.h.cli("submit", "--repo", repo, "--ref", "main", "--capability", "linux",
                  "--name", name, "--run", run)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def check_gitea(p: Posted, sha: str) -> GiteaStatusBody:
    assert p.path == f"/api/v1/repos/org/app/statuses/{sha}", SHAPES["gitea"]
    assert p.headers["authorization"] == f"token {GITEA_TOKEN}"
    assert p.headers["content-type"] == "application/json"
    return GiteaStatusBody.model_validate(p.body)


def check_github(p: Posted, sha: str) -> GitHubStatusBody:
    assert p.path == f"/repos/org/app/statuses/{sha}", SHAPES["github"]
    assert p.headers["authorization"] == f"Bearer {GITHUB_TOKEN}"
    assert p.headers["accept"] == "application/vnd.github+json"
    assert p.headers["content-type"] == "application/json"
    return GitHubStatusBody.model_validate(p.body)


def test_a_job_posts_pending_then_success_then_a_failing_one_failure(forges: Forges) -> None:
    f = forges
    ok = submit(f, f.gitea_repo, "build", "sleep 2; echo built")
    f.h.wait_state(ok, "succeeded")
    posts = f.gitea.wait(f.sha, "ci-pool/build", "success")
    bodies = [check_gitea(p, f.sha) for p in posts]
    assert [b.state for b in bodies] == ["pending", "success"]
    assert re.match(r"running on [a-z0-9.-]+-linux-[0-9]+", bodies[0].description)
    assert bodies[1].description == "succeeded"
    assert {b.target_url for b in bodies} == {f"{PUBLIC_URL}/v1/jobs/{ok}"}

    bad = submit(f, f.gitea_repo, "test", "sleep 2; exit 3")
    f.h.wait_state(bad, "failed")
    posts = f.gitea.wait(f.sha, "ci-pool/test", "failure")
    bodies = [check_gitea(p, f.sha) for p in posts]
    assert [b.state for b in bodies] == ["pending", "failure"]
    assert bodies[1].description == "failed: step 1 exited with code 3"
    assert bodies[1].target_url == f"{PUBLIC_URL}/v1/jobs/{bad}"
    assert f.github.posted == []

    for job_id in (ok, bad):
        row = outbox_row(f.store(), job_id)
        assert row is not None and row.sent_seq == row.seq and not row.gave_up
    logs = f.h.cli("logs", ok).stdout + f.worker.log.read_text()
    assert GITEA_TOKEN not in logs


def test_a_workflow_posts_one_context_per_job_and_beat_posts_the_skipped_one(
    forges: Forges, tmp_path: Path
) -> None:
    f = forges
    workflow = tmp_path / "release.yml"
    workflow.write_text(
        "name: release\non: push\njobs:\n"
        "  build:\n    runs-on: linux\n    steps:\n      - run: sleep 1\n"
        "  test:\n    needs: build\n    runs-on: linux\n    steps:\n      - run: exit 1\n"
        "  deploy:\n    needs: test\n    runs-on: linux\n    steps:\n      - run: echo no\n"
    )
    res = f.h.cli("run", str(workflow), "--repo", f.github_repo, "--ref", "main", timeout=240)
    assert res.returncode == 1, res.stderr
    f.github.wait(f.sha, "ci-pool/release/build", "success")
    f.github.wait(f.sha, "ci-pool/release/test", "failure")
    assert f.github.for_sha(f.sha, "ci-pool/release/deploy") == []  # skipped by the scheduler
    assert "1 commit status(es) sent" in f.beat()
    (skipped,) = f.github.for_sha(f.sha, "ci-pool/release/deploy")
    body = check_github(skipped, f.sha)
    assert body.state == "success"
    assert body.description == "skipped: needs test did not succeed"
    for p in f.github.posted:
        check_github(p, f.sha)
    assert "0 commit status(es) sent" in f.beat()  # nothing is posted twice


def test_a_forge_answering_500_twice_gets_the_status_on_a_later_try(forges: Forges) -> None:
    f = forges
    f.gitea.answers[:] = [500, 500]
    before = len(f.gitea.posted)
    job = submit(f, f.gitea_repo, "retried", "sleep 1")
    f.h.wait_state(job, "succeeded")
    deadline = time.monotonic() + 60
    while len(f.gitea.posted) < before + 2:
        assert time.monotonic() < deadline, f.gitea.posted[before:]
        time.sleep(0.05)
    # The forge has the second post; the sender records its 500 after the answer.
    row = until(
        lambda: (r := outbox_row(f.store(), job)) is not None and r.tries == 1 and r,
        "the second 500 recorded",
    )
    assert row.sent_seq < row.seq and row.tries == 1
    assert row.last_error == f"127.0.0.1:{f.gitea.port} answered HTTP 500"

    def sent_again() -> list[Posted]:
        f.beat()  # a sweep once the retry's backoff has passed sends it again
        posts = f.gitea.for_sha(f.sha, "ci-pool/retried")
        return posts if len(posts) >= 3 else []

    posts = until(sent_again, "the status sent again after its backoff", timeout=60, interval=0.1)
    assert [p.state for p in posts][-1] == "success"
    assert len(posts) == 3
    assert f.h.pool().get(job).state == "succeeded"
    row = outbox_row(f.store(), job)
    assert row is not None and row.sent_seq == row.seq and row.sent_state == "success"


def test_a_forge_that_is_down_never_fails_the_job_and_is_given_up(forges: Forges) -> None:
    f = forges
    f.github.down()
    try:
        job = submit(f, f.github_repo, "offline", "echo fine")
        f.h.wait_state(job, "succeeded")
        deadline = time.monotonic() + 60
        gave_up = ""
        while not gave_up:
            assert time.monotonic() < deadline, "the status was never given up"
            time.sleep(0.5)
            out = f.beat()
            if "given up" in out:
                gave_up = out
        assert f"job {job}: commit status ci-pool/offline given up after 3 attempt(s)" in gave_up
        assert "did not answer: ConnectError" in gave_up
        assert GITHUB_TOKEN not in gave_up
        row = outbox_row(f.store(), job)
        assert row is not None and row.gave_up and row.tries == 3
        assert GITHUB_TOKEN not in (row.last_error or "")
        assert f.h.pool().get(job).state == "succeeded"
        assert "0 commit status(es) sent" in f.beat()
    finally:
        f.github.up()
