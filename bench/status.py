#!/usr/bin/env python
"""Status benchmark: `Pool(settings).status()` on a store with 10 000 queued and 100 000
finished jobs, with the store's indexes and without them.

    python bench/status.py [--queued 10000] [--finished 100000] [--runs 20] [--part-runs N]
                           [--noindex-runs N] [--no-postgres] [--quick]
                           [--out bench/results/status.json] [--keep]

Everything runs in temp dirs on 127.0.0.1 (bench/harness.py): its own redis-server (the runner
registry), a SQLite store and, when `initdb`/`pg_ctl` and a psycopg driver are here, a
throwaway PostgreSQL cluster. See bench/README.md for what each number means. Exits non-zero
only when the benchmark itself crashes; a missed target is reported in the JSON, not in the
exit code.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from harness import Bench, add_common_args, latency_stats, logger, pyplot, save_figure
from sqlalchemy import JSON, Engine, create_engine, event, insert, inspect, text
from sqlalchemy.pool import NullPool

from ci_pool.broker.runners import RunnerInfo, RunnerRegistry
from ci_pool.service.pool import Pool
from ci_pool.settings import Settings, load_settings
from ci_pool.store import Job, Store
from ci_pool.store.models import SpecType

TARGET_MS = 1000.0
INDEXES = ("ix_jobs_state_capability", "ix_jobs_finished")
#: Share of jobs per default capability, and the median run time (s) of its jobs.
CAP_MIX = {
    "linux": (0.40, 90.0),
    "android": (0.20, 420.0),
    "flutter-web": (0.20, 180.0),
    "deploy": (0.15, 45.0),
    "iso": (0.05, 1500.0),
}
#: How finished jobs ended.
OUTCOMES = (
    ("succeeded", 0.88),
    ("failed", 0.08),
    ("cancelled", 0.02),
    ("timed_out", 0.01),
    ("error", 0.01),
)
RUNNERS_PER_CAPABILITY = 4
INSERT_CHUNK = 5000


log = logger("status")


def stats_ms(samples_s: Sequence[float]) -> dict[str, Any]:
    """p50/p95 (linear interpolation), max, mean and min in ms, and every run."""
    out = latency_stats(samples_s, pcts=(50, 95), digits=2)
    out["runs_ms"] = [round(v * 1000.0, 2) for v in samples_s]
    return out


# -- data ------------------------------------------------------------------------------


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def generate_jobs(
    rng: random.Random, now: datetime, queued: int, finished: int, capabilities: list[str]
) -> Iterator[dict[str, Any]]:
    """Rows for ``insert(Job.__table__)``: ``queued`` jobs waiting up to 30 min, and
    ``finished`` ones whose ``finished_at`` is spread over the last 2 hours, with run times
    drawn per capability (log-normal) and a few seconds of queueing before each start."""
    names = [c for c in CAP_MIX if c in capabilities]
    weights = [CAP_MIX[c][0] for c in names]
    states = [s for s, _ in OUTCOMES]
    state_weights = [w for _, w in OUTCOMES]

    # What every job of a capability shares: one object per capability, so the loader
    # converts each of these values once (``driver_rows``).
    shared = {
        cap: {
            "pipeline_id": None,
            "capability": cap,
            "queue": cap,
            "ref": "main",
            "steps": [{"name": "build", "run": "make ci", "shell": None, "env": {}}],
            "env": {"CI": "true"},
            "labels": [cap],
            "timeout_s": 3600,
            "secrets": [],
            "artifacts": [],
            "image": None,
            "checkout": {"fetch_depth": 1, "submodules": False, "lfs": False},
            "job_ref": None,
            "key": None,
            "needs": [],
            "if_expr": None,
            "continue_on_error": False,
            "matrix": {},
            "fail_fast": True,
            "max_parallel": None,
            "outputs_spec": {},
            "outputs": {},
            "max_attempts": 3,
            "lease_until": None,
            "cancel_requested": False,
            "evidence": None,
        }
        for cap in names
    }

    def base(cap: str) -> dict[str, Any]:
        repo = rng.randrange(40)
        return {
            **shared[cap],
            "id": _hex(rng, 16),
            "name": f"{cap} build {repo}",
            "repo": f"https://git.example.com/org/app-{repo}.git",
            "commit_sha": _hex(rng, 40),
        }

    for _ in range(queued):
        cap = rng.choices(names, weights)[0]
        at = now - timedelta(seconds=rng.uniform(0, 1800))
        yield {
            **base(cap),
            "state": "queued",
            "attempt": 0,
            "runner_id": None,
            "exit_code": None,
            "reason": None,
            "created_at": at,
            "queued_at": at,
            "started_at": None,
            "finished_at": None,
            "updated_at": at,
        }
    for _ in range(finished):
        cap = rng.choices(names, weights)[0]
        state = rng.choices(states, state_weights)[0]
        end = now - timedelta(seconds=rng.uniform(0, 7200))
        run_s = CAP_MIX[cap][1] * rng.lognormvariate(0, 0.6)
        never_ran = state == "cancelled" and rng.random() < 0.5  # cancelled while queued
        start = None if never_ran else end - timedelta(seconds=run_s)
        queued_at = (start or end) - timedelta(seconds=rng.expovariate(1 / 8))
        yield {
            **base(cap),
            "state": state,
            "attempt": 0 if never_ran else (3 if state == "error" else 1),
            "runner_id": None if never_ran else f"{cap}@runner-{rng.randrange(4)}",
            "exit_code": {"succeeded": 0, "failed": 1}.get(state),
            "reason": None if state in ("succeeded", "failed") else f"{state} (bench)",
            "created_at": queued_at,
            "queued_at": queued_at,
            "started_at": start,
            "finished_at": end,
            "updated_at": end,
        }


def driver_rows(
    engine: Engine, rows: Iterator[dict[str, Any]]
) -> tuple[str, list[str], Iterator[Any]]:
    """``insert(Job.__table__)`` for the first row's columns (plus those with a Python-side
    default), in the dialect's own SQL and parameter style, and the rows as the driver
    takes them. Each value goes through its column's bind processor (the store's own types:
    JSON dumps, pydantic specs, UTC datetimes), as SQLAlchemy's executemany would do; a
    JSON value shared by many rows (the same object: steps, env, labels, checkout) is
    processed once instead of once per row."""
    table = Job.__table__
    dialect = engine.dialect
    first = next(rows)
    extra: dict[str, Any] = {}
    for col in table.columns:
        if col.name not in first and col.default is not None:
            arg = col.default.arg  # type: ignore[attr-defined]
            extra[col.name] = arg(None) if col.default.is_callable else arg
    names = [c.name for c in table.columns if c.name in first or c.name in extra]
    compiled = insert(table).compile(dialect=dialect, column_keys=names)
    procs = [table.columns[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names]
    memo: dict[int, tuple[Any, Any]] = {}
    # Per column: 0 passes the value as is, 1 runs its processor, 2 runs it once per
    # distinct value (JSON columns).
    kinds = [
        0 if proc is None else 2 if isinstance(table.columns[n].type, JSON | SpecType) else 1
        for n, proc in zip(names, procs, strict=True)
    ]
    plan = list(zip(names, kinds, procs, strict=True))

    def convert(row: dict[str, Any]) -> Any:
        values: list[Any] = []
        for name, kind, proc in plan:
            value = row[name] if name in row else extra[name]
            if kind == 1 and value is not None:
                value = proc(value)
            elif kind == 2:  # None included: a JSON column may store it as JSON null
                # By identity: the memo holds the value, so its id stays its own.
                hit = memo.get(id(value))
                if hit is None or hit[0] is not value:
                    hit = memo[id(value)] = (value, proc(value))
                value = hit[1]
            values.append(value)
        if compiled.positional:
            return tuple(values)
        return dict(zip(names, values, strict=True))

    def all_rows() -> Iterator[Any]:
        yield convert(first)
        for row in rows:
            yield convert(row)

    return compiled.string, names, all_rows()


def load_store(store: Store, rows: Iterator[dict[str, Any]]) -> float:
    """Bulk insert in one transaction: the rows converted by the columns' own bind
    processors (``driver_rows``), then the driver's ``executemany`` in chunks (SQLite, with
    a page cache as large as the table while it fills), or PostgreSQL's ``COPY``; returns
    seconds taken."""
    t0 = time.perf_counter()
    sql, names, params = driver_rows(store.engine, rows)
    with store.engine.begin() as conn:
        cursor = conn.connection.cursor()
        if store.engine.dialect.name == "postgresql":
            with cursor.copy(f"COPY jobs ({', '.join(names)}) FROM STDIN") as copy:
                for row in params:
                    copy.write_row(list(row.values()) if isinstance(row, dict) else row)
        else:
            # A page cache that holds the whole table and its indexes while they fill
            # (random ids spread the inserts over every page), then the default again.
            cache = cursor.execute("PRAGMA cache_size").fetchone()[0]
            cursor.execute("PRAGMA cache_size=-262144")
            chunk: list[Any] = []
            for row in params:
                chunk.append(row)
                if len(chunk) >= INSERT_CHUNK:
                    cursor.executemany(sql, chunk)
                    chunk = []
            if chunk:
                cursor.executemany(sql, chunk)
            cursor.execute(f"PRAGMA cache_size={int(cache)}")
        cursor.close()
    return time.perf_counter() - t0


# -- backends --------------------------------------------------------------------------


def register_runners(client: redis.Redis, capabilities: list[str]) -> int:
    """Live registrations (an hour's TTL) for a few runners per capability."""
    registry = RunnerRegistry(client, ttl=3600)
    n = 0
    for cap in capabilities:
        for i in range(RUNNERS_PER_CAPABILITY):
            registry.heartbeat(
                RunnerInfo(
                    runner_id=f"{cap}@bench-{i}",
                    capability=cap,
                    queue=cap,
                    host=f"bench-{i}",
                    pid=10_000 + n,
                    concurrency=2,
                    version="bench",
                    started_at=time.time(),
                )
            )
            n += 1
    return n


# -- measurement -----------------------------------------------------------------------


def _engines(store: Store) -> list[Engine]:
    reader = store._read_session.kw["bind"]
    return [store.engine] if reader is store.engine else [store.engine, reader]


def capture_sql(store: Store) -> tuple[list[tuple[str, Any]], Callable[[], None]]:
    """Record every statement the store runs (to EXPLAIN the exact queries afterwards)."""
    seen: list[tuple[str, Any]] = []

    def before(_conn: Any, _cursor: Any, statement: str, params: Any, *_a: Any) -> None:
        seen.append((statement, params))

    engines = _engines(store)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)

    def remove() -> None:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", before)

    return seen, remove


