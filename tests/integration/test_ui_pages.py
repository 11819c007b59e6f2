"""The web view (/ui/) over the shared pool with a real linux worker: every page renders
for a real pipeline and job, the pipelines list filters and pages, a limited token sees
only its own, a read token gets no buttons and a 403 when it posts, and a session ends
at logout and when its token is revoked."""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ci_pool.api.app import create_app
from ci_pool.store import tokens
from tests.conftest import GitServer, Harness, Worker
from tests.integration.test_api import auth, job_body, make_token

pytestmark = pytest.mark.integration

WORKFLOW = """\
name: ui-pipeline
on: push
jobs:
  build:
    runs-on: linux
    outputs:
      version: ${{ steps.v.outputs.version }}
    steps:
      - id: v
        name: version
        run: |
          echo "::group::details of the build"
          echo "inside the group"
          echo "::endgroup::"
          printf '\\033[31mred text\\033[0m plain\\n'
          echo "version=$(cat VERSION)" >> "$GITHUB_OUTPUT"
          echo "## Built **$(cat VERSION)**" >> "$GITHUB_STEP_SUMMARY"
  test:
    needs: build
    runs-on: linux
    steps:
      - run: echo "testing ${{ needs.build.outputs.version }}"
"""

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


@pytest.fixture(scope="module")
def ui_app(harness: Harness) -> FastAPI:
    return create_app(harness.settings())


def browser(app: FastAPI, host: str = "127.0.0.1") -> TestClient:
    """A client with its own cookie jar, as one browser."""
    return TestClient(app, base_url=f"http://{host}", follow_redirects=False)


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, html[:2000]
    return found.group(1)


def login(client: TestClient, token: str) -> str:
    """Log in through the form; the session's CSRF value."""
    form = client.get("/ui/login")
    assert form.status_code == 200, form.text
    res = client.post(
        "/ui/login", data={"token": token, "csrf": csrf_of(form.text), "next": "/ui/"}
    )
    assert res.status_code == 303, res.text
    assert res.headers["location"] == "/ui/"
    home = client.get("/ui/")
    assert home.status_code == 200, home.text
    return csrf_of(home.text)


def rows(html: str, test: str) -> list[str]:
    return re.findall(rf'<tr data-test="{test}"[^>]*>(.*?)</tr>', html, re.S)


def wait_pipeline(harness: Harness, pipeline_id: str, timeout: float = 90) -> None:
    pool = harness.pool()
    deadline = time.monotonic() + timeout
    while pool.pipeline(pipeline_id)[0].state == "running":
        assert time.monotonic() < deadline, "the pipeline never ended"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def finished_pipeline(
    harness: Harness, git_server: GitServer, linux_worker: Worker, ui_app: FastAPI
) -> Iterator[dict[str, Any]]:
    token = make_token(harness, "submit", "read")
    api = TestClient(ui_app)
    body = {"workflow": WORKFLOW, "file": "ui.yml", "repo": git_server.url(), "ref": "main"}
    res = api.post("/v1/pipelines", json=body, headers=auth(token))
    assert res.status_code == 201, res.text
    pid = res.json()["id"]
    wait_pipeline(harness, pid)
    shown = api.get(f"/v1/pipelines/{pid}", headers=auth(token)).json()
    yield {"id": pid, "jobs": {j["key"]: j for j in shown["jobs"]}}


