"""The rest of /v1 on the shared pool: pages, live logs, artifacts, retry, pipelines,
Idempotency-Key, scopes and /metrics, with a real linux worker."""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ci_pool.api.server import make_server, running
from ci_pool.embedded import free_port
from ci_pool.exceptions import ConfigError
from tests.conftest import GitServer, Harness, Worker
from tests.integration.test_api import assert_error, auth, client, job_body, make_token

pytestmark = pytest.mark.integration
__all__ = ["client"]


def wait_for(client: TestClient, token: str, job_id: str, *states: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, object] = client.get(f"/v1/jobs/{job_id}", headers=auth(token)).json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not in {states}: {job}")


def test_cursor_pages_cover_every_job_once(
    harness: Harness, git_server: GitServer, client: TestClient
) -> None:
    token = make_token(harness, "submit", "read", "cancel")
    marker = uuid.uuid4().hex[:8]
    made = []
    for i in range(5):
        res = client.post(
            "/v1/jobs",
            json=job_body(git_server, "true", "deploy", name=f"{marker}-{i}"),
            headers=auth(token),
        )
        made.append(res.json()["id"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"capability": "deploy", "limit": 2, "state": "queued"}
        if cursor:
            params["cursor"] = cursor
        res = client.get("/v1/jobs", params=params, headers=auth(token))
        assert res.status_code == 200, res.text
        page = res.json()
        assert page["count"] == len(page["data"]) <= 2
        seen += [j["id"] for j in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a job appeared on two pages"
    assert set(made) <= set(seen) and pages >= 3
    assert seen.index(made[-1]) < seen.index(made[0]), "newest first"
    by_repo = client.get("/v1/jobs", params={"repo": git_server.url()}, headers=auth(token))
    assert {j["repo"] for j in by_repo.json()["data"]} == {git_server.url()}
    bad = client.get("/v1/jobs", params={"cursor": "not-a-cursor"}, headers=auth(token))
    assert_error(bad, 422, "invalid_input", "cursor")
    for job_id in made:
        client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(token))


def test_logs_follow_streams_server_sent_events_until_the_end(
    harness: Harness, git_server: GitServer, linux_worker: Worker, client: TestClient
) -> None:
    token = make_token(harness, "submit", "read")
    job = client.post(
        "/v1/jobs",
        json=job_body(git_server, "echo first-line; sleep 1; echo second-line"),
        headers=auth(token),
    ).json()
    events: list[tuple[str, dict[str, object]]] = []
    with client.stream(
        "GET", f"/v1/jobs/{job['id']}/logs", params={"follow": 1}, headers=auth(token)
    ) as res:
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in res.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    lines = [str(data["line"]) for kind, data in events if kind == "line"]
    assert "first-line" in lines and "second-line" in lines
    assert lines.index("first-line") < lines.index("second-line")
    assert events[-1] == ("end", {"state": "succeeded", "exit_code": 0, "reason": None})


def test_artifacts_are_listed_and_downloaded_with_their_digest(
    harness: Harness, git_server: GitServer, linux_worker: Worker, client: TestClient
) -> None:
    token = make_token(harness, "submit", "read")
    body = job_body(
        git_server, "mkdir -p dist && echo release-bits > dist/app.txt", artifacts=["dist/*"]
    )
    job = client.post("/v1/jobs", json=body, headers=auth(token)).json()
    wait_for(client, token, job["id"], "succeeded")
    listed = client.get(f"/v1/jobs/{job['id']}/artifacts", headers=auth(token)).json()["data"]
    expected = hashlib.sha256(b"release-bits\n").hexdigest()
    assert listed == [{"path": "dist/app.txt", "size": 13, "sha256": expected, "attempt": 1}]
    res = client.get(f"/v1/jobs/{job['id']}/artifacts/dist/app.txt", headers=auth(token))
    assert res.status_code == 200 and res.content == b"release-bits\n"
    assert res.headers["etag"] == f'"{expected}"'
    missing = client.get(f"/v1/jobs/{job['id']}/artifacts/dist/nope.txt", headers=auth(token))
    assert_error(missing, 404, "not_found")
    escape = client.get(
        f"/v1/jobs/{job['id']}/artifacts/..%2F..%2Fetc%2Fpasswd", headers=auth(token)
    )
    assert escape.status_code == 404


def test_retry_runs_a_failed_job_again_as_a_new_attempt(
    harness: Harness, git_server: GitServer, linux_worker: Worker, client: TestClient
) -> None:
    token = make_token(harness, "submit", "read")
    job = client.post("/v1/jobs", json=job_body(git_server, "exit 3"), headers=auth(token)).json()
    done = wait_for(client, token, job["id"], "failed")
    assert done["attempt"] == 1 and done["exit_code"] == 3
    res = client.post(f"/v1/jobs/{job['id']}/retry", headers=auth(token))
    assert res.status_code == 200, res.text
    again = wait_for(client, token, job["id"], "failed")
    assert again["attempt"] == 2
    events = client.get(f"/v1/jobs/{job['id']}", headers=auth(token)).json()["events"]
    assert any(e["reason"] == "retry requested" for e in events)
    ok = client.post("/v1/jobs", json=job_body(git_server, "true"), headers=auth(token)).json()
    wait_for(client, token, ok["id"], "succeeded")
    res = client.post(f"/v1/jobs/{ok['id']}/retry", headers=auth(token))
    assert_error(res, 422, "invalid_input", "job_id")


WORKFLOW = """\
name: api-pipeline
on: push
jobs:
  build:
    runs-on: linux
    outputs:
      version: ${{ steps.v.outputs.version }}
    steps:
      - id: v
        run: echo "version=$(cat VERSION)" >> "$GITHUB_OUTPUT"
  test:
    needs: build
    runs-on: linux
    steps:
      - run: echo "testing ${{ needs.build.outputs.version }}"
"""


def test_pipeline_submit_and_show(
    harness: Harness, git_server: GitServer, linux_worker: Worker, client: TestClient
) -> None:
    token = make_token(harness, "submit", "read")
    body = {"workflow": WORKFLOW, "file": "ci.yml", "repo": git_server.url(), "ref": "main"}
    res = client.post("/v1/pipelines", json=body, headers=auth(token))
    assert res.status_code == 201, res.text
    pid = res.json()["id"]
    deadline = time.monotonic() + 90
    while (shown := client.get(f"/v1/pipelines/{pid}", headers=auth(token)).json())[
        "state"
    ] == "running":
        assert time.monotonic() < deadline, shown
        time.sleep(0.2)
    assert shown["state"] == "succeeded"
    jobs = {j["key"]: j for j in shown["jobs"]}
    assert jobs["build"]["outputs"] == {"version": "1.2.3"}
    assert jobs["test"]["needs"] == ["build"]

    structured = {**body, "workflow": {"on": "push", "jobs": {"x": {"runs-on": "linux"}}}}
    res = client.post("/v1/pipelines", json=structured, headers=auth(token))
    assert_error(res, 422, "invalid_input")
    assert "ci.yml:" in res.json()["error"]["message"] and "steps" in res.json()["error"]["message"]
    res = client.post("/v1/pipelines", json={**body, "workflow": "jobs: ["}, headers=auth(token))
    assert_error(res, 422, "invalid_input")
    assert "ci.yml:1" in res.json()["error"]["message"]
    assert_error(client.get("/v1/pipelines/nope", headers=auth(token)), 404, "not_found")


def test_idempotency_key_replays_the_first_result_and_refuses_another_body(
    harness: Harness, git_server: GitServer, client: TestClient
) -> None:
    token = make_token(harness, "submit", "read", "cancel")
    key = str(uuid.uuid4())
    body = job_body(git_server, "true", "deploy")
    headers = {**auth(token), "Idempotency-Key": key}
    first = client.post("/v1/jobs", json=body, headers=headers)
    again = client.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = client.post("/v1/jobs", json={**body, "name": "different"}, headers=headers)
    assert_error(other, 409, "conflict", "Idempotency-Key")
    # Keys are per token: another submitter's same key is its own.
    token2 = make_token(harness, "submit")
    third = client.post("/v1/jobs", json=body, headers={**auth(token2), "Idempotency-Key": key})
    assert third.status_code == 201 and third.json()["id"] != first.json()["id"]
    for job_id in (first.json()["id"], third.json()["id"]):
        client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(token))


