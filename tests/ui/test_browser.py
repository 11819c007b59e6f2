"""The web view in headless Chromium, against the real API (uvicorn), a real linux worker and
real jobs: login, the pool and pipelines pages, a running pipeline, a log line arriving live,
cancel from a job's page, what a ``read`` token may not do, and job output that stays inert
(escaped, and a Content-Security-Policy that blocks inline script)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from ci_pool.store import tokens
from tests.conftest import SECRET_VALUE, GitServer, Harness, Worker

pytestmark = pytest.mark.integration

#: Every wait on the page is bounded; a step that takes longer is a failure.
WAIT_S = 60.0

#: ``live`` prints a line, waits for the file ``go`` the test creates in its workspace, then
#: prints hostile HTML and a second line (both must arrive without a reload) and writes a
#: step summary with markdown and a script tag. ``victim`` runs until it is cancelled.
WORKFLOW = """\
name: ui-browser
on: push
jobs:
  live:
    runs-on: linux
    steps:
      - name: talk
        run: |
          echo "first line from the job"
          echo "token ${{ secrets.API_TOKEN }}"
          while [ ! -f "$GITHUB_WORKSPACE/go" ]; do sleep 0.1; done
          echo '<script>window.__pwned=1</script>'
          echo '<img src=x onerror="window.__pwned=1">'
          echo "second line from the job"
          echo '## Report **bold** <script>window.__pwned=1</script>' >> "$GITHUB_STEP_SUMMARY"
          echo '<img src=x onerror="window.__pwned=1">' >> "$GITHUB_STEP_SUMMARY"
  victim:
    runs-on: linux
    steps:
      - name: wait
        run: |
          echo "victim is waiting"
          while [ ! -f "$GITHUB_WORKSPACE/never" ]; do sleep 0.1; done
"""

#: ``long`` prints LONG_ROWS numbered rows, one of them coloured: more than the job page
#: renders at first, so the rest comes window by window as the page scrolls.
LONG_ROWS = 1300
LONG_WORKFLOW = f"""\
name: ui-long
on: push
jobs:
  long:
    runs-on: linux
    steps:
      - name: count
        run: |
          i=1
          while [ $i -le {LONG_ROWS} ]; do echo "row $i"; i=$((i + 1)); done
          printf 'last \\033[31mred\\033[0m row\\n'
"""

HOSTILE_SCRIPT = "<script>window.__pwned=1</script>"
HOSTILE_IMG = '<img src=x onerror="window.__pwned=1">'


@dataclass
class Run:
    base: str
    pipeline_id: str
    live: str
    victim: str
    admin: str
    read: str


def make_token(harness: Harness, *scopes: str) -> str:
    plaintext, _ = tokens.create_token(harness.pool().store, f"ui-{uuid.uuid4().hex[:10]}", scopes)
    return plaintext


@pytest.fixture(scope="module")
def run(
    harness: Harness, git_server: GitServer, linux_worker: Worker, api_url: str
) -> Iterator[Run]:
    """The pipeline the tests look at, with both jobs running, and two tokens."""
    pool = harness.pool()
    pipeline = pool.submit_pipeline(WORKFLOW, "ui.yml", git_server.url(), "main")
    jobs = {j.job_ref or j.key: j.id for j in pool.store.pipeline_jobs(pipeline.id)}
    run = Run(
        api_url,
        pipeline.id,
        jobs["live"],
        jobs["victim"],
        make_token(harness, "admin"),
        make_token(harness, "read"),
    )
    for job_id in (run.live, run.victim):
        harness.wait_state(job_id, "running", timeout=90)
    yield run
    for job_id in (run.live, run.victim):  # whatever a failed test left running
        if pool.get(job_id).state in ("queued", "running", "blocked"):
            pool.cancel(job_id)


@pytest.fixture(scope="module")
def long_job(harness: Harness, git_server: GitServer, linux_worker: Worker) -> str:
    """A finished job whose log is longer than the job page's first window."""
    pool = harness.pool()
    pipeline = pool.submit_pipeline(LONG_WORKFLOW, "long.yml", git_server.url(), "main")
    (job,) = pool.store.pipeline_jobs(pipeline.id)
    assert pool.wait(job.id, timeout=WAIT_S * 2).state == "succeeded"
    return job.id


