"""The web view's boundary: forms need the session's CSRF value, what a job prints or
writes as a summary stays inert, every page carries a CSP without 'unsafe-inline' and no
inline script or style, the session cookie's flags, no open redirect through ``next=``,
masked secrets stay masked on every page and stream, and only the static files themselves
are cached for good."""

from __future__ import annotations

import hashlib
import html
import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ci_pool.ui.web import CSP
from tests.conftest import SECRET_VALUE, GitServer, Harness, Worker
from tests.integration.test_api import auth, job_body, make_token
from tests.integration.test_ui_pages import browser, csrf_of, login, ui_app

pytestmark = pytest.mark.integration
__all__ = ["ui_app"]

PRINTS = (
    "echo '<script>alert(1)</script>'\n"
    'echo "token=$API_TOKEN"\n'
    "echo '<img src=x onerror=alert(2)> <b>bold?</b>' >> \"$GITHUB_STEP_SUMMARY\"\n"
    "echo '[click](javascript:alert(3)) ![i](javascript:alert(4))' >> \"$GITHUB_STEP_SUMMARY\"\n"
    'echo "secret in summary: $API_TOKEN" >> "$GITHUB_STEP_SUMMARY"\n'
)


@pytest.fixture(scope="module")
def hostile_job(
    harness: Harness, git_server: GitServer, linux_worker: Worker, ui_app: FastAPI
) -> str:
    """A finished job that printed HTML, wrote hostile markdown and echoed a secret."""
    api = TestClient(ui_app)
    token = make_token(harness, "submit", "read")
    body = job_body(git_server, PRINTS, secrets=["API_TOKEN"])
    res = api.post("/v1/jobs", json=body, headers=auth(token))
    assert res.status_code == 201, res.text
    job_id: str = res.json()["id"]
    harness.wait_state(job_id, "succeeded", timeout=90)
    return job_id


def _queued_job(harness: Harness, git_server: GitServer, app: FastAPI) -> str:
    api = TestClient(app)
    token = make_token(harness, "submit")
    res = api.post("/v1/jobs", json=job_body(git_server, "true", "deploy"), headers=auth(token))
    assert res.status_code == 201, res.text
    return str(res.json()["id"])


def test_a_post_without_the_sessions_csrf_value_is_refused(
    harness: Harness, git_server: GitServer, ui_app: FastAPI
) -> None:
    job_id = _queued_job(harness, git_server, ui_app)
    client = browser(ui_app)
    csrf = login(client, make_token(harness, "admin"))
    other = browser(ui_app)
    other_csrf = login(other, make_token(harness, "admin"))
    assert other_csrf != csrf
    for data in ({}, {"csrf": ""}, {"csrf": "wrong"}, {"csrf": other_csrf}):
        for path in (f"/ui/jobs/{job_id}/cancel", f"/ui/jobs/{job_id}/retry", "/ui/logout"):
            res = client.post(path, data=data)
            assert res.status_code == 403, (path, data, res.text)
            assert "CSRF value is missing or wrong" in html.unescape(res.text)
    assert harness.pool().get(job_id).state == "queued", "nothing was cancelled"
    assert client.get("/ui/").status_code == 200, "the session is still alive"
    # The login form's own CSRF value: a cross-site login post has none.
    fresh = browser(ui_app)
    res = fresh.post("/ui/login", data={"token": make_token(harness, "read"), "csrf": "x"})
    assert res.status_code == 403 and "ci_pool_session" not in res.headers.get("set-cookie", "")
    assert client.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": csrf}).status_code == 303
    assert harness.pool().get(job_id).state == "cancelled"


