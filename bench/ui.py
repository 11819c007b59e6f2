#!/usr/bin/env python
"""Web view benchmark: the pipelines list over a store of 100k jobs, and the first screen of
a job page whose log is 16 MiB, in the server and in headless Chromium.

    python bench/ui.py [--jobs 100000] [--calls 200] [--loads 15] [--log-mib 16] [--quick]

Everything runs in a temp dir on 127.0.0.1 (bench/harness.py): its own redis-server, a git
daemon serving a one-file repo, a SQLite store and a real uvicorn serving the API and the web
view in this process. One real pipeline of five jobs is submitted, then its rows are copied
with bulk inserts until the store holds ``--jobs`` jobs (a pipeline per five jobs, over 20
repositories and two capabilities, most finished); one job gets a ``--log-mib`` log in 64 KiB
chunks, as a worker writes them. No worker runs. Series, one call at a time from one client
with a logged-in session cookie:

- ``pipelines``: ``GET /ui/pipelines`` (first page), and filtered by repository, by state and
  by capability, and the second page through the ``next`` cursor: time to the last byte;
  also ``pipeline_page`` (one pipeline's page) and ``log_window_deep`` (the big log's window
  2000 lines before its end, as scrolling down fetches it).
- ``api_jobs_50``: the baseline, ``GET /v1/jobs?limit=50`` on the same store (JSON API).
- ``job_log``: ``GET /ui/jobs/{id}`` of the 16 MiB log job: time to the response headers, to
  the first body chunk, to the first log line (``id="L1"``) and to the last byte.
- ``chromium``: the same page loaded in headless Chromium (Debian's chromium-driver): from
  the navigation's start to the first log line in the DOM and painted (two animation frames
  later), and the first contentful paint. Skipped with the reason when Chromium is missing.

Targets (issue 17): pipelines list p95 < 100 ms; job page first screen p95 < 300 ms (server
first line, and visible in Chromium). Exits non-zero only when the benchmark itself crashes.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import browser
import httpx
from harness import MIB, Bench, add_common_args, latency_stats, pyplot, save_figure

from ci_pool.api.server import make_server, running
from ci_pool.embedded import free_port
from ci_pool.service.pool import Pool
from ci_pool.settings import load_settings
from ci_pool.store import tokens

PIPELINE_TARGET_MS = 100.0
FIRST_SCREEN_TARGET_MS = 300.0
JOBS_PER_PIPELINE = 5
REPOS = 20
CHUNK_BYTES = 64 * 1024

WORKFLOW = """\
name: bench
on: push
jobs:
  build:
    runs-on: bench
    steps: [{run: make}]
  lint:
    runs-on: bench
    steps: [{run: make lint}]
  test:
    runs-on: bench
    needs: build
    steps: [{run: make test}]
  package:
    runs-on: other
    needs: [test, lint]
    steps: [{run: make dist}]
  publish:
    runs-on: other
    needs: package
    steps: [{run: make publish}]
"""

#: Runs in Chromium before any of the page's own code (CDP, outside the page's CSP): notes
#: when ``#L1`` enters the DOM and when the frame after next has been drawn.
FIRST_LINE_PROBE = """
(() => {
  window.__firstLine = null;
  const seen = () => {
    if (!document.getElementById('L1')) return false;
    const inDom = performance.now();
    requestAnimationFrame(() => requestAnimationFrame(() => {
      window.__firstLine = {in_dom: inDom, painted: performance.now()};
    }));
    return true;
  };
  const obs = new MutationObserver(() => { if (seen()) obs.disconnect(); });
  obs.observe(document, {childList: true, subtree: true});
})();
"""

FIRST_LINE_READ = """
const paint = performance.getEntriesByType('paint')
  .find(e => e.name === 'first-contentful-paint');
const nav = performance.getEntriesByType('navigation')[0];
return window.__firstLine && {
  ...window.__firstLine,
  fcp: paint ? paint.startTime : null,
  response_start: nav ? nav.responseStart : null,
  dom_content_loaded: nav ? nav.domContentLoadedEventEnd : null,
  lines_in_dom: document.querySelectorAll('[data-test="log"] .line').length,
};
"""


def stamp(at: datetime) -> str:
    """A datetime as SQLAlchemy writes it to SQLite (UTC, no zone)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def timed(n: int, call: Callable[[int], Any]) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - start)
    return out