def test_concurrent_identical_submits_create_one_job(
    harness: Harness, git_server: GitServer, api_url: str
) -> None:
    token = make_token(harness, "submit", "read", "cancel")
    headers = {**auth(token), "Idempotency-Key": str(uuid.uuid4())}
    body = job_body(git_server, "true", "deploy", name="once-" + uuid.uuid4().hex[:6])
    results: list[httpx.Response] = []
    barrier = threading.Barrier(8)

    def post() -> None:
        barrier.wait()
        results.append(httpx.post(f"{api_url}/v1/jobs", json=body, headers=headers, timeout=60))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [201] * 8, [r.text for r in results]
    assert len({r.json()["id"] for r in results}) == 1
    named = [j for j in harness.pool().store.list_jobs(limit=500) if j.name == body["name"]]
    assert len(named) == 1
    httpx.post(f"{api_url}/v1/jobs/{named[0].id}/cancel", headers=auth(token), timeout=30)


def test_each_scope_allows_only_its_own_calls(
    harness: Harness, git_server: GitServer, client: TestClient
) -> None:
    submit, read, cancel, admin = (
        make_token(harness, s) for s in ("submit", "read", "cancel", "admin")
    )
    job = client.post("/v1/jobs", json=job_body(git_server, "true", "deploy"), headers=auth(submit))
    assert job.status_code == 201
    job_id = job.json()["id"]
    assert_error(client.get(f"/v1/jobs/{job_id}", headers=auth(submit)), 403, "forbidden")
    assert client.get(f"/v1/jobs/{job_id}", headers=auth(read)).status_code == 200
    assert_error(client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(read)), 403, "forbidden")
    assert_error(
        client.post("/v1/jobs", json=job_body(git_server, "true"), headers=auth(cancel)),
        403,
        "forbidden",
    )
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(cancel)).json()["state"] == (
        "cancelled"
    )
    for path in ("/v1/queues", "/metrics", f"/v1/jobs/{job_id}/artifacts"):
        assert client.get(path, headers=auth(admin)).status_code == 200, path
        assert_error(client.get(path), 401, "unauthorized")