def test_every_page_renders_for_a_real_pipeline(
    harness: Harness, ui_app: FastAPI, finished_pipeline: dict[str, Any]
) -> None:
    client = browser(ui_app)
    login(client, make_token(harness, "read", "submit", "cancel"))
    pid, jobs = finished_pipeline["id"], finished_pipeline["jobs"]

    pool = client.get("/ui/")
    assert '<h1 data-test="title">Pool</h1>' in pool.text
    assert any('data-capability="linux"' in r for r in re.findall(r"<tr[^>]*>", pool.text))
    assert rows(pool.text, "runner-row"), "the live linux worker is listed"
    assert 'hx-get="/ui/pool/live"' in pool.text
    assert client.get("/ui/pool/live").text.count('data-test="capability-row"') >= 1

    listing = client.get("/ui/pipelines")
    assert f'href="/ui/pipelines/{pid}"' in listing.text
    linux = client.get("/ui/pipelines", params={"capability": "linux", "state": "succeeded"})
    assert f'data-id="{pid}"' in linux.text
    android = client.get("/ui/pipelines", params={"capability": "android"})
    assert f'data-id="{pid}"' not in android.text
    bad = client.get("/ui/pipelines", params={"state": "sideways"})
    assert bad.status_code == 422 and "unknown pipeline state 'sideways'" in html.unescape(bad.text)

    page = client.get(f"/ui/pipelines/{pid}")
    assert page.status_code == 200, page.text
    job_rows = rows(page.text, "job-row")
    assert [re.search(r">(build|test)</a>", r).group(1) for r in job_rows] == ["build", "test"]  # type: ignore[union-attr]
    assert page.text.count('data-test="job-state">succeeded<') == 2
    assert 'data-test="gantt"' in page.text and page.text.count('class="bar state-succeeded"') == 2
    assert "version=1.2.3" in page.text
    assert "<h2>Built <strong>1.2.3</strong></h2>" in page.text
    assert 'data-test="retry"' not in page.text and 'data-test="cancel"' not in page.text

    build = client.get(f"/ui/jobs/{jobs['build']['id']}")
    assert build.status_code == 200, build.text
    assert 'data-test="job-state">succeeded<' in build.text
    (step,) = rows(build.text, "step-row")
    assert re.search(
        r'data-test="step-outcome">ok<.*data-test="step-duration">\d+\.\d\ds<', step, re.S
    )
    assert '<details class="group"' in build.text and "details of the build" in build.text
    assert '<span class="ansi-fg-1">red text</span> plain' in build.text
    assert re.search(r'<div class="line[^"]*" id="L1"><a class="ln" href="#L1">1</a>', build.text)
    assert '<span class="tx">##[group]' not in build.text
    assert '<span class="tx">##[endgroup]' not in build.text
    assert 'data-stream="' not in build.text, "a finished job has no live stream"

    lazy = client.get(f"/ui/jobs/{jobs['build']['id']}/steps")
    assert rows(lazy.text, "step-row") == [step], "the steps fragment of a long log"
    rest = client.get(f"/ui/jobs/{jobs['build']['id']}/log", params={"from": 2})
    assert rest.status_code == 200 and 'id="L1"' not in rest.text and 'id="L2"' in rest.text
    runner = jobs["build"]["runner_id"]
    shown = client.get(f"/ui/runners/{runner}")
    assert shown.status_code == 200 and f'href="/ui/jobs/{jobs["build"]["id"]}"' in shown.text
    assert 'data-test="drain"' not in shown.text, "only admin tokens drain"
    assert client.get("/ui/runners/no-such-runner").status_code == 404
    assert client.get("/ui/jobs/nope").status_code == 404


def test_pipelines_list_filters_and_cursor_pages(harness: Harness, ui_app: FastAPI) -> None:
    store = harness.pool().store
    repo = f"https://git.example/{uuid.uuid4().hex[:8]}/app.git"
    made = [
        store.create_pipeline(
            {"name": f"p{i}", "repo": repo, "ref": "main" if i % 2 else "dev", "file": "ci.yml"},
            [],
        ).id
        for i in range(7)
    ]
    client = browser(ui_app)
    login(client, make_token(harness, "read"))
    seen: list[str] = []
    url: str | None = f"/ui/pipelines?repo={repo}"
    pages = 0
    while url:
        res = client.get(url)
        assert res.status_code == 200, res.text
        ids = re.findall(r'data-test="pipeline-row" data-id="([^"]+)"', res.text)
        seen += ids
        pages += 1
        nxt = re.search(r'data-test="next" href="([^"]+)"', res.text)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
    assert pages == 1 and seen == made[::-1], "newest first, one page of 50"

    # Smaller pages through the service, the same cursor the page links carry.
    from ci_pool.service.browsing import pipelines_page
    from ci_pool.store.browsing import PipelineFilter

    cursor, paged = None, []
    while True:
        got, cursor = pipelines_page(store, PipelineFilter(repo=repo), limit=3, cursor=cursor)
        paged += [p.id for p in got]
        if cursor is None:
            break
    assert paged == made[::-1]
    dev = client.get("/ui/pipelines", params={"repo": repo, "ref": "dev"})
    assert len(rows(dev.text, "pipeline-row")) == 4
    assert client.get("/ui/pipelines", params={"cursor": "garbage!"}).status_code == 422