# -- the store --------------------------------------------------------------------------------


def rows_of(conn: sqlite3.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn.row_factory = sqlite3.Row
    return [dict(r) for r in conn.execute(sql, args)]


def insert_many(conn: sqlite3.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    cols = list(rows[0])
    conn.executemany(
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [tuple(r[c] for c in cols) for r in rows],
    )


def fill_store(db: Path, pipeline_id: str, jobs: int, repo_url: str) -> dict[str, Any]:
    """Copy the submitted pipeline (and its jobs) until the store holds ``jobs`` jobs:
    pipelines one minute apart back from now, the newest ten running, every 7th failed.
    One transaction, with a page cache as large as the tables while they fill (random ids
    spread the inserts over every index page); each distinct timestamp formatted once."""
    conn = sqlite3.connect(db)
    template = rows_of(conn, "SELECT * FROM pipelines WHERE id = ?", pipeline_id)[0]
    template_jobs = rows_of(conn, "SELECT * FROM jobs WHERE pipeline_id = ?", pipeline_id)
    pipelines = max(1, jobs // len(template_jobs))
    now = datetime.now(UTC)
    start = time.perf_counter()
    batch_p: list[dict[str, Any]] = []
    batch_j: list[dict[str, Any]] = []
    conn.execute("PRAGMA cache_size=-262144")  # this connection's own, closed below
    last_job = len(template_jobs) - 1
    with conn:
        for i in range(1, pipelines):  # the submitted one is the newest
            created = now - timedelta(minutes=i)
            running = i < 10
            failed = not running and i % 7 == 0
            pid = uuid.uuid4().hex[:16]
            state = "running" if running else ("failed" if failed else "succeeded")
            at = stamp(created)
            repo = f"{repo_url.rsplit('/', 1)[0]}/repo{i % REPOS}.git"
            ref = "main" if i % 3 else f"refs/heads/feature-{i % 50}"
            batch_p.append(
                {
                    **template,
                    "id": pid,
                    "repo": repo,
                    "ref": ref,
                    "state": state,
                    "created_at": at,
                    "finished_at": None if running else stamp(created + timedelta(seconds=50)),
                }
            )
            for n, job in enumerate(template_jobs):
                job_state = "succeeded"
                if running:
                    job_state = "running" if n == 0 else "blocked"
                elif failed and n == last_job:
                    job_state = "failed"
                began = created + timedelta(seconds=2 + 8 * n)
                began_at = stamp(began)
                batch_j.append(
                    {
                        **job,
                        "id": uuid.uuid4().hex[:16],
                        "pipeline_id": pid,
                        "repo": repo,
                        "ref": ref,
                        "state": job_state,
                        "attempt": 0 if job_state == "blocked" else 1,
                        "runner_id": None if job_state == "blocked" else "bench@host",
                        "exit_code": {"succeeded": 0, "failed": 1}.get(job_state),
                        "created_at": at,
                        "updated_at": began_at,
                        "queued_at": at,
                        "started_at": None if job_state == "blocked" else began_at,
                        "finished_at": stamp(began + timedelta(seconds=7))
                        if job_state in ("succeeded", "failed")
                        else None,
                    }
                )
            if len(batch_j) >= 20_000:
                insert_many(conn, "pipelines", batch_p)
                insert_many(conn, "jobs", batch_j)
                batch_p, batch_j = [], []
        if batch_p:
            insert_many(conn, "pipelines", batch_p)
            insert_many(conn, "jobs", batch_j)
        conn.execute("ANALYZE")
    counts = {
        "pipelines": conn.execute("SELECT count(*) FROM pipelines").fetchone()[0],
        "jobs": conn.execute("SELECT count(*) FROM jobs").fetchone()[0],
        "fill_s": round(time.perf_counter() - start, 2),
    }
    conn.close()
    return counts


def log_lines(mib: int) -> list[str]:
    """About ``mib`` MiB of build output: numbered lines, ANSI colours, a group per 1000."""
    lines, size, n = [], 0, 0
    while size < mib * MIB:
        n += 1
        if n % 1000 == 1:
            line = f"::group::part {n // 1000 + 1}"
        elif n % 1000 == 0:
            line = "::endgroup::"
        else:
            line = (
                f"[{n:07d}] cc -O2 -c src/module_{n % 997:03d}.c -o build/module_{n % 997:03d}.o"
                f" \x1b[32mok\x1b[0m ({n % 89} ms)"
            )
        lines.append(line + "\n")
        size += len(line) + 1
    return lines


def write_log(db: Path, job_id: str, mib: int) -> dict[str, Any]:
    """The job's attempt 1 log in 64 KiB chunks; the job marked succeeded."""
    chunks, buf, size = [], [], 0
    for line in log_lines(mib):
        buf.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            chunks.append("".join(buf))
            buf, size = [], 0
    if buf:
        chunks.append("".join(buf))
    now = datetime.now(UTC)
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO log_chunks (job_id, attempt, seq, data, at) VALUES (?, 1, ?, ?, ?)",
            [(job_id, seq, data, stamp(now)) for seq, data in enumerate(chunks)],
        )
        conn.execute(
            "UPDATE jobs SET state = 'succeeded', attempt = 1, exit_code = 0, started_at = ?, "
            "finished_at = ? WHERE id = ?",
            (stamp(now - timedelta(seconds=60)), stamp(now), job_id),
        )
    conn.close()
    total = sum(len(c.encode()) for c in chunks)
    return {"chunks": len(chunks), "bytes": total, "lines": sum(c.count("\n") for c in chunks)}


# -- the series -------------------------------------------------------------------------------


def session_client(base: str, token: str) -> httpx.Client:
    """An httpx client logged in through the web view's form (its csrf field included)."""
    client = httpx.Client(base_url=base, timeout=120)
    form = client.get("/ui/login")
    form.raise_for_status()
    found = re.search(r'name="csrf"[^>]*value="([^"]*)"|value="([^"]*)"[^>]*name="csrf"', form.text)
    data = {"token": token}
    if found:
        data["csrf"] = found.group(1) or found.group(2)
    res = client.post("/ui/login", data=data)
    if res.status_code != 303 or "ci_pool_session" not in client.cookies:
        raise RuntimeError(f"login failed: {res.status_code} {res.text[:300]}")
    return client


def next_link(html: str) -> str | None:
    found = re.search(r'<a[^>]*data-test="next"[^>]*href="([^"]+)"', html) or re.search(
        r'<a[^>]*href="([^"]+)"[^>]*data-test="next"', html
    )
    return found.group(1).replace("&amp;", "&") if found else None


def job_page_series(client: httpx.Client, url: str, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"headers": [], "first_chunk": [], "first_line": [], "last": []}
    out_bytes = []
    for _ in range(n):
        start = time.perf_counter()
        first_chunk = first_line = None
        head = b""
        size = 0
        with client.stream("GET", url) as res:
            res.raise_for_status()
            out["headers"].append(time.perf_counter() - start)
            for chunk in res.iter_raw():
                size += len(chunk)
                if first_chunk is None:
                    first_chunk = time.perf_counter() - start
                if first_line is None:
                    head += chunk
                    if b'id="L1"' in head:
                        first_line = time.perf_counter() - start
        out["last"].append(time.perf_counter() - start)
        out["first_chunk"].append(first_chunk or out["last"][-1])
        if first_line is None:
            raise RuntimeError(f'{url}: no id="L1" in the page')
        out["first_line"].append(first_line)
        out_bytes.append(size)
    out["bytes"] = [float(b) for b in out_bytes]
    return out


def more_link(html: str) -> str | None:
    found = re.search(r'data-test="log-more"[^>]*href="([^"]+)"', html) or re.search(
        r'href="([^"]+)"[^>]*data-test="log-more"', html
    )
    return found.group(1).replace("&amp;", "&") if found else None


def whole_log(client: httpx.Client, url: str, budget_s: float) -> dict[str, Any]:
    """Follow the job page's "more" link window by window, as the page does while scrolling,
    until the log ends or ``budget_s`` is spent: the seconds of each window."""
    start = time.perf_counter()
    page = client.get(url)
    page.raise_for_status()
    times, lines, link = [], page.text.count('class="line'), more_link(page.text)
    while link and time.perf_counter() - start < budget_s:
        t = time.perf_counter()
        res = client.get(link)
        res.raise_for_status()
        times.append(time.perf_counter() - t)
        lines += res.text.count('class="line')
        link = more_link(res.text)
    return {
        "complete": link is None,
        "windows": len(times),
        "lines": lines,
        "seconds": round(time.perf_counter() - start, 2),
        "budget_s": budget_s,
        "first_windows_ms": [round(x * 1000, 1) for x in times[:5]],
        "last_windows_ms": [round(x * 1000, 1) for x in times[-5:]],
    }


def chromium_series(base: str, token: str, url: str, n: int) -> dict[str, Any]:
    why = browser.missing()
    if why:
        return {"skipped": why}
    samples: dict[str, list[float]] = {"in_dom": [], "painted": [], "fcp": [], "dcl": []}
    lines_seen = []
    with browser.chromium(page_load="eager") as driver:
        browser.login(driver, base, token)
        driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": FIRST_LINE_PROBE}
        )
        for _ in range(n + 1):  # the first load warms the browser's caches of static files
            driver.get("about:blank")
            driver.get(base + url)
            deadline = time.monotonic() + 60
            while not (got := driver.execute_script(FIRST_LINE_READ)):
                if time.monotonic() > deadline:
                    raise RuntimeError("the first log line never showed in Chromium")
                time.sleep(0.02)
            while got.get("dom_content_loaded") in (None, 0) and time.monotonic() < deadline:
                time.sleep(0.02)
                got = driver.execute_script(FIRST_LINE_READ)
            samples["in_dom"].append(got["in_dom"] / 1000)
            samples["painted"].append(got["painted"] / 1000)
            samples["fcp"].append((got["fcp"] or 0) / 1000)
            samples["dcl"].append((got["dom_content_loaded"] or 0) / 1000)
            lines_seen.append(got["lines_in_dom"])
    return {"samples": {k: v[1:] for k, v in samples.items()}, "lines_in_dom": lines_seen[1:]}


def run(bench: Bench) -> dict[str, Any]:
    a = bench.args
    redis_server = bench.redis()
    repo = bench.git_repo({"README.md": "bench\n"}, name="app.git")
    host = {"mode": "host"}
    settings = load_settings(
        None,
        home=bench.tmp / "home",
        broker_url=redis_server.url,
        capabilities={"bench": {**host, "queue": "bench"}, "other": {**host, "queue": "other"}},
    )
    pool = Pool(settings)
    token, _ = tokens.create_token(pool.store, "bench", ["admin"])
    pipeline = pool.submit_pipeline(WORKFLOW, "ci.yml", repo.url, "main", commit=repo.sha)
    db = Path(settings.resolved_store_url.removeprefix("sqlite:///"))
    bench.log(f"filling {db.name} to {a.jobs} jobs")
    store = fill_store(db, pipeline.id, a.jobs, repo.url)
    log_job = pool.store.pipeline_jobs(pipeline.id)[0].id
    store["log"] = write_log(db, log_job, a.log_mib)
    bench.log(f"store: {store}")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = make_server(settings, "127.0.0.1", port, log_level="warning")
    series: dict[str, list[float]] = {}
    #: CPU seconds of this process (server and client threads) per call of a series: less
    #: swayed than wall time by other work on the machine.
    cpu: dict[str, float] = {}
    out: dict[str, Any] = {"store": store}
    with running(server), closing(session_client(base, token)) as client:
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        with api:
            first = client.get("/ui/pipelines")
            first.raise_for_status()
            page2 = next_link(first.text)
            out["pipelines_rows"] = first.text.count('data-test="pipeline-row"')
            pages = {
                "pipelines": "/ui/pipelines",
                "pipelines_repo": f"/ui/pipelines?repo={repo.url.rsplit('/', 1)[0]}/repo3.git",
                "pipelines_state_failed": "/ui/pipelines?state=failed",
                "pipelines_capability_other": "/ui/pipelines?capability=other",
            }
            if page2:
                pages["pipelines_page2"] = page2
            # Not lists: the pipeline page of the big log's pipeline (five jobs), and a
            # window of the big log near its end (what scrolling down asks for).
            pages["pipeline_page"] = f"/ui/pipelines/{pipeline.id}"
            deep = max(1, store["log"]["lines"] - 2000)
            pages["log_window_deep"] = f"/ui/jobs/{log_job}/log?from={deep}"
            bench.log(f"warm-up, then {a.calls} calls per series")
            for url in pages.values():
                timed(3, lambda _i, url=url: client.get(url).raise_for_status())
            timed(3, lambda _i: api.get("/v1/jobs", params={"limit": 50}).raise_for_status())
            for name, url in pages.items():
                cpu0 = time.process_time()
                series[name] = timed(
                    a.calls, lambda _i, url=url: client.get(url).raise_for_status()
                )
                cpu[name] = (time.process_time() - cpu0) / a.calls
            cpu0 = time.process_time()
            series["api_jobs_50"] = timed(
                a.calls, lambda _i: api.get("/v1/jobs", params={"limit": 50}).raise_for_status()
            )
            cpu["api_jobs_50"] = (time.process_time() - cpu0) / a.calls
            bench.log(f"job page of a {a.log_mib} MiB log, {a.loads} loads")
            cpu0 = time.process_time()
            job = job_page_series(client, f"/ui/jobs/{log_job}", a.loads + 1)
            cpu["job_page_last"] = (time.process_time() - cpu0) / (a.loads + 1)
            out["job_page_bytes"] = job.pop("bytes")[1:]
            for name, samples in job.items():
                series[f"job_page_{name}"] = samples[1:]
            bench.log(f"the whole log, window by window (at most {a.whole_log_s:.0f} s)")
            out["whole_log"] = whole_log(client, f"/ui/jobs/{log_job}", a.whole_log_s)
            bench.log(f"whole log: {out['whole_log']}")
        bench.log(f"Chromium, {a.loads} loads")
        out["chromium"] = chromium_series(base, token, f"/ui/jobs/{log_job}", a.loads)
    out["series"] = series
    out["cpu"] = cpu
    return out


# -- the report -------------------------------------------------------------------------------


def build_report(args: argparse.Namespace, measured: dict[str, Any]) -> dict[str, Any]:
    series = {k: latency_stats(v, pcts=(50, 95, 99)) for k, v in measured["series"].items()}
    for name, seconds in measured.get("cpu", {}).items():
        series[name]["cpu_ms_per_call"] = round(seconds * 1000, 2)
    chromium = measured["chromium"]
    if "samples" in chromium:
        for name, samples in chromium["samples"].items():
            series[f"chromium_{name}"] = latency_stats(samples, pcts=(50, 95, 99))

    def target(name: str, goal: float) -> dict[str, Any]:
        row = series.get(name)
        if row is None:
            return {"target_ms": goal, "value": "not measured", "holds": False}
        value = row["p95_ms"]
        return {
            "series": name,
            "target_ms": goal,
            "p95_ms": value,
            "holds": value < goal,
            "over_by_ms": round(max(0.0, value - goal), 3),
        }

    targets = {
        "pipelines_list_p95": target("pipelines", PIPELINE_TARGET_MS),
        "pipelines_list_worst_filter_p95": max(
            (target(n, PIPELINE_TARGET_MS) for n in series if n.startswith("pipelines")),
            key=lambda t: t.get("p95_ms") or 0,
            default=target("pipelines", PIPELINE_TARGET_MS),
        ),
        "job_page_first_line_server_p95": target("job_page_first_line", FIRST_SCREEN_TARGET_MS),
        "job_page_first_line_painted_p95": target("chromium_painted", FIRST_SCREEN_TARGET_MS),
    }
    headline = [
        f"{name}: p50 {row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms"
        + (f", CPU {row['cpu_ms_per_call']:.1f} ms/call" if "cpu_ms_per_call" in row else "")
        for name, row in series.items()
    ]
    headline.append(
        f"store: {measured['store']['jobs']} jobs in {measured['store']['pipelines']} "
        f"pipelines; log {measured['store']['log']['bytes'] / MIB:.1f} MiB "
        f"({measured['store']['log']['lines']} lines)"
    )
    whole = measured.get("whole_log") or {}
    if whole:
        headline.append(
            f"whole log through the page's 'more' links: {whole['lines']} lines in "
            f"{whole['windows']} windows, {whole['seconds']} s"
            + ("" if whole["complete"] else f" (stopped at the {whole['budget_s']:.0f} s budget)")
            + f"; first windows {whole['first_windows_ms']} ms, last {whole['last_windows_ms']} ms"
        )
    if "skipped" in chromium:
        headline.append(f"Chromium skipped: {chromium['skipped']}")
    return {
        "parameters": {
            "jobs": args.jobs,
            "calls_per_series": args.calls,
            "job_page_loads": args.loads,
            "log_mib": args.log_mib,
            "store": "SQLite (WAL) in a temp dir, filled by bulk inserts",
            "server": "uvicorn on 127.0.0.1, in the benchmark's process",
            "client": "one httpx.Client with a web view session cookie, sequential calls; "
            "times to the last byte unless named otherwise",
            "browser": "Debian's chromium, headless, through chromium-driver (Selenium)",
        },
        "store": measured["store"],
        "pipelines_rows_on_first_page": measured.get("pipelines_rows"),
        "job_page_bytes": measured.get("job_page_bytes"),
        "chromium_lines_in_dom_at_end": chromium.get("lines_in_dom"),
        "chromium_skipped": chromium.get("skipped"),
        "whole_log": measured.get("whole_log"),
        "headline": headline,
        "targets": targets,
        "series": series,
        "raw_ms": {
            **{k: [round(v * 1000, 3) for v in s] for k, s in measured["series"].items()},
            **{
                f"chromium_{k}": [round(v * 1000, 3) for v in s]
                for k, s in chromium.get("samples", {}).items()
            },
        },
    }


def plot(path: Path, raw: dict[str, list[float]]) -> None:
    plt = pyplot()
    lists = [n for n in raw if n.startswith(("pipelines", "api_", "pipeline_"))]
    pages = [n for n in raw if n.startswith(("job_page", "chromium", "log_window"))]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, names, goal, label in (
        (axes[0], lists, PIPELINE_TARGET_MS, "pipelines list (100 ms target)"),
        (axes[1], pages, FIRST_SCREEN_TARGET_MS, "16 MiB log job page (300 ms target)"),
    ):
        if not names:
            continue
        ax.boxplot([raw[n] for n in names], showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), [n.replace("_", "\n") for n in names], fontsize=7)
        ax.axhline(goal, color="tab:red", linestyle="--", linewidth=1)
        ax.set_ylabel("ms")
        ax.set_title(label, fontsize=10)
    fig.suptitle("Web view: server time and first screen in Chromium (SQLite store)")
    save_figure(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100_000, help="jobs in the store (100000)")
    ap.add_argument("--calls", type=int, default=200, help="calls per list series (200)")
    ap.add_argument("--loads", type=int, default=15, help="job page loads per series (15)")
    ap.add_argument("--log-mib", type=int, default=16, help="the big log's size (16 MiB)")
    ap.add_argument(
        "--whole-log-s", type=float, default=120.0,
        help="time budget for reading the whole big log window by window (120 s)",
    )  # fmt: skip
    add_common_args(ap, "ui")
    args = ap.parse_args(argv)
    if args.quick:
        args.jobs, args.calls, args.loads = min(args.jobs, 5000), min(args.calls, 20), 3
        args.whole_log_s = min(args.whole_log_s, 20.0)
    if args.jobs < JOBS_PER_PIPELINE or args.calls < 1 or args.loads < 1 or args.log_mib < 1:
        ap.error("--jobs >= 5, --calls, --loads and --log-mib >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with Bench("ui", args) as bench:
        report = build_report(args, run(bench))
        bench.write(report, lambda png: plot(png, report["raw_ms"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
