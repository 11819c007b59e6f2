"""The HTTP API against the real store, broker, git daemon and a linux worker."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import ci_pool.store.tokens  # registers the api_tokens table before init_schema
from ci_pool.api import create_app
from ci_pool.api.server import make_server, running
from ci_pool.embedded import free_port
from ci_pool.exceptions import ConfigError
from ci_pool.settings import load_settings
from ci_pool.store import tokens
from tests.conftest import GitServer, Harness, Worker
from tests.waiting import until

pytestmark = pytest.mark.integration

assert ci_pool.store.tokens.ApiToken.__tablename__ == "api_tokens"


@pytest.fixture(scope="module")
def client(harness: Harness) -> Iterator[TestClient]:
    with TestClient(create_app(harness.settings())) as c:
        yield c


def make_token(harness: Harness, *scopes: str, **kw: Any) -> str:
    plaintext, _ = tokens.create_token(
        harness.pool().store, f"t-{uuid.uuid4().hex[:10]}", scopes, **kw
    )
    return plaintext


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def job_body(git: GitServer, run: str, capability: str = "linux", **extra: Any) -> dict[str, Any]:
    return {
        "repo": git.url(),
        "ref": "main",
        "capability": capability,
        "steps": [{"run": run}],
        **extra,
    }


def assert_error(res: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code
    assert body["error"]["field"] == field
    assert "Traceback" not in res.text


def test_submit_runs_on_a_worker_then_show_and_logs(
    harness: Harness, git_server: GitServer, linux_worker: Worker, client: TestClient
) -> None:
    token = make_token(harness, "submit", "read")
    res = client.post(
        "/v1/jobs", json=job_body(git_server, "sh build.sh", name="api-job"), headers=auth(token)
    )
    assert res.status_code == 201, res.text
    job = res.json()
    # The answer is the job as it stands: a runner may have taken it before the API read it.
    assert job["state"] in ("queued", "running", "succeeded") and job["name"] == "api-job"
    assert job["commit_sha"] == git_server.shas["app.git"]

    assert harness.pool().wait(job["id"], timeout=90).state == "succeeded"

    shown = client.get(f"/v1/jobs/{job['id']}", headers=auth(token))
    assert shown.status_code == 200
    assert shown.json()["state"] == "succeeded" and shown.json()["exit_code"] == 0
    assert [e["to"] for e in shown.json()["events"]][-1] == "succeeded"

    logs = client.get(f"/v1/jobs/{job['id']}/logs", headers=auth(token))
    assert logs.status_code == 200
    assert logs.headers["content-type"].startswith("text/plain")
    assert f"building {job['id']} at {git_server.shas['app.git']}" in logs.text
    assert "1.2.3" in logs.text

    listed = client.get("/v1/jobs", params={"state": "succeeded"}, headers=auth(token))
    assert job["id"] in [j["id"] for j in listed.json()["data"]]

    queues = client.get("/v1/queues", headers=auth(token))
    assert queues.status_code == 200
    rows = {r["capability"]: r for r in queues.json()["data"]}
    assert rows["linux"]["workers"] >= 1 and rows["linux"]["finished_1h"] >= 1


def test_cancel_a_queued_deploy_job(
    harness: Harness, git_server: GitServer, client: TestClient
) -> None:
    token = make_token(harness, "submit", "cancel")
    res = client.post("/v1/jobs", json=job_body(git_server, "true", "deploy"), headers=auth(token))
    assert res.status_code == 201, res.text
    job_id = res.json()["id"]
    cancelled = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(token))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    assert harness.pool().get(job_id).state == "cancelled"


def test_auth_401_and_403(harness: Harness, git_server: GitServer, client: TestClient) -> None:
    res = client.get("/v1/queues")
    assert_error(res, 401, "unauthorized")
    assert res.headers["www-authenticate"] == "Bearer"
    assert_error(client.get("/v1/queues", headers=auth("cip_not-a-token")), 401, "unauthorized")
    assert_error(
        client.get("/v1/queues", headers={"Authorization": "Basic dTpw"}), 401, "unauthorized"
    )

    reader = make_token(harness, "read")
    res = client.post("/v1/jobs", json=job_body(git_server, "true"), headers=auth(reader))
    assert_error(res, 403, "forbidden")
    assert "'submit' scope" in res.json()["error"]["message"]
    assert_error(client.post("/v1/jobs/x/cancel", headers=auth(reader)), 403, "forbidden")
    submitter = make_token(harness, "submit")
    assert_error(client.get("/v1/queues", headers=auth(submitter)), 403, "forbidden")
    admin = make_token(harness, "admin")
    assert client.get("/v1/queues", headers=auth(admin)).status_code == 200

    store = harness.pool().store
    name = f"revoked-{uuid.uuid4().hex[:8]}"
    plaintext, _ = tokens.create_token(store, name, ["read"])
    assert client.get("/v1/queues", headers=auth(plaintext)).status_code == 200
    tokens.revoke(store, name)
    assert_error(client.get("/v1/queues", headers=auth(plaintext)), 401, "unauthorized")

    short = make_token(harness, "read", expires=timedelta(seconds=0.5))

    def refused() -> httpx.Response | None:
        res = client.get("/v1/queues", headers=auth(short))
        return res if res.status_code == 401 else None

    assert_error(
        until(refused, "the token refused once it expired", timeout=10), 401, "unauthorized"
    )


def test_bad_input_is_422_with_the_field_and_writes_nothing(
    harness: Harness, git_server: GitServer, client: TestClient
) -> None:
    token = make_token(harness, "submit")
    store = harness.pool().store
    before = len(store.list_jobs(limit=100_000))
    res = client.post(
        "/v1/jobs", json={**job_body(git_server, "true"), "ref": "-x"}, headers=auth(token)
    )
    assert_error(res, 422, "invalid_input", "ref")
    res = client.post(
        "/v1/jobs", json=job_body(git_server, "true", capability="gpu"), headers=auth(token)
    )
    assert_error(res, 422, "invalid_input", "capability")
    assert "linux" in res.json()["error"]["message"]
    res = client.post("/v1/jobs", json={"repo": git_server.url()}, headers=auth(token))
    assert_error(res, 422, "invalid_input", "steps")
    res = client.post(
        "/v1/jobs", json={**job_body(git_server, "true"), "repo": "/etc"}, headers=auth(token)
    )
    assert_error(res, 422, "invalid_input", "repo")
    res = client.post(
        "/v1/jobs",
        content=b"{not json",
        headers={**auth(token), "Content-Type": "application/json"},
    )
    assert res.status_code == 422 and set(res.json()) == {"error"}
    assert len(store.list_jobs(limit=100_000)) == before


def test_unknown_job_is_404_in_the_error_shape(harness: Harness, client: TestClient) -> None:
    token = make_token(harness, "read", "cancel")
    assert_error(client.get("/v1/jobs/nope", headers=auth(token)), 404, "not_found")
    assert_error(client.get("/v1/jobs/nope/logs", headers=auth(token)), 404, "not_found")
    assert_error(client.post("/v1/jobs/nope/cancel", headers=auth(token)), 404, "not_found")
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")


def test_unexpected_error_is_a_generic_500(
    harness: Harness, client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    token = make_token(harness, "read")

    def boom() -> None:
        raise RuntimeError("internal detail /srv/secret/path")

    monkeypatch.setattr(client.app.state.pool, "status", boom)  # type: ignore[attr-defined]
    res = client.get("/v1/queues", headers=auth(token))
    assert_error(res, 500, "internal_error")
    assert "secret" not in res.text and "RuntimeError" not in res.text
    assert "internal detail" in caplog.text  # the traceback stays in the server's log


def test_healthz(client: TestClient) -> None:
    res = client.get("/healthz")
    assert res.status_code == 200, res.text
    assert res.json() == {"status": "ok", "checks": {"store": "ok", "broker": "ok"}}


def test_healthz_names_the_broker_when_it_is_down(harness: Harness, tmp_path: Path) -> None:
    settings = load_settings(
        harness.config,
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
        home=tmp_path / "home",
        **harness.overrides,
    )
    with TestClient(create_app(settings)) as c:
        res = c.get("/healthz")
    assert res.status_code == 503
    assert res.json()["checks"]["store"] == "ok"
    assert res.json()["checks"]["broker"].startswith("unreachable")


def test_plaintext_tokens_never_reach_the_store(harness: Harness, client: TestClient) -> None:
    plaintext = make_token(harness, "read")
    assert client.get("/v1/queues", headers=auth(plaintext)).status_code == 200
    url = harness.settings().resolved_store_url
    assert url.startswith("sqlite:///")
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        dump = "\n".join(conn.iterdump())
    assert tokens.digest(plaintext) in dump
    assert plaintext not in dump
    assert plaintext.removeprefix(tokens.PREFIX) not in dump


def test_real_server_on_loopback_and_refusal_without_tokens(
    harness: Harness, tmp_path: Path
) -> None:
    empty = load_settings(
        harness.config, broker_url=harness.redis_url, home=tmp_path / "home", **harness.overrides
    )
    with pytest.raises(ConfigError, match="no active API token"):
        make_server(empty, "0.0.0.0", free_port())

    port = free_port()
    with running(make_server(harness.settings(), "127.0.0.1", port, log_level="warning")):
        res = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert res.status_code == 200 and res.json()["status"] == "ok"
        res = httpx.get(f"http://127.0.0.1:{port}/v1/queues", timeout=10)
        assert res.status_code == 401 and res.json()["error"]["code"] == "unauthorized"


def test_token_cli_create_list_revoke(harness: Harness, client: TestClient) -> None:
    run = harness.cli
    name = f"cli-{uuid.uuid4().hex[:8]}"
    res = run("token", "create", name, "--scope", "read", "--expires", "1d")
    assert res.returncode == 0, res.stderr
    plaintext = res.stdout.strip()
    assert plaintext.startswith(tokens.PREFIX) and "shown once" in res.stderr
    assert client.get("/v1/queues", headers=auth(plaintext)).status_code == 200

    listed = run("token", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows[name]["scopes"] == ["read"] and rows[name]["revoked"] is False
    assert plaintext not in listed.stdout

    bad = run("token", "create", "x-" + name, "--scope", "root")
    assert bad.returncode == 2 and "unknown scope" in bad.stderr
    dup = run("token", "create", name, "--scope", "read")
    assert dup.returncode == 2 and "exists already" in dup.stderr

    assert run("token", "revoke", name).returncode == 0
    assert client.get("/v1/queues", headers=auth(plaintext)).status_code == 401
    assert run("token", "revoke", "no-such-token").returncode == 2
    assert "Serve the HTTP API" in run("api", "--help").stdout
