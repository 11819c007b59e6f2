"""The CLI's API client against a scripted transport: URL checks, error mapping to the
local mode's exceptions, signing, Server-Sent Events and artifact digests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from ci_pool.cli.client import connect
from ci_pool.cli.http_client import HttpClient, check_api_url
from ci_pool.core.evidence import Evidence
from ci_pool.core.policy import SIGNATURE_HEADER, verify_signature
from ci_pool.core.submissions import job_create
from ci_pool.exceptions import (
    AccessDenied,
    BrokerError,
    CIPoolError,
    ConfigError,
    InfraError,
    InputError,
    NotFound,
    PolicyDenied,
)
from ci_pool.service.job_views import JobView, PipelineView, as_json, brief_json
from ci_pool.settings import Settings

URL = "http://127.0.0.1:8080"
TOKEN = "cip_unit-test-token-value"
#: A job's and a pipeline's view as the API sends them.
VIEW = brief_json(
    JobView(
        id="j1", name="job", state="queued", capability="linux", queue="linux",
        repo="https://git.example/app.git", ref="main", commit_sha=None, labels=["linux"],
        timeout_s=600, attempt=0, max_attempts=3, runner_id=None, exit_code=None, reason=None,
        created_at="2026-01-01T10:00:00+00:00", queued_at="2026-01-01T10:00:00+00:00",
        started_at=None, finished_at=None, evidence=None,
    )
)  # fmt: skip
PIPELINE = as_json(
    PipelineView(
        id="p1", name="ci", file="ci.yml", state="running", repo="https://git.example/app.git",
        ref="main", commit_sha=None, created_at="2026-01-01T10:00:00+00:00", finished_at=None,
        jobs=[],
    )
)  # fmt: skip


def make(
    handler: Callable[[httpx.Request], httpx.Response], token: str | None = TOKEN, **kw: Any
) -> HttpClient:
    settings = Settings(api_url=URL, api_token=SecretStr(token) if token else None, **kw)
    return HttpClient(settings, transport=httpx.MockTransport(handler))


def error(status: int, code: str, message: str, field: str | None = None) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": message, "field": field}}
    )


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/", "http://localhost:8080", "http://[::1]:80", "https://ci.example"],
)
def test_api_url_allowed(url: str) -> None:
    assert check_api_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://ci.example:8080", "in clear"),
        ("http://10.0.0.5", "in clear"),
        ("ftp://ci.example", "http(s)://"),
        ("localhost:8080", "http(s)://"),
        ("https://user:pw@ci.example", "CI_POOL_API_TOKEN"),
    ],
)
def test_api_url_refused(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        check_api_url(url)
    assert words in str(exc.value) and str(exc.value).startswith("CI_POOL_API_URL: ")
    assert exc.value.exit_code == 2


def test_connect_picks_the_api_only_when_a_url_is_set() -> None:
    assert isinstance(connect(Settings(api_url=URL)), HttpClient)
    assert not isinstance(connect(Settings(api_url="")), HttpClient)


@pytest.mark.parametrize(
    ("response", "cls", "text", "code"),
    [
        (
            error(422, "invalid_input", "must not start with '-'", "ref"),
            InputError,
            "ref: must not start with '-'",
            2,
        ),
        (error(404, "not_found", "no job with id 'x'"), NotFound, "no job with id 'x'", 2),
        (
            error(
                403,
                "rejected",
                "job j1 rejected, denied by rule capabilities.deploy.refs: ref main is not allowed",
            ),
            PolicyDenied,
            "job j1 rejected, denied by rule capabilities.deploy.refs: ref main is not allowed",
            2,
        ),
        (
            error(403, "forbidden", "token 't' lacks the 'cancel' scope"),
            AccessDenied,
            "token 't' lacks the 'cancel' scope",
            2,
        ),
        (
            error(409, "conflict", "key reused", "Idempotency-Key"),
            InputError,
            "Idempotency-Key: key reused",
            2,
        ),
        (
            error(503, "broker_unavailable", "the broker is unreachable"),
            BrokerError,
            f"the API at {URL} is unavailable: the broker is unreachable",
            3,
        ),
        (
            httpx.Response(502, text="<html><b>Bad gateway</b></html>"),
            InfraError,
            f"the API at {URL} answered 502 (http_error): <html><b>Bad gateway</b></html>",
            3,
        ),
    ],
)
def test_api_errors_become_the_local_exceptions(
    response: httpx.Response, cls: type[CIPoolError], text: str, code: int
) -> None:
    client = make(lambda request: response)
    with pytest.raises(cls) as exc:
        client.job("x")
    assert type(exc.value) is cls
    assert str(exc.value) == text and exc.value.exit_code == code


def test_policy_denial_keeps_its_rule() -> None:
    client = make(lambda r: error(403, "rejected", "denied by rule iso.repos: not allowed", "repo"))
    with pytest.raises(PolicyDenied) as exc:
        client.job("x")
    assert (exc.value.rule, exc.value.field, exc.value.detail) == (
        "iso.repos",
        "repo",
        "not allowed",
    )


def test_401_names_the_token_variable_and_never_the_token() -> None:
    unauthorized = error(401, "unauthorized", "the token is unknown, expired or revoked")
    with pytest.raises(AccessDenied) as exc:
        make(lambda r: unauthorized, token=None).status()
    assert "set CI_POOL_API_TOKEN" in str(exc.value) and URL in str(exc.value)
    with pytest.raises(AccessDenied) as exc:
        make(lambda r: unauthorized).status()
    assert "refused CI_POOL_API_TOKEN: the token is unknown" in str(exc.value)
    assert TOKEN not in str(exc.value)


def test_connection_failure_names_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(InfraError) as exc:
        make(refuse).status()
    assert f"cannot reach the API at {URL}" in str(exc.value) and exc.value.exit_code == 3

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(InfraError, match="did not answer in time"):
        make(slow).status()


def test_submissions_carry_the_token_and_a_valid_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_POOL_UNIT_SIGN_KEY", "k3y-bytes")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        if request.url.path == "/v1/pipelines":
            return httpx.Response(201, json={**PIPELINE, "repo": body["repo"]})
        return httpx.Response(201, json={**VIEW, "waiting": None, "artifacts": [], "events": []})

    client = make(handler, sign_key_id="k1", sign_key="env:CI_POOL_UNIT_SIGN_KEY")
    body = {"repo": "https://git.example/app.git", "ref": "main", "steps": [{"run": "true"}]}
    assert brief_json(client.submit_job(job_create(body))) == VIEW
    client.submit_pipeline("jobs: {}", "ci.yml", "https://git.example/app.git", "main", "push")
    keys = {"k1": "env:CI_POOL_UNIT_SIGN_KEY"}
    for request in seen:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        sent = json.loads(request.content)
        assert verify_signature(request.headers[SIGNATURE_HEADER], sent, keys) == "k1"


def test_unsigned_without_a_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=VIEW)

    make(handler).submit_job(job_create({"repo": "r", "steps": [{"run": "true"}]}))
    assert SIGNATURE_HEADER.lower() not in seen[0].headers


def sse(*events: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e}\ndata: {json.dumps(d)}\n\n".encode() for e, d in events)


def test_follow_reads_server_sent_events() -> None:
    body = sse(
        ("line", {"t": "2024-01-01T10:00:00.123000+00:00", "line": "one"}),
        ("line", {"t": None, "line": "two"}),
        ("end", {"state": "succeeded", "exit_code": 0, "reason": None}),
    )

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["follow"] == "1"
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    assert list(make(handler).follow("j1")) == [
        ("2024-01-01T10:00:00.123000+00:00", "one"),
        (None, "two"),
    ]


def test_follow_that_breaks_off_is_an_infra_error() -> None:
    body = sse(("line", {"t": None, "line": "one"}))
    client = make(lambda r: httpx.Response(200, content=body))
    with pytest.raises(InfraError, match="broke off"):
        list(client.follow("j1"))


def test_follow_of_an_unknown_job_is_not_found() -> None:
    client = make(lambda r: error(404, "not_found", "no job with id 'nope'"))
    with pytest.raises(NotFound, match="no job"):
        list(client.follow("nope"))


def artifact_api(content: bytes, sha256: str) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs/j1/artifacts":
            listed = {"path": "dist/app.txt", "size": len(content), "sha256": sha256, "attempt": 1}
            return httpx.Response(200, json={"data": [listed]})
        assert request.url.path == "/v1/jobs/j1/artifacts/dist/app.txt"
        assert request.url.params["attempt"] == "1"
        return httpx.Response(200, content=content)

    return handler


def test_artifacts_are_checked_against_their_digest(tmp_path: Path) -> None:
    good = hashlib.sha256(b"bits").hexdigest()
    paths = make(artifact_api(b"bits", good)).download_artifacts("j1", tmp_path)
    assert paths == [(tmp_path / "dist" / "app.txt").resolve()]
    assert paths[0].read_bytes() == b"bits"
    with pytest.raises(InfraError, match="does not match its sha256"):
        make(artifact_api(b"tampered", good)).download_artifacts("j1", tmp_path / "bad")
    assert not (tmp_path / "bad" / "dist" / "app.txt").exists()


def test_job_ids_cannot_walk_out_of_their_path() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return error(404, "not_found", "no job")

    with pytest.raises(NotFound):
        make(handler).job("../queues")
    assert seen == ["/v1/jobs/..%2Fqueues"]


@pytest.mark.parametrize(
    ("call", "answer", "words"),
    [
        (lambda c: c.job("j1"), {"id": "j1", "state": "queued"}, "malformed JobView (name: "),
        (lambda c: c.job("j1"), [1, 2], "malformed JobView (the body: "),
        (
            lambda c: c.job("j1"),
            {**VIEW, "attempt": "first"},
            "malformed JobView (attempt: Input should be a valid integer",
        ),
        (lambda c: c.pipeline("p1"), {**PIPELINE, "jobs": [{"id": 3}]}, "PipelineView (jobs.0."),
        (lambda c: c.status(), {"rows": []}, "/v1/queues without a list of rows"),
        (lambda c: c.status(), {"data": [{"capability": "linux"}]}, "malformed QueueStatus"),
        (lambda c: c.runners(), {"data": [{}]}, "malformed RunnerStatus (runner_id: "),
        (lambda c: c.drain("r1"), {"ok": True}, "/v1/runners/r1/drain without 'message'"),
        (lambda c: c.wait("j1", 0), {**VIEW, "state": "paused"}, "JobView"),
    ],
)
def test_a_malformed_answer_is_an_infra_error_naming_the_field(
    call: Callable[[HttpClient], object], answer: object, words: str
) -> None:
    """An answer of another shape (another version of the API, a proxy's page) is exit 3
    with the path and the field, never a traceback."""
    client = make(lambda request: httpx.Response(200, json=answer))
    with pytest.raises(InfraError) as exc:
        call(client)
    assert words in str(exc.value), str(exc.value)
    assert str(exc.value).startswith(f"the API at {URL} answered /v1/")
    assert exc.value.exit_code == 3


def test_the_typed_views_print_the_json_the_api_sent() -> None:
    """Read into a view and dumped again, an answer is the same JSON, byte for byte: the
    ``--json`` output of both clients does not depend on the mode."""
    detailed = {
        **VIEW,
        # A record with a key of an older version, kept as it was.
        "evidence": as_json(
            Evidence.model_validate({"job_id": "j1", "mode": "docker", "kept_from_v1": [1]})
        ),
        "waiting": None,
        "artifacts": [{"path": "a.txt", "size": 3, "sha256": "0" * 64, "attempt": 1}],
        "expired_artifacts": [],
        "events": [{"attempt": 1, "from": None, "to": "queued", "at": None, "runner_id": None,
                    "reason": None}],
        "annotations": [],
        "summaries": [],
    }  # fmt: skip
    client = make(lambda request: httpx.Response(200, json=detailed))
    assert json.dumps(as_json(client.job("j1"))) == json.dumps(detailed)
    assert json.dumps(brief_json(client.job("j1"))) == json.dumps(
        VIEW | {"evidence": detailed["evidence"]}
    )