def store_reads(store: Store) -> None:
    """What ``Pool.status`` reads from the store: the pool's counts and the last hour's
    finished jobs."""
    store.job_counts()
    store.finished_since(datetime.now(UTC) - timedelta(hours=1))


def query_plans(store: Store, runs: int) -> list[dict[str, Any]]:
    """The plan of each SELECT on ``jobs`` that the status view's store reads (``job_counts``
    and ``finished_since``) run, and its time on its
    own (``exec_driver_sql`` + ``fetchall``: the database and the driver, no ORM types)."""
    seen, remove = capture_sql(store)
    try:
        store_reads(store)
    finally:
        remove()
    sqlite = store.url.startswith("sqlite")
    plans = []
    # A fresh connection: pysqlite caches prepared statements per connection, and SQLite
    # does not re-prepare a cached EXPLAIN after the schema changed (it would show the
    # dropped indexes still in use).
    engine = create_engine(store.url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            for statement, params in seen:
                if "FROM jobs" not in statement:
                    continue
                prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
                rows = conn.exec_driver_sql(prefix + statement, params).fetchall()
                plan = [str(r[-1]) if sqlite else str(r[0]) for r in rows]
                n = len(conn.exec_driver_sql(statement, params).fetchall())
                took = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    conn.exec_driver_sql(statement, params).fetchall()
                    took.append(time.perf_counter() - t0)
                timing = stats_ms(took)
                del timing["runs_ms"]
                plans.append(
                    {"sql": " ".join(statement.split()), "plan": plan, "rows": n, **timing}
                )
            conn.rollback()
    finally:
        engine.dispose()
    return plans


def time_status(settings: Settings, runs: int, part_runs: int) -> dict[str, Any]:
    """``Pool(settings).status()`` ``runs`` times, each on a fresh Pool (as ``ci-pool
    status`` does: new engine, schema check, new Redis connection); then ``part_runs``
    times the same on one warm Pool, and its two parts on their own."""
    cold: list[float] = []
    rows: list[dict[str, Any]] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        pool = Pool(settings)
        rows = [r.model_dump() for r in pool.status()]
        cold.append(time.perf_counter() - t0)
        pool.store.close()
        pool.redis.close()
    pool = Pool(settings)
    pool.status()
    warm, summary, runners = [], [], []
    for _ in range(part_runs):
        t0 = time.perf_counter()
        pool.status()
        warm.append(time.perf_counter() - t0)
    for _ in range(part_runs):
        t0 = time.perf_counter()
        store_reads(pool.store)
        summary.append(time.perf_counter() - t0)
    for _ in range(part_runs):
        t0 = time.perf_counter()
        pool.runners()
        runners.append(time.perf_counter() - t0)
    pool.store.close()
    pool.redis.close()
    return {
        "cold_pool_status": stats_ms(cold),
        "warm_pool_status": stats_ms(warm),
        "warm_store_pool_summary": stats_ms(summary),
        "warm_runner_registry": stats_ms(runners),
        "status_rows": rows,
    }


def index_names(store: Store) -> list[str]:
    return sorted(ix["name"] for ix in inspect(store.engine).get_indexes("jobs") if ix["name"])


def drop_indexes(store: Store) -> None:
    with store.engine.begin() as conn:
        for name in INDEXES:
            conn.execute(text(f"DROP INDEX {name}"))


def check_rows(rows: list[dict[str, Any]], queued: int, runners: int) -> dict[str, Any]:
    """What status() reported, summed over capabilities, beside what was loaded."""
    return {
        "queued_reported": sum(r["queued"] for r in rows),
        "queued_loaded": queued,
        "finished_1h_reported": sum(r["finished_1h"] for r in rows),
        "workers_reported": sum(r["workers"] or 0 for r in rows),
        "workers_registered": runners,
        "holds": sum(r["queued"] for r in rows) == queued
        and sum(r["workers"] or 0 for r in rows) == runners,
    }


def bench_backend(
    name: str,
    store_url: str,
    settings: Settings,
    args: argparse.Namespace,
    runners: int,
    analyze: bool,
) -> dict[str, Any]:
    store = Store(store_url)
    store.init_schema()
    rng = random.Random(args.seed)
    now = datetime.now(UTC)
    caps = list(settings.capabilities)
    load_s = load_store(store, generate_jobs(rng, now, args.queued, args.finished, caps))
    if analyze:
        with store.engine.begin() as conn:
            conn.execute(text("ANALYZE jobs"))
    log(f"{name}: loaded {args.queued + args.finished} jobs in {load_s:.1f}s")
    out: dict[str, Any] = {"store": name, "load_s": round(load_s, 2), "analyzed": analyze}
    for label in ("with_indexes", "without_indexes"):
        if label == "without_indexes":
            drop_indexes(store)
        before = index_names(store)
        # The targets apply to the indexed store's cold series; without the indexes every
        # series is a comparison (no target), run --noindex-runs times.
        indexed = label == "with_indexes"
        part_runs = args.part_runs if indexed else args.noindex_runs
        plans = query_plans(store, part_runs)
        timing = time_status(settings, args.runs if indexed else part_runs, part_runs)
        after = index_names(store)
        timing["check"] = check_rows(timing.pop("status_rows"), args.queued, runners)
        out[label] = {"indexes": before, "indexes_after_runs": after, **timing, "plans": plans}
        c = timing["cold_pool_status"]
        log(
            f"{name} {label}: Pool(settings).status() p50 {c['p50_ms']} ms, "
            f"p95 {c['p95_ms']} ms, max {c['max_ms']} ms"
        )
    store.close()
    return out


# -- report ----------------------------------------------------------------------------


QUERY_NAMES = ("active jobs\nby state", "oldest\nqueued", "finished in\nthe last hour")


def plot(path: Path, results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    runs = args.runs
    plt = pyplot()
    colors = {"with_indexes": "tab:green", "without_indexes": "tab:red"}
    labels, p50, p95, mx, bar_colors = [], [], [], [], []
    for res in results:
        for label, color in colors.items():
            s = res[label]["cold_pool_status"]
            labels.append(f"{res['store']}\n{label.replace('_', ' ')}")
            p50.append(s["p50_ms"])
            p95.append(s["p95_ms"])
            mx.append(s["max_ms"])
            bar_colors.append(color)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 1.4]})
    x = list(range(len(labels)))
    bars = ax.bar(x, p50, color=bar_colors, width=0.6, label="p50")
    ax.errorbar(
        x,
        p50,
        yerr=[[0.0] * len(p50), [hi - lo for hi, lo in zip(p95, p50, strict=True)]],
        fmt="none",
        ecolor="black",
        capsize=4,
        label="p95",
    )
    ax.scatter(x, mx, marker="_", s=300, color="black", label="max", zorder=3)
    for rect, v in zip(bars, p50, strict=True):
        ax.annotate(
            f"{v:.0f}",
            (rect.get_x() + rect.get_width() / 2, v / 2),
            ha="center",
            va="center",
            color="white",
            fontsize=9,
        )
    ax.axhline(TARGET_MS, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("ms per Pool(settings).status()")
    ax.set_ylim(0, max(max(mx), TARGET_MS) * 1.15)
    ax.set_title(
        f"Pool(settings).status(), {runs} runs with the indexes, {args.noindex_runs} without"
        " (dotted: 1 s target)",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left")

    groups = [(res["store"], i, name) for res in results for i, name in enumerate(QUERY_NAMES)]
    gx = list(range(len(groups)))
    width = 0.38
    for k, (label, color) in enumerate(colors.items()):
        vals = [
            res[label]["plans"][i]["p50_ms"] if i < len(res[label]["plans"]) else 0.0
            for res in results
            for i in range(len(QUERY_NAMES))
        ]
        xs = [g + (k - 0.5) * width for g in gx]
        ax2.bar(xs, vals, width, color=color, label=label.replace("_", " "))
        for xi, v in zip(xs, vals, strict=True):
            ax2.annotate(f"{v:.1f}", (xi, v), ha="center", va="bottom", fontsize=7)
    ax2.set_yscale("log")
    ax2.set_xticks(gx, [f"{st}\n{name}" for st, _i, name in groups], fontsize=7)
    ax2.set_ylabel("ms, p50 (log scale)")
    ax2.set_title("each store query of status on its own (database + driver)", fontsize=10)
    ax2.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        f"ci-pool status: {args.queued} queued + {args.finished} finished jobs (about "
        f"{args.finished // 2} in the last hour)",
        fontsize=11,
    )
    save_figure(fig, path, dpi=90)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--queued", type=int, default=10_000, help="queued jobs (default 10000)")
    ap.add_argument("--finished", type=int, default=100_000, help="finished jobs (default 100000)")
    ap.add_argument("--runs", type=int, default=20, help="cold status() calls on the indexed store")
    ap.add_argument(
        "--part-runs",
        type=int,
        default=None,
        help="runs of the warm series and of each query on its own (default: --runs)",
    )
    ap.add_argument(
        "--noindex-runs",
        type=int,
        default=None,
        help="runs of every series on the stores without the indexes (default: --part-runs)",
    )
    ap.add_argument("--seed", type=int, default=1, help="seed of the generated jobs")
    ap.add_argument("--no-postgres", action="store_true", help="SQLite only")
    add_common_args(ap, "status")
    args = ap.parse_args(argv)
    if args.quick:
        args.queued, args.finished, args.runs = 500, 5000, 3
    if args.part_runs is None or args.quick:
        args.part_runs = args.runs
    if args.noindex_runs is None or args.quick:
        args.noindex_runs = args.part_runs
    if args.runs < 2 or args.part_runs < 2 or args.noindex_runs < 2:
        ap.error("--runs, --part-runs and --noindex-runs must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with Bench("status", args) as bench:
        server = bench.redis()
        config = bench.config()

        def settings_for(url: str) -> Settings:
            return load_settings(
                config, broker_url=server.url, home=bench.tmp / "home", store_url=url
            )

        caps = list(settings_for("").capabilities)
        runners = register_runners(redis.Redis.from_url(server.url), caps)
        log(f"redis {server.url}: {runners} runners registered; capabilities {caps}")
        backends = [("sqlite", f"sqlite:///{bench.tmp / 'status.db'}", False)]
        pg_note = "skipped (--no-postgres)"
        if not args.no_postgres:
            t0 = time.monotonic()
            pg, why = bench.postgres()
            if pg is None:
                pg_note = f"skipped: {why}"
                log(f"PostgreSQL {pg_note}")
            else:
                pg_note = f"{pg.version}, started in {time.monotonic() - t0:.1f}s"
                log(f"PostgreSQL on 127.0.0.1:{pg.port} ({pg_note})")
                backends.append(("postgresql", pg.url, True))
        results = [
            bench_backend(name, url, settings_for(url), args, runners, analyze)
            for name, url, analyze in backends
        ]
        report = build_report(args, results, runners, pg_note)
        bench.write(report, lambda png: plot(png, results, args))
    return 0


def build_report(
    args: argparse.Namespace, results: list[dict[str, Any]], runners: int, pg_note: str
) -> dict[str, Any]:
    return {
        "parameters": {
            "queued": args.queued,
            "finished": args.finished,
            "finished_window_h": 2,
            "status_window_h": 1,
            "runs": args.runs,
            "part_runs": args.part_runs,
            "noindex_runs": args.noindex_runs,
            "seed": args.seed,
            "capability_mix": {k: {"share": s, "median_run_s": m} for k, (s, m) in CAP_MIX.items()},
            "outcomes": dict(OUTCOMES),
            "runners_registered": runners,
            "broker": "embedded redis-server on 127.0.0.1",
            "postgresql": pg_note,
            "dropped_indexes": list(INDEXES),
        },
        "headline": [
            f"{r['store']} {label.replace('_', ' ')}: Pool(settings).status() p50 "
            f"{r[label]['cold_pool_status']['p50_ms']} ms, p95 "
            f"{r[label]['cold_pool_status']['p95_ms']} ms; counts match the load: "
            f"{r[label]['check']['holds']}"
            for r in results
            for label in ("with_indexes", "without_indexes")
        ],
        "results": results,
        "targets": {
            f"{r['store']}_p95_below_1s": {
                "series": "with_indexes.cold_pool_status",
                "p95_ms": r["with_indexes"]["cold_pool_status"]["p95_ms"],
                "target_ms": TARGET_MS,
                "holds": r["with_indexes"]["cold_pool_status"]["p95_ms"] < TARGET_MS,
            }
            for r in results
        },
    }


if __name__ == "__main__":
    sys.exit(main())
