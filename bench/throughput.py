#!/usr/bin/env python
"""Throughput with concurrency: no-op host jobs on 2 workers x concurrency 2, with the
store on SQLite and on PostgreSQL, against bare Celery with the same workers and
concurrency in the same run; and where a no-op job's claim->finished time goes (cProfile
of a solo-pool worker).

    python bench/throughput.py [--jobs 400] [--profile-jobs 100] [--quick] [--out ...] [--keep]

Everything runs on loopback in a temp dir (bench/harness.py): its own redis-server, git
daemon, store and worker subprocesses. Each ci-pool job is a real job: fenced claim, a
checkout at a full SHA (the runner's tree cache serves it after the first), one step
`true` in host mode, the log, the outcome. Throughput is jobs / (last finished_at - first
submit); bare Celery's is tasks / (last task start - first send), as in dispatch.py.
"""

from __future__ import annotations

import argparse
import os
import pstats
import resource
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from dispatch import BARE_QUEUE, BARE_RESULTS_KEY, BENCH_DIR, CAPABILITY, CiPoolDriver
from harness import (
    Bench,
    GitRepo,
    Proc,
    add_common_args,
    ci_pool_env,
    clean_env,
    latency_stats,
    logger,
    pyplot,
    save_figure,
    stop_procs,
)

from ci_pool.core.specs import JobState
from ci_pool.service.pool import Pool
from ci_pool.settings import load_settings

WORKERS, CONCURRENCY = 2, 2
TARGET_JOBS_PER_S = 100.0
#: Jobs the profiled worker runs before its profile starts (lazy imports, first-use set-up).
PROFILE_WARMUP = 5
#: Where the next halving of a no-op job's cost is, from the profile below.
HALVE_NEXT = (
    "the step (fork/exec of bash with its ~80 environment variables: about a third of the "
    "job's time in the pool process), the claim's and the outcome's store transactions "
    "(on SQLite already on the DBAPI connection, store/prepared.py: what is left is "
    "SQLite's own commit and the writer lock's wait under load), Celery's own per-message "
    "cost in the main process (as bare Celery's), and the overlay mount and its unmount "
    "with the rmtree of the job's directory"
)

log = logger("throughput")

#: The parts of one job on the runner, as (label, file suffix, function) in the profile.
PARTS = [
    ("job (JobRunner.run)", "worker/job_runner.py", "run"),
    ("claim (fenced UPDATE)", "store/lifecycle.py", "claim"),
    ("checkout (tree cache)", "worker/workspace.py", "check_out"),
    ("expression context", "worker/contexts.py", "expression_context"),
    ("steps (exec of `true`)", "worker/steps.py", "run_steps"),
    ("cleanup (container/process, overlay unmount, rmtree)", "worker/workspace.py", "clean_up"),
    ("record outcome", "worker/outcome.py", "record"),
    ("status notify", "worker/job_runner.py", "_notify"),
]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=400, help="jobs per burst (default 400)")
    ap.add_argument("--profile-jobs", type=int, default=100, help="jobs profiled (default 100)")
    ap.add_argument("--loglevel", default="WARNING")
    ap.add_argument(
        "--profile-clock",
        choices=["wall", "cpu"],
        default="wall",
        help="what the profile measures: wall time, or the worker process's CPU time",
    )
    ap.add_argument(
        "--only",
        choices=["bare", "sqlite", "postgresql", "profile"],
        action="append",
        help="run only these sides (repeatable); the report then lacks the others",
    )
    ap.add_argument(
        "--task-events",
        choices=["on", "off"],
        default="off",
        help="ci-pool's task_events setting for the run, bare Celery mirroring it (default "
        "off: what README recommends for a pool without Flower)",
    )
    add_common_args(ap, "throughput")
    args = ap.parse_args(argv)
    if args.quick:
        args.jobs, args.profile_jobs = 40, 20
    return args


# -- bare Celery ---------------------------------------------------------------------------