# -- helpers ----------------------------------------------------------------------------------


def wait_for(
    driver: Any,
    what: str,
    check: Callable[[Any], Any],
    timeout: float = WAIT_S,
    every: float = 0.05,
) -> Any:
    """``check(driver)``'s first truthy value, polled ``every`` s for at most ``timeout``.
    An element that went stale under ``check`` (the page reloaded between finding it and
    reading it) counts as "not yet"."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    try:
        return WebDriverWait(driver, timeout, every, ignored).until(check)
    except TimeoutException:
        pytest.fail(f"{what} (after {timeout:.0f} s on {driver.current_url})", pytrace=False)


def by_test(driver: Any, name: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, f'[data-test="{name}"]'))


def path_of(driver: Any) -> str:
    return urlparse(driver.current_url).path


def title(driver: Any) -> str:
    found = by_test(driver, "title")
    assert found, f"no data-test=title on {driver.current_url}"
    return str(found[0].text)


def login(driver: Any, base: str, token: str) -> None:
    """A fresh session: the login form, the token, the button; lands on the pool page."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/ui/login")
    driver.delete_all_cookies()
    driver.get(f"{base}/ui/login")
    field = driver.find_element(By.NAME, "token")
    assert field.get_attribute("type") == "password"
    field.send_keys(token)
    by_test(driver, "login")[0].click()
    wait_for(driver, "login never reached the pool page", lambda d: path_of(d) == "/ui/")


def form_of(driver: Any, name: str) -> tuple[Any, str]:
    """The button ``data-test=name`` (or the submit button of a form so marked) and the URL
    its form posts to."""
    from selenium.webdriver.common.by import By

    found = by_test(driver, name)
    assert found, f"no data-test={name} on {driver.current_url}"
    el = found[0]
    if el.tag_name.lower() == "form":
        return el.find_element(By.CSS_SELECTOR, "button, input[type=submit]"), str(
            el.get_attribute("action")
        )
    action = driver.execute_script("return arguments[0].closest('form').action", el)
    return el, str(action)


def log_text(driver: Any) -> str:
    found = by_test(driver, "log")
    return str(found[0].text) if found else ""


def pwned(driver: Any) -> Any:
    return driver.execute_script("return window.__pwned")


#: POST ``arguments[0]`` from the page with the page's own session cookie; the csrf field
#: of the page's first form goes along when ``arguments[1]``; answers the HTTP status.
FORGED_POST = """
const [action, withCsrf, done] = arguments;
const csrf = document.querySelector('form input[name="csrf"]');
if (withCsrf && !csrf) { done('no csrf field in any form'); return; }
const body = new URLSearchParams();
if (withCsrf) body.set('csrf', csrf.value);
fetch(action, {method: 'POST', body, credentials: 'same-origin', redirect: 'manual'})
  .then(r => done(r.status), e => done(String(e)));
"""


def workspace(harness: Harness, job_id: str, timeout: float = WAIT_S) -> Path:
    """The running job's checkout on the host (mounted into its container)."""
    deadline = time.monotonic() + timeout
    while not (found := sorted((harness.root / "home" / "workspaces").glob(f"{job_id}-*/src"))):
        assert time.monotonic() < deadline, f"no workspace for {job_id}"
        time.sleep(0.05)
    return found[-1]


# -- tests ------------------------------------------------------------------------------------


