"""Policy through the API and the CLI: allowlists, signatures, token limits, rejected jobs.

A pool with the shipped strict defaults for ``deploy`` (only protected refs, signed or
specially scoped submissions), which builds the repositories under ``org/``."""

from __future__ import annotations

import base64
import re
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ci_pool.api import create_app
from ci_pool.core.policy import SIGNATURE_HEADER, sign
from ci_pool.embedded import make_repo
from ci_pool.store import tokens
from tests.conftest import FAST_TIMINGS, GitServer, Harness, RedisServer
from tests.integration.test_api import assert_error, auth

pytestmark = pytest.mark.integration

KEY_1 = "k1-" + uuid.uuid4().hex
KEY_2 = "k2-" + uuid.uuid4().hex


#: A capability secret the leak test looks for everywhere.
JOB_SECRET = "job-secret-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def strict(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, busybox_image: str
) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("strict")
    (root / "key1").write_text(KEY_1 + "\n")
    (root / "key2").write_text(KEY_2 + "\n")
    (root / "job-secret").write_text(JOB_SECRET + "\n")
    h = Harness(root, redis_server.url.rsplit("/", 1)[0] + "/11", dict(FAST_TIMINGS))
    h.config.write_text(
        "[signing_keys]\n"
        f'"release-bot@1" = "file:{root / "key1"}"\n'
        f'"release-bot@2" = "file:{root / "key2"}"\n\n'
        f'[capabilities.linux]\nimage = "{busybox_image}"\n'
        f'secrets = {{ JOB_SECRET = "file:{root / "job-secret"}" }}\n\n'
        '[capabilities.deploy]\nimage = "unused"\nnetwork = "none"\nrepos = ["org/*"]\n'
    )
    yield h
    h.stop()


@pytest.fixture(scope="module")
def repos(git_server: GitServer) -> dict[str, str]:
    """org/tools.git (main, feature, tag v1.0) and other/app.git (main)."""
    tools = git_server.base / "org" / "tools.git"
    tools.parent.mkdir(exist_ok=True)
    make_repo(tools, {"README.md": "tools\n"})
    work = tools.parent / "tools.checkout"
    subprocess.run(["git", "clone", "-q", str(tools), str(work)], check=True, capture_output=True)
    for args in (
        ["branch", "feature"],
        ["tag", "v1.0"],
        ["push", "-q", "origin", "feature", "v1.0"],
    ):
        subprocess.run(["git", "-C", str(work), *args], check=True, capture_output=True)
    other = git_server.base / "other" / "app.git"
    other.parent.mkdir(exist_ok=True)
    make_repo(other, {"README.md": "other\n"})
    return {"tools": git_server.url("org/tools.git"), "other": git_server.url("other/app.git")}


@pytest.fixture(scope="module")
def client(strict: Harness) -> Iterator[TestClient]:
    with TestClient(create_app(strict.settings())) as c:
        yield c


def token(h: Harness, *scopes: str, **limits: Any) -> str:
    plaintext, _ = tokens.create_token(
        h.pool().store, f"p-{uuid.uuid4().hex[:8]}", scopes, **limits
    )
    return plaintext


def deploy(repo: str, ref: str = "main") -> dict[str, Any]:
    return {"repo": repo, "ref": ref, "capability": "deploy", "steps": [{"run": "true"}]}


def signed(
    tok: str,
    body: dict[str, Any],
    key: str = KEY_1,
    key_id: str = "release-bot@1",
    now: float | None = None,
) -> dict[str, str]:
    return {**auth(tok), SIGNATURE_HEADER: sign(key.encode(), key_id, body, now)}


def job_count(h: Harness) -> int:
    return len(h.pool().store.list_jobs(limit=10_000))


def rejected_job(h: Harness, message: str) -> Any:
    m = re.search(r"job (\w+) rejected", message)
    assert m, message
    return h.pool().get(m.group(1))