def run_bare(bench: Bench, broker_url: str, config: Path, n: int) -> dict[str, Any]:
    import bare_celery_app

    r = redis.Redis.from_url(broker_url, socket_timeout=None)
    r.delete(BARE_RESULTS_KEY)
    app = bare_celery_app.make_app(broker_url, str(config))
    env = clean_env()
    env.update(
        BENCH_BROKER_URL=broker_url, BENCH_CONFIG=str(config), BENCH_QUEUE=BARE_QUEUE,
        BENCH_RESULTS_KEY=BARE_RESULTS_KEY,
        PYTHONPATH=":".join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH", "")) if p),
    )  # fmt: skip
    workers = [
        bench.spawn(
            f"bare-w{k}",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bare_celery_app",
                "worker",
                "-P",
                "prefork",
                "-c",
                str(CONCURRENCY),
                "-Q",
                BARE_QUEUE,
                "-n",
                f"bare{k}@{socket.gethostname()}",
                "-l",
                "WARNING",
                "--without-mingle",
                "--without-gossip",
            ],
            env,
        )
        for k in range(WORKERS)
    ]

    def send(i: int) -> float:
        t = time.time()
        app.send_task(bare_celery_app.TASK_NAME, args=[i], queue=BARE_QUEUE, routing_key=BARE_QUEUE)
        return t

    def take(timeout: float) -> tuple[int, float]:
        got = r.blpop([BARE_RESULTS_KEY], timeout=timeout)
        if got is None:
            for w in workers:
                w.check()
            raise RuntimeError(f"bare Celery task did not start within {timeout}s")
        i, t = got[1].decode().split()
        return int(i), float(t)

    try:
        for w in range(WORKERS * CONCURRENCY * 2):
            send(-1 - w)
        for _ in range(WORKERS * CONCURRENCY * 2):
            take(60)
        time.sleep(0.5)
        sent = {i: send(i) for i in range(n)}
        started: dict[int, float] = {}
        while len(started) < n:
            i, t = take(30)
            started[i] = t
    finally:
        stop_procs(workers)  # together: each warm shutdown is seconds of mostly waiting
    span = max(started.values()) - min(sent.values())
    return {
        "description": f"bare Celery noop task, {WORKERS} workers x -c {CONCURRENCY} (prefork), "
        f"{n} tasks sent back to back; throughput = n / (last start - first send)",
        "n": n,
        "throughput_per_s": round(n / span, 1),
        "send_to_start": latency_stats([started[i] - sent[i] for i in range(n)]),
    }


# -- ci-pool -------------------------------------------------------------------------------


def _workers(
    bench: Bench, pool: Pool, tag: str, envs: list[dict[str, str]], *extra: str
) -> list[Proc]:
    cmd = [sys.executable, "-m", "ci_pool", "worker", "--capability", CAPABILITY,
           "--loglevel", bench.args.loglevel, *extra]  # fmt: skip
    procs = [bench.spawn(f"{tag}-w{k}", [*cmd], env) for k, env in enumerate(envs)]
    pids = {p.pid for p in procs}
    deadline = time.monotonic() + 90
    while not pids <= {r.pid for r in pool.runners(CAPABILITY)}:
        for p in procs:
            p.check(" at start")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers did not register:\n{procs[0].tail()}")
        time.sleep(0.05)
    return procs