def test_what_a_job_prints_or_summarises_stays_inert_and_masked(
    harness: Harness, ui_app: FastAPI, hostile_job: str
) -> None:
    client = browser(ui_app)
    login(client, make_token(harness, "read"))
    page = client.get(f"/ui/jobs/{hostile_job}")
    assert page.status_code == 200, page.text
    text = page.text
    assert "<script>alert(1)" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert not re.search(r"<img[^>]*onerror", text, re.I)
    assert not re.search(r"""(href|src)\s*=\s*["']?\s*javascript:""", text, re.I)
    assert "<b>bold?</b>" not in text, "raw HTML in a summary is not passed through"
    assert SECRET_VALUE not in text and html.escape(SECRET_VALUE) not in text
    assert "token=***" in text and "secret in summary: ***" in text
    fragment = client.get(f"/ui/jobs/{hostile_job}/log", params={"from": 1})
    assert "&lt;script&gt;" in fragment.text and SECRET_VALUE not in fragment.text
    with client.stream("GET", f"/ui/jobs/{hostile_job}/log/stream") as stream:
        events = "".join(stream.iter_text())
    assert "event: end" in events and '"line": "token=***"' in events
    assert SECRET_VALUE not in events
    script = (Path(__file__).parents[2] / "ci_pool/ui/static/log.js").read_text()
    assert "innerHTML" not in script and "textContent" in script


def test_every_page_has_the_csp_and_no_inline_script_or_style(
    harness: Harness, ui_app: FastAPI, hostile_job: str
) -> None:
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
    client = browser(ui_app)
    anonymous = client.get("/ui/login")
    login(client, make_token(harness, "admin"))
    job = harness.pool().get(hostile_job)
    pages = [
        anonymous,
        client.get("/ui/"),
        client.get("/ui/pool/live"),
        client.get("/ui/pipelines"),
        client.get(f"/ui/jobs/{job.id}"),
        client.get(f"/ui/jobs/{job.id}/log?from=2"),
        client.get(f"/ui/runners/{job.runner_id}"),
        client.get("/ui/jobs/nope"),
        client.get("/ui/no-such-page"),
        client.get("/ui/static/log.js"),
    ]
    for res in pages:
        assert res.headers["content-security-policy"] == CSP, res.url
        assert res.headers["x-frame-options"] == "DENY"
        if "text/html" in res.headers.get("content-type", ""):
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", res.text), res.url
            assert not re.search(r"\sstyle=|<style", res.text), res.url
            assert not re.search(r"<[^>]+\son[a-z]+=", res.text), res.url
    assert [r.status_code for r in pages[-3:]] == [404, 404, 200]
    assert "/v1/" not in pages[4].text, "downloads go through the session, not a bearer token"


def test_session_cookie_flags_and_secure_off_loopback(harness: Harness, ui_app: FastAPI) -> None:
    token = make_token(harness, "read")
    for host, secure in (("127.0.0.1", False), ("ci.example.org", True)):
        client = browser(ui_app, host)
        form = client.get("/ui/login")
        res = client.post("/ui/login", data={"token": token, "csrf": csrf_of(form.text)})
        assert res.status_code == (303 if not secure else 403), res.text
        cookies = form.headers.get_list("set-cookie") + res.headers.get_list("set-cookie")
        if secure:
            # The login cookie is Secure off loopback, so a plain-http client never sends
            # it back; the form says TLS is needed rather than logging in without it.
            assert all("secure" in c.lower() for c in cookies), cookies
            assert "serve the API over TLS" in form.text and "serve the API over TLS" in res.text
            continue
        (session,) = [c for c in cookies if c.startswith("ci_pool_session=")]
        flags = [f.strip().lower() for f in session.split(";")]
        assert "httponly" in flags and "samesite=strict" in flags and "path=/ui/" in flags
        assert "secure" not in flags
    https = TestClient(ui_app, base_url="https://ci.example.org", follow_redirects=False)
    form = https.get("/ui/login")
    res = https.post("/ui/login", data={"token": token, "csrf": csrf_of(form.text)})
    assert res.status_code == 303, res.text
    session = next(c for c in res.headers.get_list("set-cookie") if "ci_pool_session=" in c)
    assert {"secure", "httponly", "samesite=strict"} <= {
        f.strip().lower() for f in session.split(";")
    }