def test_a_limited_token_sees_only_its_repositories_and_capabilities(
    harness: Harness, ui_app: FastAPI, finished_pipeline: dict[str, Any]
) -> None:
    store = harness.pool().store
    repo = f"https://git.example/{uuid.uuid4().hex[:8]}/mine.git"
    mine = store.create_pipeline({"name": "mine", "repo": repo, "ref": "main"}, []).id
    client = browser(ui_app)
    login(client, make_token(harness, "read", repos=[repo], capabilities=["android"]))
    listing = client.get("/ui/pipelines")
    ids = re.findall(r'data-test="pipeline-row" data-id="([^"]+)"', listing.text)
    assert finished_pipeline["id"] not in ids
    pid, build = finished_pipeline["id"], finished_pipeline["jobs"]["build"]
    assert client.get(f"/ui/pipelines/{pid}").status_code == 404
    assert client.get(f"/ui/jobs/{build['id']}").status_code == 404
    assert client.get(f"/ui/jobs/{build['id']}/log").status_code == 404
    assert client.get(f"/ui/runners/{build['runner_id']}").status_code == 404
    pool = client.get("/ui/")
    assert 'data-capability="linux"' not in pool.text
    # Only runners of its capability (an android runner of another test may be live).
    shown = re.findall(r'data-test="runner-row" data-runner="([^"]+)"', pool.text)
    assert build["runner_id"] not in shown
    assert all(r.capability == "android" for r in harness.pool().runners() if r.runner_id in shown)
    # A pipeline of its repository but with no job on its capabilities stays hidden too.
    assert mine not in ids


def test_read_token_has_no_buttons_and_gets_403_posting(
    harness: Harness, git_server: GitServer, ui_app: FastAPI
) -> None:
    api = TestClient(ui_app)
    submitter = make_token(harness, "submit", "read")
    res = api.post("/v1/jobs", json=job_body(git_server, "true", "deploy"), headers=auth(submitter))
    assert res.status_code == 201, res.text
    job_id = res.json()["id"]

    reader = browser(ui_app)
    csrf = login(reader, make_token(harness, "read"))
    page = reader.get(f"/ui/jobs/{job_id}")
    assert 'data-test="job-state">queued<' in page.text
    assert 'data-test="explain"' in page.text
    assert 'data-test="cancel"' not in page.text and 'data-test="retry"' not in page.text
    denied = reader.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": csrf})
    assert denied.status_code == 403 and "lacks the 'cancel' scope" in html.unescape(denied.text)
    assert harness.pool().get(job_id).state == "queued"

    canceller = browser(ui_app)
    csrf = login(canceller, make_token(harness, "read", "cancel"))
    page = canceller.get(f"/ui/jobs/{job_id}")
    assert 'data-test="cancel"' in page.text
    done = canceller.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": csrf})
    assert done.status_code == 303 and done.headers["location"] == f"/ui/jobs/{job_id}"
    assert harness.pool().get(job_id).state == "cancelled"
    assert 'data-test="job-state">cancelled<' in canceller.get(f"/ui/jobs/{job_id}").text


def test_logout_and_revocation_end_the_session(harness: Harness, ui_app: FastAPI) -> None:
    client = browser(ui_app)
    csrf = login(client, make_token(harness, "read"))
    cookie = client.cookies.get("ci_pool_session")
    assert cookie
    out = client.post("/ui/logout", data={"csrf": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    replay = browser(ui_app)
    replay.cookies.set("ci_pool_session", cookie)
    gone = replay.get("/ui/pipelines?repo=x")
    assert gone.status_code == 303
    assert gone.headers["location"] == "/ui/login?next=/ui/pipelines%3Frepo%3Dx"

    name = f"t-{uuid.uuid4().hex[:10]}"
    plaintext, _ = tokens.create_token(harness.pool().store, name, ["read"])
    client = browser(ui_app)
    login(client, plaintext)
    assert client.get("/ui/").status_code == 200
    tokens.revoke(harness.pool().store, name)
    assert client.get("/ui/").status_code == 303, "a revoked token's session ends at once"
    poll = client.get("/ui/pool/live", headers={"HX-Request": "true"})
    assert poll.status_code == 401 and poll.headers["HX-Redirect"] == "/ui/login"