def _cpu_s(pids: Sequence[int]) -> float:
    """User+system CPU seconds of the processes ``pids`` and all their descendants, with
    the children each has already waited for (git, the step shell)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "pid (comm)": state ppid ... utime(12) stime(13) cutime(14) cstime(15)
        stats[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / tick)
    total, todo, seen = 0.0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(p for p, (ppid, _cpu) in stats.items() if ppid == pid)
    return total


def _own_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _burst(
    drv: CiPoolDriver, n: int, tag: str, workers: list[Proc]
) -> tuple[dict[str, float], list[Any], dict[str, float]]:
    """Submit ``n`` jobs back to back and wait for them all; also the CPU ms per job of the
    workers (with their children) and of the submitting process's submit calls."""
    submitted: dict[str, float] = {}
    pids = [p.pid for p in workers]
    cpu0 = _cpu_s(pids)
    own0 = _own_cpu_s()
    for i in range(n):
        t0 = time.time()
        submitted[drv.pool.submit(drv.spec(f"{tag}-{i}")).id] = t0
    own1 = _own_cpu_s()
    jobs = drv.wait_all(list(submitted), 300, workers[0], log)
    cpu1 = _cpu_s(pids)
    cpu = {
        "workers": round((cpu1 - cpu0) / n * 1000, 2),
        "submit": round((own1 - own0) / n * 1000, 2),
    }
    return submitted, jobs, cpu


def run_pool(
    bench: Bench, broker_url: str, config: Path, repo: GitRepo, store: str, store_url: str
) -> dict[str, Any]:
    n = bench.args.jobs
    home = bench.tmp / f"home-{store}"
    settings = load_settings(
        config,
        broker_url=broker_url,
        home=home,
        store_url=store_url,
        allow_local_repos=True,
        allow_loopback_git=True,
    )
    pool = Pool(settings)
    pool.store  # noqa: B018 - creates the schema before the workers open the store
    drv = CiPoolDriver(pool, repo, broker_url)
    envs = [
        ci_pool_env(
            broker_url=broker_url,
            store_url=store_url,
            home=home / f"runner-{k}",
            config=config,
            CI_POOL_ALLOW_LOCAL_REPOS="1",
            CI_POOL_ALLOW_LOOPBACK_GIT="1",
        )
        for k in range(WORKERS)
    ]
    procs = _workers(bench, pool, store, envs, "--concurrency", str(CONCURRENCY))
    load = [round(x, 2) for x in os.getloadavg()]
    try:
        _burst(drv, WORKERS * CONCURRENCY * 3, f"{store}-warmup", procs)
        time.sleep(0.5)
        submitted, jobs, cpu = _burst(drv, n, store, procs)
    finally:
        stop_procs(procs)
    ok = [j for j in jobs if j.state == JobState.SUCCEEDED.value]
    finished = [j.finished_at.timestamp() for j in ok]
    span = max(finished) - min(submitted.values())
    submit_span = max(submitted.values()) - min(submitted.values())
    return {
        "description": f"ci-pool no-op host jobs on {store}, {WORKERS} workers x --concurrency "
        f"{CONCURRENCY} (prefork), {n} jobs submitted back to back with Pool.submit; "
        "throughput = succeeded / (last finished_at - first submit)",
        "n": n,
        "succeeded": len(ok),
        "throughput_per_s": round(len(ok) / span, 1) if ok else 0.0,
        "submit_rate_per_s": round(n / submit_span, 1) if submit_span else None,
        "cpu_ms_per_job": cpu,
        "loadavg_at_start": load,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "claim_to_finished": latency_stats(
            [(j.finished_at - j.started_at).total_seconds() for j in ok]
        ),
        "submit_to_claim": latency_stats([j.started_at.timestamp() - submitted[j.id] for j in ok]),
    }