def test_metrics_endpoint_speaks_prometheus(harness: Harness, client: TestClient) -> None:
    token = make_token(harness, "read")
    res = client.get("/metrics", headers=auth(token))
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
    assert "# TYPE ci_pool_queue_depth gauge" in res.text
    assert 'ci_pool_queue_depth{capability="linux"}' in res.text


def test_off_loopback_needs_tls_or_a_proxy_and_tls_serves(harness: Harness, tmp_path: Path) -> None:
    make_token(harness, "read")  # a token exists: only TLS is missing
    with pytest.raises(ConfigError, match="without TLS"):
        make_server(harness.settings(), "0.0.0.0", free_port())
    assert make_server(harness.settings(), "0.0.0.0", free_port(), behind_proxy=True)
    with pytest.raises(ConfigError, match="both --tls-cert and --tls-key"):
        make_server(harness.settings(), "127.0.0.1", free_port(), tls_cert=tmp_path / "c")

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    srv = make_server(
        harness.settings(), "127.0.0.1", port, log_level="warning", tls_cert=cert, tls_key=key
    )
    with running(srv):
        res = httpx.get(
            f"https://127.0.0.1:{port}/healthz",
            verify=ssl.create_default_context(cafile=str(cert)),
            timeout=10,
        )
        assert res.status_code == 200 and res.json()["status"] == "ok"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_followers_that_leave_hold_no_server_thread(
    harness: Harness, git_server: GitServer, linux_worker: Worker, api_url: str
) -> None:
    """More followers than the server has threads (40) read a keep-alive and leave while
    the job runs on; the server still answers at once afterwards."""
    token = make_token(harness, "submit", "read", "cancel")
    headers = auth(token)
    job = httpx.post(
        f"{api_url}/v1/jobs", json=job_body(git_server, "sleep 60"), headers=headers, timeout=30
    ).json()
    got: list[str] = []

    def follow_then_leave() -> None:
        with httpx.stream(
            "GET",
            f"{api_url}/v1/jobs/{job['id']}/logs",
            params={"follow": 1},
            headers=headers,
            timeout=30,
        ) as res:
            for line in res.iter_lines():
                if line.startswith(": keep-alive"):
                    got.append(line)
                    return

    followers = [threading.Thread(target=follow_then_leave) for _ in range(45)]
    for t in followers:
        t.start()
    for t in followers:
        t.join(timeout=60)
    assert len(got) == 45
    start = time.monotonic()
    res = httpx.get(f"{api_url}/v1/jobs/{job['id']}", headers=headers, timeout=10)
    assert res.status_code == 200 and res.json()["state"] in ("queued", "running")
    assert time.monotonic() - start < 5
    httpx.post(f"{api_url}/v1/jobs/{job['id']}/cancel", headers=headers, timeout=30)


def test_a_job_step_takes_the_workflow_step_fields(
    harness: Harness, git_server: GitServer, linux_worker: Worker, client: TestClient
) -> None:
    """A job submitted on its own has the steps of a workflow job: id and outputs, if,
    env, shell and working directory, all read by the runner from the one step model."""
    token = make_token(harness, "submit", "read")
    steps = [
        {"id": "v", "run": 'mkdir -p sub; echo "ver=7" >> "$GITHUB_OUTPUT"'},
        {"run": "exit 3", "name": "broken", "continue_on_error": True},
        {
            "name": "show",
            "run": 'echo "ver=${{ steps.v.outputs.ver }} greet=$GREET dir=$(basename $PWD)"',
            "env": {"GREET": "hi"},
            "shell": "sh",
            "working_directory": "sub",
        },
        {"name": "never", "run": "echo never-runs", "if_expr": "failure()"},
    ]
    body = job_body(git_server, "unused") | {"steps": steps}
    res = client.post("/v1/jobs", json=body, headers=auth(token))
    assert res.status_code == 201, res.text
    job = wait_for(client, token, res.json()["id"], "succeeded", "failed", "error")
    assert job["state"] == "succeeded", job
    log = harness.pool().store.read_log(str(job["id"])).splitlines()
    assert "ver=7 greet=hi dir=sub" in log, log
    assert "##[step] 4 never skipped" in log
    assert "never-runs" not in log

    bad = job_body(git_server, "true") | {"steps": [{"run": "true", "if_expr": "success( &&"}]}
    res = client.post("/v1/jobs", json=bad, headers=auth(token))
    assert_error(res, 422, "invalid_input", "steps.0.if_expr")
    bad = job_body(git_server, "true") | {"steps": [{"run": "true", "shell": "pwsh"}]}
    res = client.post("/v1/jobs", json=bad, headers=auth(token))
    assert_error(res, 422, "invalid_input", "steps.0.shell")
