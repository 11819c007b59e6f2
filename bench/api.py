#!/usr/bin/env python
"""API benchmark: what the HTTP front door costs over the local store and broker.

    python bench/api.py [--jobs 300] [--out bench/results/api.json]

Everything runs in a temp dir on 127.0.0.1: its own redis-server, a git daemon serving a
one-file repo, a SQLite store, and a real uvicorn serving the API in this process. No worker
listens, so submitted jobs stay queued. Each series runs the same number of calls, one at a
time, from one client; the local series are the baseline (the same work without HTTP). Jobs
name a full commit id, so no ``git ls-remote`` runs in either. Exits non-zero only when the
benchmark itself crashes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from dispatch import machine_info  # noqa: E402

from ci_pool import tokens  # noqa: E402
from ci_pool.api.server import make_server, running  # noqa: E402
from ci_pool.embedded import GitDaemon, RedisServer, free_port, make_repo  # noqa: E402
from ci_pool.jobs import parse_job_spec  # noqa: E402
from ci_pool.pool import Pool  # noqa: E402
from ci_pool.settings import load_settings  # noqa: E402
from ci_pool.views import job_dict  # noqa: E402


def log(msg: str) -> None:
    print(f"[api {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def timed(n: int, call: Callable[[int], Any]) -> list[float]:
    """Milliseconds of each of ``n`` calls, one after the other."""
    out = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def stats(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 3)

    return {
        "n": len(ms),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "calls_per_s": round(1000 / statistics.fmean(ms), 1),
    }


def run(jobs: int, root: Path) -> dict[str, Any]:
    redis_server = RedisServer.start(root / "redis")
    (root / "git").mkdir()
    sha = make_repo(root / "git" / "app.git", {"README.md": "bench\n"})
    daemon = GitDaemon.start(root / "git")
    settings = load_settings(
        None,
        home=root / "home",
        broker_url=redis_server.url,
        capabilities={"bench": {"mode": "host", "queue": "bench"}},
    )
    pool = Pool(settings)
    token, _ = tokens.create_token(pool.store, "bench", ["admin"])
    port = free_port()
    server = make_server(settings, "127.0.0.1", port, log_level="warning")
    body = {"repo": daemon.url("app.git"), "ref": sha, "capability": "bench"}
    series: dict[str, list[float]] = {}
    try:
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

            log(f"warm-up, then {jobs} calls per series")
            timed(10, local_submit)
            timed(10, api_submit)
            series["local_submit"] = timed(jobs, local_submit)
            series["api_submit"] = timed(jobs, api_submit)
            series["api_submit_idempotency_key"] = timed(jobs, api_submit_keyed)
            ids = [j.id for j in pool.store.list_jobs(limit=jobs)]
            series["local_show"] = timed(jobs, lambda i: job_dict(pool.get(ids[i]), pool))
            series["api_show"] = timed(
                jobs, lambda i: client.get(f"/v1/jobs/{ids[i]}").raise_for_status()
            )
            series["api_list_page_100"] = timed(
                jobs, lambda i: client.get("/v1/jobs", params={"limit": 100}).raise_for_status()
            )
    finally:
        daemon.stop()
        redis_server.stop()
    result = {name: stats(ms) for name, ms in series.items()}
    for kind in ("submit", "show"):
        local, api = result[f"local_{kind}"]["p50_ms"], result[f"api_{kind}"]["p50_ms"]
        result[f"api_{kind}"]["over_local_p50_ms"] = round(api - local, 3)
    return {"series": result, "raw_ms": {k: [round(v, 3) for v in ms] for k, ms in series.items()}}


def plot(data: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw = data["raw_ms"]
    names = list(raw)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.boxplot([raw[n] for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), [n.replace("_", "\n", 1) for n in names], fontsize=8)
    ax.set_ylabel("ms per call (one client, sequential)")
    ax.set_title("HTTP API vs the same work in process (SQLite store, loopback)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=300, help="calls per series (default 300)")
    ap.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "api.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ci-pool-bench-api-") as tmp:
        data = run(args.jobs, Path(tmp))
    data = {
        "benchmark": "api",
        "machine": machine_info(),
        "parameters": {
            "calls_per_series": args.jobs,
            "store": "SQLite (WAL) in a temp dir",
            "server": "uvicorn on 127.0.0.1, in the benchmark's process",
            "client": "one httpx.Client (keep-alive), sequential calls",
        },
        **data,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    plot(data, args.out.with_suffix(".png"))
    for name, row in data["series"].items():
        extra = (
            f"  (+{row['over_local_p50_ms']} ms over local)" if "over_local_p50_ms" in row else ""
        )
        log(f"{name:<28} p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms{extra}")
    log(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