def profile_worker(bench: Bench, broker_url: str, config: Path, repo: GitRepo) -> dict[str, Any]:
    """One solo-pool worker under cProfile, jobs one at a time: per-job time per part (the
    profile starts after ``PROFILE_WARMUP`` jobs)."""
    n = bench.args.profile_jobs
    home = bench.tmp / "home-profile"
    store_url = f"sqlite:///{home / 'ci-pool.db'}"
    settings = load_settings(
        config,
        broker_url=broker_url,
        home=home,
        store_url=store_url,
        allow_local_repos=True,
        allow_loopback_git=True,
    )
    pool = Pool(settings)
    pool.store  # noqa: B018
    drv = CiPoolDriver(pool, repo, broker_url)
    env = ci_pool_env(
        broker_url=broker_url, store_url=store_url, home=home / "runner", config=config,
        CI_POOL_ALLOW_LOCAL_REPOS="1", CI_POOL_ALLOW_LOOPBACK_GIT="1",
    )  # fmt: skip
    prof = bench.tmp / "worker.prof"
    env["PYTHONPATH"] = ":".join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH", "")) if p)
    env["BENCH_PROFILE_CLOCK"] = bench.args.profile_clock
    env["BENCH_PROFILE_SKIP"] = str(PROFILE_WARMUP)
    cmd = [sys.executable, str(BENCH_DIR / "profiled_worker.py"), str(prof), "worker",
           "--capability", CAPABILITY, "--pool", "solo", "--loglevel", "WARNING"]  # fmt: skip
    proc = bench.spawn("profiled-worker", cmd, env)
    deadline = time.monotonic() + 90
    while proc.pid not in {r.pid for r in pool.runners(CAPABILITY)}:
        proc.check(" at start")
        if time.monotonic() > deadline:
            raise RuntimeError(f"profiled worker did not register:\n{proc.tail()}")
        time.sleep(0.05)
    claim_to_finished = []
    try:
        for i in range(-PROFILE_WARMUP, n):
            job = pool.submit(drv.spec(f"profile-{i}"))
            drv.wait_eof(job.id, 60, proc)
            got = drv.wait_final(job.id)
            if i < 0:
                continue
            if got.finished_at is not None and got.started_at is not None:
                claim_to_finished.append((got.finished_at - got.started_at).total_seconds())
    finally:
        proc.stop()
    return {"claim_to_finished": latency_stats(claim_to_finished), **breakdown(prof, n)}


def breakdown(prof: Path, n: int) -> dict[str, Any]:
    """Per-job ms of each part (cumulative time / calls of the job), and the functions
    with the most own time per job."""
    if not prof.exists():
        return {"parts_ms": {}, "note": "the profiled worker wrote no profile"}
    stats = pstats.Stats(str(prof))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    runs = sum(
        v[1] for (f, _l, fn), v in raw.items() if f.endswith("worker/job_runner.py") and fn == "run"
    )
    runs = runs or n
    parts: dict[str, float] = {}
    for label, suffix, func in PARTS:
        cum = sum(v[3] for (f, _l, fn), v in raw.items() if f.endswith(suffix) and fn == func)
        parts[label] = round(cum / runs * 1000, 2)
    named = sum(v for k, v in parts.items() if not k.startswith("job "))
    parts["other (logs, monitor, settings, ...)"] = round(parts[PARTS[0][0]] - named, 2)
    own = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:15]
    return {
        "jobs_profiled": runs,
        "parts_ms": parts,
        "top_own_time_ms_per_job": [
            {"function": f"{Path(f).name}:{line}({fn})", "ms": round(v[2] / runs * 1000, 3)}
            for (f, line, fn), v in own
        ],
        "note": "cProfile slows Python code about 1.5-2x, so the parts sum to more than the "
        "unprofiled claim_to_finished; their shares are what matters",
    }


# -- report --------------------------------------------------------------------------------


def plot(path: Path, report: dict[str, Any]) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.2))
    sides = {k: v for k, v in report["sides"].items() if "throughput_per_s" in v}
    names = list(sides)
    values = [sides[k]["throughput_per_s"] for k in names]
    ax1.barh(names, values, color=["tab:grey", "tab:blue", "tab:green"][: len(names)])
    for y, v in enumerate(values):
        ax1.annotate(f"{v:.0f}/s", (v, y), xytext=(4, 0), textcoords="offset points", va="center")
    ax1.axvline(TARGET_JOBS_PER_S, color="grey", linestyle=":")
    ax1.set_xlabel(f"jobs (tasks) per second, {WORKERS} workers x concurrency {CONCURRENCY}")
    ax1.set_title("throughput (dotted: 100 jobs/s target)")
    parts = {
        k: v for k, v in report["profile"].get("parts_ms", {}).items() if not k.startswith("job ")
    }
    ax2.barh(list(parts), list(parts.values()), color="tab:purple")
    ax2.invert_yaxis()
    ax2.set_xlabel("ms per no-op job (under cProfile)")
    ax2.set_title("where claim -> finished goes")
    save_figure(fig, path)


