#!/usr/bin/env python
"""API benchmark: what the HTTP front door costs over the local store and broker.

    python bench/api.py [--jobs 300] [--list-calls N] [--quick] [--out bench/results/api.json]

Everything runs in a temp dir on 127.0.0.1 (bench/harness.py): its own redis-server, a git
daemon serving a one-file repo, a SQLite store, and a real uvicorn serving the API in this
process. No worker listens, so submitted jobs stay queued. Each series runs the same number
of calls, one at a time, from one client; the local series are the baseline (the same work
without HTTP). Jobs name a full commit id, so no ``git ls-remote`` runs in either. Exits
non-zero only when the benchmark itself crashes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from harness import Bench, add_common_args, latency_stats, pyplot, save_figure

from ci_pool.api.server import make_server, running
from ci_pool.core.specs import parse_job_spec
from ci_pool.embedded import free_port
from ci_pool.service.job_views import as_json, job_view
from ci_pool.service.pool import Pool
from ci_pool.settings import load_settings
from ci_pool.store import tokens


def timed(n: int, call: Callable[[int], Any]) -> list[float]:
    """Seconds of each of ``n`` calls, one after the other."""
    out = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - start)
    return out


def stats(samples_s: list[float]) -> dict[str, Any]:
    out = latency_stats(samples_s, extremes=("max", "mean"))
    out["calls_per_s"] = round(1000 / out["mean_ms"], 1)
    return out


def run(bench: Bench) -> dict[str, list[float]]:
    jobs = bench.args.jobs
    redis_server = bench.redis()
    repo = bench.git_repo({"README.md": "bench\n"}, name="app.git")
    settings = load_settings(
        None,
        home=bench.tmp / "home",
        broker_url=redis_server.url,
        capabilities={"bench": {"mode": "host", "queue": "bench"}},
    )
    pool = Pool(settings)
    token, _ = tokens.create_token(pool.store, "bench", ["admin"])
    port = free_port()
    server = make_server(settings, "127.0.0.1", port, log_level="warning")
    body = {"repo": repo.url, "ref": repo.sha, "capability": "bench"}
    series: dict[str, list[float]] = {}
    with (
        running(server),
        httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ) as client,
    ):

        def local_submit(i: int) -> None:
            spec = parse_job_spec(
                {**body, "steps": [{"run": f"echo {i}"}]}, allow_local_repos=False
            )
            pool.submit(spec)

        def api_submit(i: int) -> None:
            res = client.post("/v1/jobs", json={**body, "steps": [{"run": f"echo {i}"}]})
            res.raise_for_status()

        def api_submit_keyed(i: int) -> None:
            res = client.post(
                "/v1/jobs",
                json={**body, "steps": [{"run": f"echo k{i}"}]},
                headers={"Idempotency-Key": f"bench-{i}"},
            )
            res.raise_for_status()

        bench.log(f"warm-up, then {jobs} calls per series")
        timed(10, local_submit)
        timed(10, api_submit)
        series["local_submit"] = timed(jobs, local_submit)
        series["api_submit"] = timed(jobs, api_submit)
        series["api_submit_idempotency_key"] = timed(jobs, api_submit_keyed)
        ids = [j.id for j in pool.store.list_jobs(limit=jobs)]
        series["local_show"] = timed(jobs, lambda i: as_json(job_view(pool.get(ids[i]), pool)))
        series["api_show"] = timed(
            jobs, lambda i: client.get(f"/v1/jobs/{ids[i]}").raise_for_status()
        )
        series["api_list_page_100"] = timed(
            bench.args.list_calls,
            lambda i: client.get("/v1/jobs", params={"limit": 100}).raise_for_status(),
        )
    return series


def build_report(args: argparse.Namespace, series: dict[str, list[float]]) -> dict[str, Any]:
    result = {name: stats(samples) for name, samples in series.items()}
    for kind in ("submit", "show"):
        local, api = result[f"local_{kind}"]["p50_ms"], result[f"api_{kind}"]["p50_ms"]
        result[f"api_{kind}"]["over_local_p50_ms"] = round(api - local, 3)
    return {
        "parameters": {
            "calls_per_series": args.jobs,
            "calls_api_list_page_100": args.list_calls,
            "store": "SQLite (WAL) in a temp dir",
            "server": "uvicorn on 127.0.0.1, in the benchmark's process",
            "client": "one httpx.Client (keep-alive), sequential calls",
        },
        "headline": [
            f"{name}: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms"
            + (
                f" (+{row['over_local_p50_ms']} ms over local)"
                if "over_local_p50_ms" in row
                else ""
            )
            for name, row in result.items()
        ],
        "series": result,
        "raw_ms": {k: [round(v * 1000, 3) for v in samples] for k, samples in series.items()},
    }


def plot(path: Path, raw: dict[str, list[float]]) -> None:
    plt = pyplot()
    names = list(raw)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.boxplot([raw[n] for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), [n.replace("_", "\n", 1) for n in names], fontsize=8)
    ax.set_ylabel("ms per call (one client, sequential)")
    ax.set_title("HTTP API vs the same work in process (SQLite store, loopback)")
    save_figure(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--jobs", type=int, default=300, help="calls per series (default 300)")
    ap.add_argument(
        "--list-calls",
        type=int,
        default=None,
        help="calls of the list series, on the same store (default: --jobs)",
    )
    add_common_args(ap, "api")
    args = ap.parse_args(argv)
    if args.quick:
        args.jobs = min(args.jobs, 30)
    if args.list_calls is None or args.quick:
        args.list_calls = args.jobs
    if args.jobs < 1 or args.list_calls < 1:
        ap.error("--jobs and --list-calls must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with Bench("api", args) as bench:
        report = build_report(args, run(bench))
        bench.write(report, lambda png: plot(png, report["raw_ms"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