def test_signed_deploy_from_an_allowed_repo_and_ref_is_queued(
    strict: Harness, repos: dict[str, str], client: TestClient
) -> None:
    tok = token(strict, "submit", "read")
    for ref in ("main", "v1.0", "refs/heads/main", "HEAD"):
        body = deploy(repos["tools"], ref)
        res = client.post("/v1/jobs", json=body, headers=signed(tok, body))
        assert res.status_code == 201, (ref, res.text)
        assert res.json()["state"] == "queued"
    # Rotation: the second key of the same submitter is as good as the first.
    body = deploy(repos["tools"])
    headers = signed(tok, body, KEY_2, "release-bot@2")
    res = client.post("/v1/jobs", json=body, headers=headers)
    assert res.status_code == 201, res.text
    # A signature is accepted once: the same request sent again is refused.
    before = job_count(strict)
    again = client.post("/v1/jobs", json=body, headers=headers)
    assert_error(again, 403, "forbidden", "signature")
    assert "used already" in again.json()["error"]["message"]
    assert job_count(strict) == before


@pytest.mark.parametrize(
    ("repo", "ref", "rule", "field"),
    [
        ("other", "main", "capabilities.deploy.repos", "repo"),
        ("tools", "feature", "capabilities.deploy.refs", "ref"),
        ("tools", "SHA", "capabilities.deploy.refs", "ref"),
    ],
)
def test_policy_denial_is_recorded_rejected_with_its_rule(
    strict: Harness,
    repos: dict[str, str],
    git_server: GitServer,
    client: TestClient,
    repo: str,
    ref: str,
    rule: str,
    field: str,
) -> None:
    tok = token(strict, "submit", "read")
    if ref == "SHA":
        ref = subprocess.run(
            ["git", "ls-remote", repos["tools"], "refs/heads/main"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[0]
    body = deploy(repos[repo], ref)
    res = client.post("/v1/jobs", json=body, headers=signed(tok, body))
    assert_error(res, 403, "rejected", field)
    message = res.json()["error"]["message"]
    assert f"denied by rule {rule}" in message
    job = rejected_job(strict, message)
    assert job.state == "rejected" and rule in (job.reason or "")
    assert job.finished_at is not None and job.queued_at is None
    shown = client.get(f"/v1/jobs/{job.id}", headers=auth(tok)).json()
    assert shown["state"] == "rejected" and rule in shown["reason"]
    assert shown["events"][0]["to"] == "rejected" and rule in shown["events"][0]["reason"]
    assert KEY_1 not in res.text


def test_deploy_needs_a_signature_or_a_token_scoped_to_it(
    strict: Harness, repos: dict[str, str], client: TestClient
) -> None:
    body = deploy(repos["tools"])
    plain = token(strict, "submit")
    res = client.post("/v1/jobs", json=body, headers=auth(plain))
    assert_error(res, 403, "rejected", "signature")
    assert "capabilities.deploy.require_signature" in res.json()["error"]["message"]

    scoped = token(strict, "submit", capabilities=["deploy"])
    res = client.post("/v1/jobs", json=body, headers=auth(scoped))
    assert res.status_code == 201, res.text


def test_a_bad_signature_is_refused_and_writes_nothing(
    strict: Harness, repos: dict[str, str], client: TestClient
) -> None:
    tok = token(strict, "submit")
    body = deploy(repos["tools"])
    before = job_count(strict)
    cases = {
        "tampered": (signed(tok, deploy(repos["tools"], "v1.0")), "does not match"),
        "wrong key": (signed(tok, body, KEY_2, "release-bot@1"), "does not match"),
        "unknown key id": (signed(tok, body, KEY_1, "nobody@1"), "not configured"),
        "stale": (signed(tok, body, now=time.time() - 3600), "server's clock"),
        "malformed": ({**auth(tok), SIGNATURE_HEADER: "sha256=abc"}, "must read keyid="),
    }
    for name, (headers, words) in cases.items():
        res = client.post("/v1/jobs", json=body, headers=headers)
        assert_error(res, 403, "forbidden", "signature")
        assert words in res.json()["error"]["message"], name
        for secret in (KEY_1, KEY_2):
            assert secret not in res.text
    assert job_count(strict) == before


def test_token_limits_refuse_other_capabilities_and_repos(
    strict: Harness, repos: dict[str, str], client: TestClient
) -> None:
    linux_only = token(strict, "submit", capabilities=["linux"], repos=["org/*"])
    before = job_count(strict)
    body = deploy(repos["tools"])
    res = client.post("/v1/jobs", json=body, headers=signed(linux_only, body))
    assert_error(res, 403, "forbidden", "capability")
    assert "submit only for capabilities linux, not 'deploy'" in res.json()["error"]["message"]
    body = {**deploy(repos["other"]), "capability": "linux"}
    res = client.post("/v1/jobs", json=body, headers=auth(linux_only))
    assert_error(res, 403, "forbidden", "repo")
    assert "only for repositories org/*, not 'other/app'" in res.json()["error"]["message"]
    assert job_count(strict) == before
    body = {**deploy(repos["tools"]), "capability": "linux"}
    assert client.post("/v1/jobs", json=body, headers=auth(linux_only)).status_code == 201

    # Reads, cancel and retry follow the same limits: only jobs it could have submitted;
    # the others are answered like jobs that do not exist.
    limited = token(strict, "submit", "cancel", "read", capabilities=["linux"], repos=["org/*"])
    anyone = token(strict, "submit", "cancel", "read")
    theirs = client.post(
        "/v1/jobs", json={**deploy(repos["other"]), "capability": "linux"}, headers=auth(anyone)
    ).json()["id"]
    mine = client.post("/v1/jobs", json=body, headers=auth(limited)).json()["id"]
    for action in ("cancel", "retry"):
        res = client.post(f"/v1/jobs/{theirs}/{action}", headers=auth(limited))
        assert_error(res, 404, "not_found")
        assert res.json()["error"]["message"] == f"no job with id {theirs!r}"
    for path in ("", "/logs", "/artifacts", "/artifacts/x.txt"):
        res = client.get(f"/v1/jobs/{theirs}{path}", headers=auth(limited))
        assert_error(res, 404, "not_found")
        assert "other" not in res.text
    assert client.get(f"/v1/jobs/{mine}", headers=auth(limited)).status_code == 200
    listed = client.get("/v1/jobs", params={"limit": 1000}, headers=auth(limited)).json()
    seen = {j["id"] for j in listed["data"]}
    assert mine in seen and theirs not in seen
    assert all("/org/" in j["repo"] and j["capability"] == "linux" for j in listed["data"])
    everything = client.get("/v1/jobs", params={"limit": 1000}, headers=auth(anyone)).json()
    assert theirs in {j["id"] for j in everything["data"]}
    assert client.post(f"/v1/jobs/{mine}/cancel", headers=auth(limited)).status_code == 200
    assert client.post(f"/v1/jobs/{theirs}/cancel", headers=auth(anyone)).status_code == 200


def test_a_pipeline_with_one_denied_job_is_rejected_whole(
    strict: Harness, repos: dict[str, str], client: TestClient
) -> None:
    workflow = (
        "on: push\njobs:\n"
        "  build:\n    runs-on: linux\n    steps:\n      - run: make\n"
        "  ship:\n    needs: build\n    runs-on: deploy\n    steps:\n      - run: ./ship\n"
    )
    tok = token(strict, "submit", "read")
    body = {"workflow": workflow, "repo": repos["tools"], "ref": "feature"}
    res = client.post("/v1/pipelines", json=body, headers=signed(tok, body))
    assert_error(res, 403, "rejected", "ref")
    pid = re.search(r"pipeline (\w+) rejected", res.json()["error"]["message"])
    assert pid, res.text
    shown = client.get(f"/v1/pipelines/{pid.group(1)}", headers=auth(tok)).json()
    assert shown["state"] == "rejected"
    states = {j["key"]: (j["state"], j["reason"]) for j in shown["jobs"]}
    assert states["ship"][0] == "rejected" and "capabilities.deploy.refs" in states["ship"][1]
    assert states["build"][0] == "rejected" and "pipeline rejected" in states["build"][1]

    body = {"workflow": workflow, "repo": repos["tools"], "ref": "main"}
    res = client.post("/v1/pipelines", json=body, headers=signed(tok, body))
    assert res.status_code == 201, res.text
    assert {j["key"]: j["state"] for j in res.json()["jobs"]} == {
        "build": "queued",
        "ship": "blocked",
    }


def test_a_checkout_ref_is_held_to_the_capability_refs_and_pinned(
    strict: Harness, repos: dict[str, str], client: TestClient
) -> None:
    """A workflow submitted at an allowed ref cannot check out a ref the capability does
    not build: its checkout ref is judged like the submitted ref."""
    tok = token(strict, "submit", "read")

    def workflow(ref: str) -> str:
        return (
            "on: push\njobs:\n  ship:\n    runs-on: deploy\n    steps:\n"
            f"      - uses: actions/checkout@v4\n        with:\n          ref: {ref}\n"
            "      - run: ./ship\n"
        )

    body = {"workflow": workflow("feature"), "repo": repos["tools"], "ref": "main"}
    res = client.post("/v1/pipelines", json=body, headers=signed(tok, body))
    assert_error(res, 403, "rejected", "jobs.ship.steps[0].with.ref")
    message = res.json()["error"]["message"]
    assert "checkout ref 'feature'" in message and "capabilities.deploy.refs" in message
    assert "refs/heads/feature" in message

    job = {**deploy(repos["tools"]), "checkout": {"ref": "feature"}}
    res = client.post("/v1/jobs", json=job, headers=signed(tok, job))
    assert_error(res, 403, "rejected", "checkout.ref")
    assert rejected_job(strict, res.json()["error"]["message"]).state == "rejected"

    # An allowed tag is taken, pinned to the commit it names at submit.
    tag = subprocess.run(
        ["git", "ls-remote", repos["tools"], "refs/tags/v1.0"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[0]
    job = {**deploy(repos["tools"]), "checkout": {"ref": "v1.0"}}
    res = client.post("/v1/jobs", json=job, headers=signed(tok, job))
    assert res.status_code == 201, res.text
    assert strict.pool().get(res.json()["id"]).checkout.ref == tag
    body = {"workflow": workflow("v1.0"), "repo": repos["tools"], "ref": "main"}
    res = client.post("/v1/pipelines", json=body, headers=signed(tok, body))
    assert res.status_code == 201, res.text
    (row,) = strict.pool().store.pipeline_jobs(res.json()["id"])
    assert row.steps[0].checkout is not None and row.steps[0].checkout.ref == tag

    # A checkout ref the repository does not have is an input error; nothing is written.
    before = job_count(strict)
    body = {"workflow": workflow("nope"), "repo": repos["tools"], "ref": "main"}
    res = client.post("/v1/pipelines", json=body, headers=signed(tok, body))
    assert_error(res, 422, "invalid_input", "jobs.ship.steps[0].with.ref")
    assert "'nope' is not a branch, tag or ref" in res.json()["error"]["message"]
    assert job_count(strict) == before


def test_cli_local_mode_records_and_explains_a_rejection(
    strict: Harness, repos: dict[str, str]
) -> None:
    res = strict.cli(
        "submit",
        "--repo",
        repos["other"],
        "--ref",
        "main",
        "--capability",
        "deploy",
        "--run",
        "true",
    )
    assert res.returncode == 2, res.stderr
    assert "denied by rule capabilities.deploy.repos" in res.stderr
    assert "Traceback" not in res.stderr
    job = rejected_job(strict, res.stderr)
    explained = strict.cli("explain", job.id)
    assert "rejected" in explained.stdout and "capabilities.deploy.repos" in explained.stdout
    waited = strict.cli("wait", job.id)
    assert waited.returncode == 2
    # The operator's own CLI needs no signature: an allowed repo and ref is queued.
    res = strict.cli(
        "submit",
        "--repo",
        repos["tools"],
        "--ref",
        "v1.0",
        "--capability",
        "deploy",
        "--run",
        "true",
    )
    assert res.returncode == 0, res.stderr


def test_token_cli_limits(strict: Harness) -> None:
    res = strict.cli(
        "token",
        "create",
        "bot-" + uuid.uuid4().hex[:6],
        "--scope",
        "submit,read",
        "--capability",
        "linux,android",
        "--repo",
        "org/*",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    assert '"capabilities": [' in res.stdout and '"org/*"' in res.stdout
    res = strict.cli(
        "token",
        "create",
        "bad-" + uuid.uuid4().hex[:6],
        "--scope",
        "submit",
        "--capability",
        "nope",
    )
    assert res.returncode == 2 and "no capability matches 'nope'" in res.stderr


def test_strict_defaults_build_nothing_until_repos_are_listed(tmp_path: Path) -> None:
    from ci_pool.settings import load_settings

    settings = load_settings(None, home=tmp_path)
    for name in ("iso", "deploy"):
        cap = settings.capabilities[name]
        assert cap.repos == () and cap.require_signature
        assert cap.refs is not None and "refs/tags/v*" in cap.refs
    assert settings.capabilities["linux"].repos is None


def test_no_secret_reaches_logs_store_or_errors(
    strict: Harness,
    repos: dict[str, str],
    client: TestClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run with known secrets (token, signing keys, a signature, a job secret), then a
    grep of every place they could leak: responses, logs, the store, Redis, CLI output."""
    strict.start_worker("linux")
    tok = token(strict, "submit", "read", capabilities=["linux"])
    body = {
        "repo": repos["tools"],
        "ref": "main",
        "capability": "linux",
        "secrets": ["JOB_SECRET"],
        "steps": [
            {"run": 'echo "plain $JOB_SECRET"; printf %s "$JOB_SECRET" | base64'},
            {"run": 'echo "whole token: $JOB_SECRET" >&2; exit 5'},
        ],
    }
    headers = signed(tok, body)
    signature = headers[SIGNATURE_HEADER].rsplit("sha256=", 1)[1]
    responses = [client.post("/v1/jobs", json=body, headers=headers)]
    assert responses[0].status_code == 201, responses[0].text
    job_id = responses[0].json()["id"]
    # Failures that handle the secrets: a tampered body, a wrong token, a bad key id.
    responses.append(client.post("/v1/jobs", json={**body, "ref": "v1.0"}, headers=headers))
    responses.append(client.get(f"/v1/jobs/{job_id}", headers=auth(tok + "x")))
    responses.append(
        client.post("/v1/jobs", json=body, headers=signed(tok, body, KEY_2, "nobody@1"))
    )
    deadline = time.monotonic() + 60
    while strict.pool().get(job_id).state not in ("failed", "succeeded", "error"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    job = strict.pool().get(job_id)
    assert job.state == "failed" and job.exit_code == 5
    log = client.get(f"/v1/jobs/{job_id}/logs", headers=auth(tok))
    assert "plain ***" in log.text and "whole token: ***" in log.text
    responses += [log, client.get(f"/v1/jobs/{job_id}", headers=auth(tok))]
    cli = [strict.cli("show", "--json", job_id), strict.cli("logs", job_id)]
    redis_dump = [
        repr(v)
        for key in strict.pool().redis.scan_iter("*")
        if strict.pool().redis.type(key) == b"stream"
        for v in strict.pool().redis.xrange(key)
    ]
    db = sqlite3.connect(strict.settings().resolved_store_url.removeprefix("sqlite:///"))
    store_dump = "\n".join(db.iterdump())
    db.close()
    haystacks = {
        "responses": "\n".join(r.text + repr(dict(r.headers)) for r in responses),
        "server log": caplog.text,
        "worker logs": "\n".join(w.log.read_text() for w in strict.workers),
        "cli": "\n".join(r.stdout + r.stderr for r in cli),
        "redis streams": "\n".join(redis_dump),
        "store": store_dump,
    }
    needles = {
        "token": tok,
        "signing key 1": KEY_1,
        "signing key 2": KEY_2,
        "signature": signature,
        "job secret": JOB_SECRET,
        "job secret base64": base64.b64encode(JOB_SECRET.encode()).decode()[:-4],
    }
    assert job_id in haystacks["store"] and "JOB_SECRET" in haystacks["store"]
    for place, text in haystacks.items():
        for what, needle in needles.items():
            assert needle not in text, f"{what} found in {place}"


def test_a_rejection_is_the_first_result_of_its_idempotency_key(
    strict: Harness, repos: dict[str, str], client: TestClient
) -> None:
    tok = token(strict, "submit", capabilities=["deploy"])
    body = deploy(repos["tools"], "feature")
    headers = {**auth(tok), "Idempotency-Key": str(uuid.uuid4())}
    before = job_count(strict)
    first = client.post("/v1/jobs", json=body, headers=headers)
    again = client.post("/v1/jobs", json=body, headers=headers)
    assert_error(first, 403, "rejected", "ref")
    assert_error(again, 403, "rejected", "ref")
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert job_count(strict) == before + 1

    workflow = "on: push\njobs:\n  ship:\n    runs-on: deploy\n    steps:\n      - run: x\n"
    body = {"workflow": workflow, "repo": repos["other"], "ref": "main"}
    headers = {**auth(tok), "Idempotency-Key": str(uuid.uuid4())}
    first = client.post("/v1/pipelines", json=body, headers=headers)
    again = client.post("/v1/pipelines", json=body, headers=headers)
    assert_error(first, 403, "rejected", "repo")
    assert first.json() == again.json()