def run(bench: Bench) -> None:
    server = bench.redis()
    broker = server.url
    repo = bench.git_repo({"README.md": "throughput\n"})
    config = bench.config(CAPABILITY)
    events = bench.args.task_events == "on"
    # A top-level key goes before the config's tables.
    config.write_text(f"task_events = {str(events).lower()}\n" + config.read_text())
    n = bench.args.jobs
    only = set(bench.args.only or ["bare", "sqlite", "postgresql", "profile"])
    sides: dict[str, Any] = {}
    if "bare" in only:
        log(f"bare Celery: {n} tasks")
        sides["bare_celery"] = run_bare(bench, broker, config, n)
    if "sqlite" in only:
        log(f"ci-pool on SQLite: {n} jobs")
        sides["ci_pool_sqlite"] = run_pool(
            bench, broker, config, repo, "sqlite", f"sqlite:///{bench.tmp / 'sqlite.db'}"
        )
    if "postgresql" in only:
        pg, why = bench.postgres()
        if pg is not None:
            log(f"ci-pool on PostgreSQL: {n} jobs")
            sides["ci_pool_postgresql"] = run_pool(
                bench, broker, config, repo, "postgresql", pg.url
            )
        else:
            sides["ci_pool_postgresql"] = {"skipped": why}
    profile: dict[str, Any] = {}
    if "profile" in only:
        log(f"profile: {bench.args.profile_jobs} jobs on a solo-pool worker under cProfile")
        profile = profile_worker(bench, broker, config, repo)
    bare = sides.get("bare_celery", {}).get("throughput_per_s")
    sqlite = sides.get("ci_pool_sqlite", {}).get("throughput_per_s")
    headline = [
        f"{k}: {v['throughput_per_s']} jobs/s"
        + (
            f", claim->finished p50 {v['claim_to_finished']['p50_ms']} ms"
            f", worker CPU {v['cpu_ms_per_job']['workers']} ms/job"
            f", submit CPU {v['cpu_ms_per_job']['submit']} ms/job"
            if k != "bare_celery"
            else ""
        )
        for k, v in sides.items()
        if "throughput_per_s" in v
    ]
    parts = profile.get("parts_ms", {})
    if parts:
        headline.append(
            "per no-op job under cProfile: " + ", ".join(f"{k} {v} ms" for k, v in parts.items())
        )
    headline.append(f"what would halve it next: {HALVE_NEXT}")
    headline.append(
        f"task_events = {str(events).lower()} for ci-pool and bare Celery"
        + ("" if events else " (README's setting for a pool without Flower)")
    )
    report = {
        "parameters": {
            "workers": WORKERS,
            "concurrency": CONCURRENCY,
            "jobs": n,
            "task_events": events,
        },
        "headline": headline,
        "sides": sides,
        "profile": profile,
        "halve_next": HALVE_NEXT,
        "targets": {
            "sqlite_ge_100_jobs_per_s": {
                "series": "ci_pool_sqlite.throughput_per_s",
                "value": sqlite,
                "target": TARGET_JOBS_PER_S,
                "holds": sqlite is not None and sqlite >= TARGET_JOBS_PER_S,
                "bare_celery_same_run": bare,
            }
        },
    }
    bench.write(report, lambda png: plot(png, report))


def main(argv: Sequence[str] | None = None) -> int:
    with Bench("throughput", parse_args(argv)) as bench:
        run(bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