def test_login_pool_and_runner_pages(browser: Any, run: Run, linux_worker: Worker) -> None:
    from selenium.webdriver.common.by import By

    # Not logged in: any page sends to the login form, remembering where it was going.
    browser.get(f"{run.base}/ui/login")
    browser.delete_all_cookies()
    browser.get(f"{run.base}/ui/pipelines")
    assert path_of(browser) == "/ui/login"
    assert parse_qs(urlparse(browser.current_url).query).get("next") == ["/ui/pipelines"]

    # A wrong token: the form again with an error (401), no session.
    browser.find_element(By.NAME, "token").send_keys("not-a-token")
    by_test(browser, "login")[0].click()
    wait_for(browser, "a wrong token showed no error", lambda d: by_test(d, "error"))
    assert path_of(browser) == "/ui/login"
    assert not [c for c in browser.get_cookies() if c["name"] == "ci_pool_session"]
    assert httpx.post(f"{run.base}/ui/login", data={"token": "x"}).status_code in (401, 403)

    login(browser, run.base, run.admin)
    cookie = next(c for c in browser.get_cookies() if c["name"] == "ci_pool_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert title(browser)
    rows = by_test(browser, "capability-row")
    assert any("linux" in r.text for r in rows), [r.text for r in rows]
    runners = by_test(browser, "runner-row")
    mine = [r for r in runners if linux_worker.runner_id in r.text]
    assert mine, f"runner {linux_worker.runner_id} not among {[r.text for r in runners]}"
    mine[0].find_element(By.CSS_SELECTOR, "a").click()
    wait_for(browser, "the runner page never opened", lambda d: "/ui/runners/" in path_of(d))
    assert linux_worker.runner_id in title(browser) + browser.page_source
    assert by_test(browser, "drain") or by_test(browser, "undrain"), "admin sees no drain form"


def test_running_pipeline_live_log_and_inert_output(
    browser: Any, run: Run, harness: Harness
) -> None:
    from selenium.webdriver.common.by import By

    login(browser, run.base, run.admin)
    browser.get(f"{run.base}/ui/pipelines")
    rows = [
        r
        for r in by_test(browser, "pipeline-row")
        if run.pipeline_id in r.get_attribute("innerHTML")
    ]
    assert rows, "the running pipeline is not listed"
    rows[0].find_element(By.CSS_SELECTOR, f'a[href*="/ui/pipelines/{run.pipeline_id}"]').click()
    wait_for(
        browser,
        "the pipeline page never opened",
        lambda d: path_of(d) == f"/ui/pipelines/{run.pipeline_id}",
    )
    job_rows = by_test(browser, "job-row")
    assert len(job_rows) == 2, [r.text for r in job_rows]
    states = [r.find_element(By.CSS_SELECTOR, '[data-test="job-state"]').text for r in job_rows]
    assert all("running" in s for s in states), states
    assert by_test(browser, "cancel"), "an admin sees no cancel button on a running pipeline"

    live_row = next(r for r in job_rows if run.live in r.get_attribute("innerHTML"))
    live_row.find_element(By.CSS_SELECTOR, f'a[href*="/ui/jobs/{run.live}"]').click()
    wait_for(browser, "the job page never opened", lambda d: path_of(d) == f"/ui/jobs/{run.live}")
    assert "running" in by_test(browser, "job-state")[0].text
    wait_for(browser, "the first line never showed", lambda d: "first line" in log_text(d))
    assert SECRET_VALUE not in browser.page_source and "token ***" in log_text(browser)
    first = browser.find_element(By.CSS_SELECTOR, '[data-test="log"] .line')
    assert first.get_attribute("id") == "L1"

    # The job goes on only once the file is there; its next lines arrive in this page.
    browser.execute_script("window.__same_page = 'yes'")
    (workspace(harness, run.live) / "go").write_text("")
    wait_for(browser, "the second line never arrived live", lambda d: "second line" in log_text(d))
    assert browser.execute_script("return window.__same_page") == "yes", "the page reloaded"
    text = log_text(browser)
    assert HOSTILE_SCRIPT in text and HOSTILE_IMG in text
    assert pwned(browser) is None
    assert not browser.find_elements(
        By.CSS_SELECTOR, '[data-test="log"] img, [data-test="log"] script'
    )

    # The same log rendered by the server once the job has ended: text, not markup.
    assert harness.pool().wait(run.live, timeout=WAIT_S).state == "succeeded"
    browser.refresh()
    wait_for(browser, "the ended job's log is empty", lambda d: "second line" in log_text(d))
    assert "succeeded" in by_test(browser, "job-state")[0].text
    text = log_text(browser)
    assert HOSTILE_SCRIPT in text and HOSTILE_IMG in text and "token ***" in text
    assert not browser.find_elements(
        By.CSS_SELECTOR, '[data-test="log"] img, [data-test="log"] script'
    )
    assert pwned(browser) is None

    # The step summary on the pipeline page: markdown rendered, the script and handler gone.
    browser.get(f"{run.base}/ui/pipelines/{run.pipeline_id}")
    bold = [e for e in browser.find_elements(By.CSS_SELECTOR, "strong, b") if e.text == "bold"]
    assert bold, "the step summary's markdown is not rendered"
    inline = browser.execute_script(
        "return [...document.querySelectorAll('script:not([src]), [onerror], [onload]')].length"
    )
    assert inline == 0 and pwned(browser) is None


def test_read_token_cannot_cancel_and_admin_cancels(
    browser: Any, run: Run, harness: Harness
) -> None:
    job_page = f"{run.base}/ui/jobs/{run.victim}"
    login(browser, run.base, run.admin)
    browser.get(job_page)
    _, action = form_of(browser, "cancel")
    assert urlparse(action).netloc == urlparse(run.base).netloc

    # A read token: no cancel button anywhere, and the POST a page could forge is refused.
    login(browser, run.base, run.read)
    browser.get(job_page)
    assert "running" in by_test(browser, "job-state")[0].text
    assert not by_test(browser, "cancel")
    browser.get(f"{run.base}/ui/pipelines/{run.pipeline_id}")
    assert not by_test(browser, "cancel") and not by_test(browser, "retry")
    assert browser.execute_async_script(FORGED_POST, action, True) == 403
    assert browser.execute_async_script(FORGED_POST, action, False) == 403
    assert harness.pool().get(run.victim).state == "running"

    # An admin without the form's csrf value is refused too; with the button it works.
    login(browser, run.base, run.admin)
    browser.get(job_page)
    assert browser.execute_async_script(FORGED_POST, action, False) == 403
    assert harness.pool().get(run.victim).state == "running"
    button, _ = form_of(browser, "cancel")
    button.click()

    def cancelled(d: Any) -> bool:
        # The page may be between loads: no state element yet is "not yet", not an error.
        states = by_test(d, "job-state") if path_of(d) == f"/ui/jobs/{run.victim}" else []
        if states and "cancelled" in states[0].text:
            return True
        d.get(job_page)
        return False

    wait_for(browser, "the job page never showed cancelled", cancelled, every=0.5)
    harness.wait_state(run.victim, "cancelled", timeout=WAIT_S)
    assert not by_test(browser, "cancel")


def test_csp_blocks_inline_script(browser: Any, run: Run) -> None:
    res = httpx.get(f"{run.base}/ui/login")
    csp = res.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp

    login(browser, run.base, run.admin)
    browser.get(f"{run.base}/ui/pipelines/{run.pipeline_id}")
    assert "Report" in browser.page_source, "the step summary is not shown"
    # Put the summary's hostile text back in as markup, as a broken template would: an
    # inline script element and an inline handler. The policy must stop both.
    browser.execute_script(
        """
        window.__violations = 0;
        document.addEventListener('securitypolicyviolation', () => window.__violations++);
        const s = document.createElement('script');
        s.textContent = 'window.__pwned = 1';
        document.body.appendChild(s);
        const d = document.createElement('div');
        d.innerHTML = arguments[0];
        document.body.appendChild(d);
        """,
        HOSTILE_IMG,
    )
    wait_for(
        browser,
        "no CSP violation was reported",
        lambda d: d.execute_script("return window.__violations") >= 2,
        timeout=10,
    )
    assert pwned(browser) is None


#: Where the ``:target`` line is drawn, its text as the page shows it, and whether it is what
#: the browser finds at its own middle (drawn there, not covered).
TARGET = """
const t = document.querySelector(':target');
if (!t) return null;
const r = t.getBoundingClientRect();
const y = (Math.max(r.top, 0) + Math.min(r.bottom, innerHeight)) / 2;
const hit = document.elementFromPoint(r.left + r.width / 2, y);
return {id: t.id, top: r.top, bottom: r.bottom, height: innerHeight, text: t.innerText,
        hit: !!hit && t.contains(hit)};
"""

#: The log's line numbers and texts in page order, and whether a "more" link is left.
LINES = """
const log = document.querySelector('[data-test="log"]');
return {ids: [...log.querySelectorAll('.line')].map(l => l.id),
        texts: [...log.querySelectorAll('.line .tx')].map(t => t.textContent),
        more: !!log.querySelector('[data-test="log-more"]')};
"""


def test_a_long_log_keeps_anchors_colours_and_every_line_reachable(
    browser: Any, harness: Harness, api_url: str, long_job: str
) -> None:
    """The log is drawn a chunk at a time (off-screen chunks skipped): a link to a line far
    down the first window still lands on that line, drawn; the steps' outcomes (read apart
    for a long log) arrive; scrolling down brings every line, in order; the page's
    stylesheet and scripts come from the browser's cache on the next visit."""
    from selenium.webdriver.common.by import By

    login(browser, api_url, make_token(harness, "read"))
    page = f"{api_url}/ui/jobs/{long_job}"
    browser.get(f"{page}#L420")
    target = wait_for(browser, "no line is the :target", lambda d: d.execute_script(TARGET))
    assert target["id"] == "L420", target
    assert target["top"] < target["height"] and target["bottom"] > 0 and target["hit"], target
    assert "row" in target["text"], target
    line = browser.find_element(By.ID, "L420")
    assert line.is_displayed() and "row" in line.text

    # The steps' outcomes come from their own fragment, shown when scrolled back up.
    browser.execute_script("window.scrollTo(0, 0)")
    wait_for(
        browser,
        "the step's outcome never showed",
        lambda d: [e.text for e in by_test(d, "step-outcome")] == ["ok"],
    )

    # Scrolling to the end fetches the next window each time, until the log's end.
    def at_the_end(d: Any) -> Any:
        shown = d.execute_script(LINES)
        if not shown["more"]:
            return shown
        d.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        return None

    shown = wait_for(browser, "the log's end never came", at_the_end, every=0.2)
    numbers = [int(i[1:]) for i in shown["ids"]]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) > LONG_ROWS
    rows = [t for t in shown["texts"] if t.startswith("row ")]
    assert rows == [f"row {i}" for i in range(1, LONG_ROWS + 1)]
    assert "last red row" in shown["texts"]
    red = browser.find_element(By.CSS_SELECTOR, '[data-test="log"] .ansi-fg-1')
    browser.execute_script("arguments[0].scrollIntoView()", red)
    assert red.is_displayed() and red.text == "red"

    # The next visit: the stylesheet and scripts are not asked of the server again.
    browser.get(page)
    wait_for(browser, "the page never loaded", lambda d: d.execute_script(LINES)["ids"])
    static = browser.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/ui/static/'))"
        ".map(e => ({name: e.name, transferSize: e.transferSize}))"
    )
    assert {urlparse(e["name"]).path.rsplit("/", 1)[1] for e in static} >= {
        "ui.css",
        "htmx.min.js",
        "log.js",
    }, static
    assert all(e["transferSize"] == 0 for e in static), static
