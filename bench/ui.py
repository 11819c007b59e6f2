#!/usr/bin/env python
"""Web view benchmark: the pipelines list (filters and a cursor page) on a store with
100 000 jobs in 20 000 pipelines, and a job page whose log is 16 MiB.

    python bench/ui.py [--jobs 100000] [--log-mib 16] [--runs 20] [--quick]
                       [--out bench/results/ui.json] [--keep]

Pages are requested through the real app (FastAPI, the session cookie, the templates) in
process, on a SQLite store in a temp dir with its own redis-server for the sessions.
Targets: pipelines list < 100 ms and a 16 MiB job's first screen < 300 ms (p95).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from harness import Bench, add_common_args, latency_stats, logger, pyplot, save_figure
from sqlalchemy import insert
from status import generate_jobs

from ci_pool.api.app import create_app
from ci_pool.settings import load_settings
from ci_pool.store import Store
from ci_pool.store.models import Job, Pipeline
from ci_pool.store.tokens import create_token

PIPELINES_TARGET_MS = 100.0
JOB_PAGE_TARGET_MS = 300.0
JOBS_PER_PIPELINE = 5
#: The size of a stored log chunk (what a runner flushes at once).
CHUNK_BYTES = 64 * 1024

log = logger("ui")


def fill(store: Store, jobs: int, seed: int) -> tuple[str, str]:
    """``jobs`` finished jobs in pipelines of five; one pipeline's id and repository."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    rows = list(generate_jobs(rng, now, 0, jobs, ["linux", "android", "deploy", "iso"]))
    pipelines = []
    for start in range(0, len(rows), JOBS_PER_PIPELINE):
        group = rows[start : start + JOBS_PER_PIPELINE]
        pid = f"{rng.getrandbits(64):016x}"
        first = group[0]
        created = min(r["queued_at"] for r in group)
        failed = any(r["state"] != "succeeded" for r in group)
        for i, r in enumerate(group):
            r.update(pipeline_id=pid, repo=first["repo"], key=f"job{i}", created_at=created)
        pipelines.append(
            {
                "id": pid,
                "name": "ci",
                "file": ".github/workflows/ci.yml",
                "repo": first["repo"],
                "ref": rng.choice(["main", "main", "main", "release", "dev"]),
                "commit_sha": first["commit_sha"],
                "event": "push",
                "env": {},
                "state": "failed" if failed else "succeeded",
                "created_at": created,
                "finished_at": max(r["finished_at"] for r in group),
            }
        )
    with store.session() as s:
        for start in range(0, len(pipelines), 5000):
            s.execute(insert(Pipeline.__table__), pipelines[start : start + 5000])
        for start in range(0, len(rows), 5000):
            s.execute(insert(Job.__table__), rows[start : start + 5000])
    return str(pipelines[0]["id"]), str(pipelines[0]["repo"])


def big_log(store: Store, job_id: str, mib: int) -> int:
    """A log of ``mib`` MiB in runner-sized chunks, with groups and colours; its lines."""
    line_no = 0
    written = 0
    seq = 0
    while written < mib * 1024 * 1024:
        lines = []
        size = 0
        while size < CHUNK_BYTES:
            line_no += 1
            if line_no % 500 == 1:
                text = f"##[group]section {line_no // 500}"
            elif line_no % 500 == 0:
                text = "##[endgroup]"
            else:
                text = (
                    f"\x1b[32m[{line_no:07d}]\x1b[0m compiling module_{line_no % 977}.c -O2 -Wall"
                )
            lines.append(text + "\n")
            size += len(text) + 1
        store.append_log(job_id, 1, seq, "".join(lines))
        written += size
        seq += 1
    return line_no


def timed(client: TestClient, url: str, runs: int) -> tuple[dict[str, Any], str]:
    client.get(url)  # warm: templates compiled, connections open
    samples = []
    body = ""
    for _ in range(runs):
        t0 = time.perf_counter()
        res = client.get(url)
        samples.append(time.perf_counter() - t0)
        assert res.status_code == 200, (url, res.status_code, res.text[:500])
        body = res.text
    return latency_stats(samples, pcts=(50, 95), digits=2), body