@pytest.mark.parametrize(
    "next_path",
    [
        "https://evil.example/",
        "//evil.example/ui/",
        "/\\evil.example",
        "/ui/../v1/jobs",
        "javascript:alert(1)",
        "/v1/jobs",
        "ui/",
        "/ui/\r\nSet-Cookie: x=1",
    ],
)
def test_next_never_leads_off_the_web_view(
    harness: Harness, ui_app: FastAPI, next_path: str
) -> None:
    client = browser(ui_app)
    form = client.get("/ui/login", params={"next": next_path})
    assert f'value="{html.escape(next_path)}"' not in form.text or next_path == "/ui/"
    res = client.post(
        "/ui/login",
        data={"token": make_token(harness, "read"), "csrf": csrf_of(form.text), "next": next_path},
    )
    assert res.status_code == 303 and res.headers["location"] == "/ui/"


def test_a_local_next_is_kept(harness: Harness, ui_app: FastAPI) -> None:
    client = browser(ui_app)
    gone = client.get("/ui/pipelines?state=failed")
    assert gone.status_code == 303
    form = client.get(gone.headers["location"])
    res = client.post(
        "/ui/login",
        data={
            "token": make_token(harness, "read"),
            "csrf": csrf_of(form.text),
            "next": "/ui/pipelines?state=failed",
        },
    )
    assert res.headers["location"] == "/ui/pipelines?state=failed"
    started = time.monotonic()
    assert client.get(res.headers["location"]).status_code == 200
    assert time.monotonic() - started < 5


def test_only_a_static_file_under_its_own_digest_is_cached_for_good(
    harness: Harness, ui_app: FastAPI
) -> None:
    """Pages name their stylesheet and scripts by digest, and those answers may be kept for
    good; any other ``v=`` (or none) is not, and no name reaches outside ``static/``."""
    client = browser(ui_app)
    login(client, make_token(harness, "read"))
    page = client.get("/ui/pipelines")
    urls = [html.unescape(u) for u in re.findall(r'(?:href|src)="(/ui/static/[^"]+)"', page.text)]
    digests = {urlsplit(u).path: parse_qs(urlsplit(u).query)["v"][0] for u in urls}
    assert sorted(digests) == ["/ui/static/htmx.min.js", "/ui/static/ui.css"]
    for url in urls:
        res = client.get(url)
        assert res.status_code == 200, url
        assert hashlib.sha256(res.content).hexdigest()[:16] == digests[urlsplit(url).path]
        assert res.headers["cache-control"] == "public, max-age=31536000, immutable"
    css = digests["/ui/static/ui.css"]
    for path in (
        "/ui/static/ui.css",
        "/ui/static/ui.css?v=0000000000000000",
        f"/ui/static/htmx.min.js?v={css}",
        f"/ui/static/ui.css?v={css}&v=0",
    ):
        res = client.get(path)
        assert res.status_code == 200, path
        assert "immutable" not in res.headers.get("cache-control", ""), path
    for path in (
        "/ui/static/%2e%2e/web.py",
        f"/ui/static/..%2fweb.py?v={css}",
        "/ui/static/%2e%2e%2fweb.py?v=",
        "/ui/static/.gitignore?v=",
        "/ui/static/?v=",
    ):
        res = client.get(path)
        assert res.status_code == 404, path
        assert "immutable" not in res.headers.get("cache-control", ""), path
        assert "import" not in res.text, path


def test_a_static_digest_is_only_for_a_regular_file_directly_in_static(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ci_pool.ui import web

    static = tmp_path / "static"
    (static / "sub").mkdir(parents=True)
    (static / "a.css").write_text("body{}")
    (static / "sub" / "b.css").write_text("p{}")
    (static / "link.css").symlink_to(tmp_path / "outside.css")  # dangling
    monkeypatch.setattr(web, "HERE", tmp_path)
    assert web.static_digest("a.css") == hashlib.sha256(b"body{}").hexdigest()[:16]
    for name in ("sub", "sub/b.css", "link.css", "missing.css", "..", ".hidden", ""):
        assert web.static_digest(name) is None, name