def login(client: TestClient, token: str) -> None:
    form = client.get("/ui/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf
    res = client.post("/ui/login", data={"token": token, "csrf": csrf.group(1)})
    assert res.status_code == 303, res.text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000, help="finished jobs (default 100000)")
    ap.add_argument("--log-mib", type=int, default=16, help="MiB of the big log (default 16)")
    ap.add_argument("--runs", type=int, default=20, help="timed requests per page")
    ap.add_argument("--seed", type=int, default=1)
    add_common_args(ap, "ui")
    args = ap.parse_args(argv)
    if args.quick:
        args.jobs, args.log_mib, args.runs = 5000, 2, 3
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with Bench("ui", args) as bench:
        server = bench.redis()
        url = f"sqlite:///{bench.tmp / 'ui.db'}"
        settings = load_settings(
            bench.config(), broker_url=server.url, home=bench.tmp / "home", store_url=url
        )
        store = Store(url)
        store.init_schema()
        t0 = time.monotonic()
        pid, repo = fill(store, args.jobs, args.seed)
        log(f"{args.jobs} jobs written in {time.monotonic() - t0:.1f}s")
        job_id = store.pipeline_jobs(pid)[0].id
        lines = big_log(store, job_id, args.log_mib)
        log(f"a {args.log_mib} MiB log of {lines} lines written")
        token, _ = create_token(store, "bench", ["read"])
        client = TestClient(
            create_app(settings), base_url="http://127.0.0.1", follow_redirects=False
        )
        login(client, token)

        first, body = timed(client, "/ui/pipelines", args.runs)
        cursor = re.search(r'data-test="next" href="([^"]+)"', body)
        assert cursor, "a full first page links the next"
        pages: dict[str, dict[str, Any]] = {"pipelines": first}
        for name, page_url in (
            ("pipelines_next_page", cursor.group(1).replace("&amp;", "&")),
            ("pipelines_repo", f"/ui/pipelines?repo={repo}"),
            ("pipelines_state_ref", "/ui/pipelines?state=failed&ref=release"),
            ("pipelines_capability_iso", "/ui/pipelines?capability=iso"),
            ("pipeline_page", f"/ui/pipelines/{pid}"),
        ):
            pages[name], _ = timed(client, page_url, args.runs)
        pages["job_page_big_log"], body = timed(client, f"/ui/jobs/{job_id}", args.runs)
        shown = body.count('class="line')
        deep = max(1, lines - 2000)
        pages["log_page_deep"], _ = timed(client, f"/ui/jobs/{job_id}/log?from={deep}", args.runs)
        for name, stats in pages.items():
            log(f"{name}: p50 {stats['p50_ms']} ms, p95 {stats['p95_ms']} ms")
        list_p95 = max(v["p95_ms"] for k, v in pages.items() if k.startswith("pipelines"))

        def plot(png: Any) -> None:
            plt = pyplot()
            fig, ax = plt.subplots(figsize=(8, 4))
            names = list(pages)
            ax.barh(names, [pages[n]["p95_ms"] for n in names], color="#4c72b0", label="p95")
            ax.barh(names, [pages[n]["p50_ms"] for n in names], color="#55a868", label="p50")
            ax.axvline(PIPELINES_TARGET_MS, color="#c44e52", linestyle="--", label="100 ms")
            ax.axvline(JOB_PAGE_TARGET_MS, color="#8172b2", linestyle=":", label="300 ms")
            ax.set_xlabel("ms per request (in process)")
            ax.set_title(f"web view: {args.jobs} jobs, a {args.log_mib} MiB log")
            ax.legend()
            save_figure(fig, png)

        bench.write(
            {
                "params": {
                    "jobs": args.jobs,
                    "pipelines": args.jobs // JOBS_PER_PIPELINE,
                    "log_mib": args.log_mib,
                    "log_lines": lines,
                    "runs": args.runs,
                    "store": "sqlite",
                },
                "headline": [
                    f"pipelines list (any filter, next page) p95 {list_p95} ms at {args.jobs} jobs",
                    f"job page with a {args.log_mib} MiB log ({lines} lines): first screen "
                    f"of {shown} lines p95 {pages['job_page_big_log']['p95_ms']} ms",
                ],
                "pages": pages,
                "targets": {
                    "pipelines_list_below_100ms": {
                        "p95_ms": list_p95,
                        "target_ms": PIPELINES_TARGET_MS,
                        "holds": list_p95 < PIPELINES_TARGET_MS,
                    },
                    "big_log_first_screen_below_300ms": {
                        "p95_ms": pages["job_page_big_log"]["p95_ms"],
                        "target_ms": JOB_PAGE_TARGET_MS,
                        "holds": pages["job_page_big_log"]["p95_ms"] < JOB_PAGE_TARGET_MS,
                    },
                },
            },
            plot,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
