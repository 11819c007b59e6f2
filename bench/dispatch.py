#!/usr/bin/env python
"""Dispatch benchmark: ci-pool's no-op job path against a bare Celery task on the same Redis.

    python bench/dispatch.py [--jobs N] [--quick] [--out bench/results/dispatch.json]

Everything runs on loopback in a temp dir (bench/harness.py): its own redis-server, git
daemon, SQLite store and worker subprocesses (one at a time, prefork, concurrency 1). See
bench/README.md for what each number means. Exits non-zero only when the benchmark itself
crashes; a missed target is reported in the JSON, not in the exit code.
"""

from __future__ import annotations

import argparse
import itertools
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from harness import (
    Bench,
    GitRepo,
    Proc,
    add_common_args,
    ci_pool_env,
    clean_env,
    latency_stats,
    pyplot,
    save_figure,
)
from sqlalchemy import func, select

from ci_pool import defaults
from ci_pool.core.specs import FINAL_STATES, JobSpec, JobState, parse_job_spec
from ci_pool.service.pool import Pool
from ci_pool.settings import load_settings
from ci_pool.store import Job

BENCH_DIR = Path(__file__).resolve().parent
CAPABILITY = "bench"
BARE_QUEUE = "bare-noop"
BARE_RESULTS_KEY = "bench:bare:started"
TARGET_CLAIM_P50_MS = 15.0
TARGET_THROUGHPUT_RATIO = 0.40
FINAL_VALUES = frozenset(s.value for s in FINAL_STATES)


def summarize(
    samples_s: Sequence[float],
    description: str,
    throughput: float | None = None,
    throughput_note: str | None = None,
) -> dict[str, Any]:
    """Latency percentiles in ms plus a throughput, if one applies."""
    out: dict[str, Any] = {"description": description, **latency_stats(samples_s)}
    out["throughput_per_s"] = None if throughput is None else round(throughput, 3)
    if throughput_note:
        out["throughput_note"] = throughput_note
    return out


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


# -- baseline: bare Celery -------------------------------------------------------------


def run_bare_celery(bench: Bench, broker_url: str, config: Path) -> dict[str, Any]:
    import bare_celery_app  # bench/ is on sys.path: this script's directory

    args = bench.args
    n, gap = args.jobs, args.gap_ms / 1000
    # No socket timeout: BLPOP waits up to a minute for the worker's first task, longer
    # than redis-py's default read timeout.
    r = redis.Redis.from_url(broker_url, socket_timeout=None)
    r.delete(BARE_RESULTS_KEY)
    app = bare_celery_app.make_app(broker_url, str(config))
    env = clean_env()
    env.update(
        BENCH_BROKER_URL=broker_url,
        BENCH_CONFIG=str(config),
        BENCH_QUEUE=BARE_QUEUE,
        BENCH_RESULTS_KEY=BARE_RESULTS_KEY,
        PYTHONPATH=":".join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH", "")) if p),
    )
    worker = bench.spawn(
        "bare-celery-worker",
        [sys.executable, "-m", "celery", "-A", "bare_celery_app", "worker", "-P", "prefork",
         "-c", "1", "-Q", BARE_QUEUE, "-n", f"bare@{socket.gethostname()}-bench",
         "-l", args.loglevel, "--without-mingle", "--without-gossip"],
        env,
    )  # fmt: skip
    try:

        def send(i: int) -> float:
            t = time.time()
            app.send_task(
                bare_celery_app.TASK_NAME, args=[i], queue=BARE_QUEUE, routing_key=BARE_QUEUE
            )
            return t

        def take(timeout: float) -> tuple[int, float]:
            got = r.blpop([BARE_RESULTS_KEY], timeout=timeout)
            if got is None:
                worker.check()
                raise RuntimeError(
                    f"bare Celery task did not start within {timeout}s:\n{worker.tail()}"
                )
            i, t = got[1].decode().split()
            return int(i), float(t)

        # Warm-up: the first one waits for the worker to come up.
        for w in range(args.warmup):
            send(-1 - w)
            take(60 if w == 0 else 10)
        bench.log(f"bare Celery worker up (pid {worker.pid}); {n} tasks closed-loop")

        idle: list[float] = []
        for i in range(n):
            time.sleep(gap)
            t0 = send(i)
            j, started = take(10)
            if j != i:
                raise RuntimeError(f"bare Celery: expected task {i}, got {j}")
            idle.append(started - t0)

        bench.log(f"bare Celery: {n} tasks burst")
        time.sleep(0.2)
        sent = {i: send(i) for i in range(n)}
        started_at: dict[int, float] = {}
        while len(started_at) < n:
            j, t = take(30)
            started_at[j] = t
    finally:
        worker.stop()
    first_send = min(sent.values())
    burst_lat = [started_at[i] - sent[i] for i in range(n)]
    starts = sorted(started_at.values())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    return {
        "idle": summarize(
            idle,
            "bare Celery, closed loop (one task in flight, worker idle): "
            "send_task() -> first line of the task body",
            None,
            "closed loop; not a throughput measure",
        ),
        "burst": summarize(
            burst_lat,
            f"bare Celery, {n} tasks sent back to back: send_task() -> task start "
            "(includes waiting in the queue)",
            n / (max(starts) - first_send),
            "n / (last task start - first send)",
        ),
        "burst_cycle": summarize(
            gaps,
            "bare Celery, burst: time between consecutive task starts (per-task "
            "dispatch cycle of the worker: ack, fetch next, start)",
            1.0 / mean(gaps) if gaps else None,
            "1 / mean cycle (derived)",
        ),
        "_raw": {"idle_s": idle, "burst_s": burst_lat},
    }


# -- ci-pool -------------------------------------------------------------------------------


def _ts(dt: Any) -> float | None:
    return None if dt is None else float(dt.timestamp())


class CiPoolDriver:
    def __init__(self, pool: Pool, repo: GitRepo, broker_url: str):
        self.pool = pool
        self.repo = repo
        self.r = redis.Redis.from_url(broker_url)

    def spec(self, i: int | str) -> JobSpec:
        return parse_job_spec(
            {
                "repo": self.repo.url,
                "ref": self.repo.sha,
                "capability": CAPABILITY,
                "steps": [{"run": "true", "name": "noop"}],
                "name": f"bench-{i}",
            },
            allow_local_repos=True,
        )

    def wait_eof(self, job_id: str, timeout: float, worker: Proc) -> None:
        """Block on the job's live log stream until its end marker (no store polling)."""
        key = defaults.LOG_STREAM_KEY.format(capability=CAPABILITY, job_id=job_id)
        last = "0-0"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            resp = self.r.xread({key: last}, block=500, count=100)
            for _key, entries in resp or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if b"eof" in fields:
                        return
            worker.check()
        raise RuntimeError(f"job {job_id} did not finish within {timeout}s:\n{worker.tail()}")

    def wait_final(self, job_id: str, timeout: float = 10) -> Job:
        end = time.monotonic() + timeout
        while True:
            job = self.pool.get(job_id)
            if job.state in FINAL_VALUES or time.monotonic() >= end:
                return job
            time.sleep(0.002)

    def wait_all(self, ids: list[str], timeout: float, worker: Proc, log: Any) -> list[Job]:
        end = time.monotonic() + timeout
        q = (
            select(func.count())
            .select_from(Job)
            .where(Job.id.in_(ids), Job.state.in_(list(FINAL_VALUES)))
        )
        while True:
            with self.pool.store.session() as s:
                done = int(s.scalar(q) or 0)
            if done >= len(ids):
                break
            worker.check()
            if time.monotonic() >= end:
                log(f"ci-pool burst: only {done}/{len(ids)} jobs final after {timeout:.0f}s")
                break
            time.sleep(0.25)
        with self.pool.store.session() as s:
            return list(s.scalars(select(Job).where(Job.id.in_(ids))))


def _outcomes(jobs: Sequence[Job]) -> dict[str, Any]:
    states: dict[str, int] = {}
    for j in jobs:
        states[j.state] = states.get(j.state, 0) + 1
    bad = [j for j in jobs if j.state != JobState.SUCCEEDED.value]
    out: dict[str, Any] = {"states": states}
    if bad:
        out["first_unsuccessful"] = {
            "id": bad[0].id,
            "state": bad[0].state,
            "reason": bad[0].reason,
        }
    return out


def run_ci_pool(bench: Bench, broker_url: str, config: Path, repo: GitRepo) -> dict[str, Any]:
    args = bench.args
    n, gap = args.jobs, args.gap_ms / 1000
    home = bench.tmp / "home"
    store_url = f"sqlite:///{home / 'ci-pool.db'}"
    home.mkdir()
    settings = load_settings(
        config, broker_url=broker_url, home=home, store_url=store_url, allow_local_repos=True
    )
    pool = Pool(settings)
    pool.store  # noqa: B018 - creates the schema before the worker opens the store
    drv = CiPoolDriver(pool, repo, broker_url)
    env = ci_pool_env(
        broker_url=broker_url, store_url=store_url, home=home, config=config,
        CI_POOL_ALLOW_LOCAL_REPOS="1",
    )  # fmt: skip
    (worker,) = bench.workers(pool, CAPABILITY, [env], tag="ci-pool", loglevel=args.loglevel)
    try:
        bench.log(f"ci-pool worker registered (pid {worker.pid}); warm-up x{args.warmup}")
        for w in range(args.warmup):
            job = pool.submit(drv.spec(f"warmup-{w}"))
            drv.wait_eof(job.id, 120, worker)
            job = drv.wait_final(job.id)
            if job.state != JobState.SUCCEEDED.value:
                raise RuntimeError(
                    f"warm-up job {job.id} ended {job.state}: {job.reason}\n"
                    f"{pool.store.read_log(job.id)}"
                )

        # Closed loop: one job in flight, the worker idle when it is submitted.
        bench.log(f"ci-pool: {n} jobs closed-loop")
        specs = [drv.spec(f"idle-{i}") for i in range(n)]
        idle_jobs: list[Job] = []
        idle_submit: dict[str, float] = {}
        for spec in specs:
            time.sleep(gap)
            t0 = time.time()
            job = pool.submit(spec)
            idle_submit[job.id] = t0
            drv.wait_eof(job.id, 60, worker)
            idle_jobs.append(drv.wait_final(job.id))

        # Burst: all jobs submitted back to back.
        bench.log(f"ci-pool: {n} jobs burst")
        time.sleep(0.2)
        specs = [drv.spec(f"burst-{i}") for i in range(n)]
        burst_submit: dict[str, float] = {}
        for spec in specs:
            t0 = time.time()
            burst_submit[pool.submit(spec).id] = t0
        submit_s = time.time() - min(burst_submit.values())
        burst_jobs = drv.wait_all(list(burst_submit), args.burst_timeout, worker, bench.log)
    finally:
        worker.stop()
    return analyse(n, idle_jobs, idle_submit, burst_jobs, burst_submit, submit_s)


def analyse(
    n: int,
    idle_jobs: Sequence[Job],
    idle_submit: dict[str, float],
    burst_jobs: Sequence[Job],
    burst_submit: dict[str, float],
    submit_s: float,
) -> dict[str, Any]:
    def ok(jobs: Sequence[Job]) -> list[Job]:
        return [j for j in jobs if j.state == JobState.SUCCEEDED.value]

    def lat(jobs: Sequence[Job], submit: dict[str, float], col: str) -> list[float]:
        return [t - submit[j.id] for j in ok(jobs) if (t := _ts(getattr(j, col))) is not None]

    idle_claim = lat(idle_jobs, idle_submit, "started_at")
    idle_fin = lat(idle_jobs, idle_submit, "finished_at")
    idle_exec = [j.finished_at.timestamp() - j.started_at.timestamp() for j in ok(idle_jobs)]
    checkout = [
        j.evidence.checkout_s for j in idle_jobs if j.evidence and j.evidence.checkout_s is not None
    ]
    first_submit = min(burst_submit.values())
    burst_claim = lat(burst_jobs, burst_submit, "started_at")
    burst_fin = lat(burst_jobs, burst_submit, "finished_at")
    claims = sorted(j.started_at.timestamp() for j in burst_jobs if j.started_at)
    finishes = sorted(j.finished_at.timestamp() for j in ok(burst_jobs))
    claims_tput = len(claims) / (claims[-1] - first_submit) if claims else None
    e2e_tput = len(finishes) / (finishes[-1] - first_submit) if finishes else None

    # Dispatch gap: worker free (previous job's finished_at) -> next claim. In a burst the
    # next message is already waiting, so this is the per-job cost of the dispatch path
    # alone (return from the task, ack, fetch, claim), without checkout or steps.
    by_claim = sorted(ok(burst_jobs), key=lambda j: j.started_at)
    gaps = [
        cur.started_at.timestamp() - max(prev.finished_at.timestamp(), burst_submit[cur.id])
        for prev, cur in itertools.pairwise(by_claim)
    ]
    return {
        "idle_submit_to_claim": summarize(
            idle_claim,
            "ci-pool, closed loop (one job in flight, worker idle): just before "
            "Pool.submit() -> jobs.started_at (the fenced queued->running UPDATE)",
            None,
            "closed loop; not a throughput measure",
        ),
        "idle_submit_to_finished": summarize(
            idle_fin,
            "ci-pool, closed loop: just before Pool.submit() -> jobs.finished_at "
            "(checkout + 'true' step + log flush + final UPDATE)",
            None,
            "closed loop; not a throughput measure",
        ),
        "idle_claim_to_finished": summarize(
            idle_exec,
            "ci-pool, closed loop: jobs.started_at -> jobs.finished_at (work after the claim)",
        ),
        "checkout": summarize(checkout, "ci-pool: evidence.checkout_s (git init/fetch/checkout)"),
        "burst_submit_to_claim": summarize(
            burst_claim,
            f"ci-pool, {n} jobs submitted back to back: just before Pool.submit() -> "
            "jobs.started_at (includes waiting behind earlier jobs)",
            claims_tput,
            "claims/s = n / (last started_at - first submit)",
        ),
        "burst_submit_to_finished": summarize(
            burst_fin,
            f"ci-pool, {n} jobs submitted back to back: just before Pool.submit() -> "
            "jobs.finished_at",
            e2e_tput,
            "jobs/s end to end = n succeeded / (last finished_at - first submit)",
        ),
        "dispatch_gap": summarize(
            gaps,
            "ci-pool, burst, dispatch only (derived): previous job's finished_at (or this "
            "job's submit, if later) -> this job's started_at; no checkout or step inside",
            1.0 / mean(gaps) if gaps else None,
            "1 / mean gap: dispatch-only rate a worker could sustain if jobs took no time "
            "(derived, not measured end to end)",
        ),
        "_outcomes": {"closed_loop": _outcomes(idle_jobs), "burst": _outcomes(burst_jobs)},
        "_burst_submit_loop_s": round(submit_s, 3),
        "_raw": {
            "idle_claim_s": idle_claim,
            "idle_finished_s": idle_fin,
            "burst_claim_s": burst_claim,
            "burst_finished_s": burst_fin,
        },
    }


# -- report ----------------------------------------------------------------------------


def plot(path: Path, bare: dict[str, Any], cip: dict[str, Any]) -> None:
    plt = pyplot()

    def cdf(ax: Any, samples: Sequence[float], label: str, **kw: Any) -> None:
        if not samples:
            return
        x = sorted(v * 1000.0 for v in samples)
        y = [(i + 1) / len(x) for i in range(len(x))]
        ax.step(x, y, where="post", label=label, **kw)

    fig, axes = plt.subplots(1, 3, figsize=(17, 5), gridspec_kw={"width_ratios": [1, 1, 0.8]})
    ax = axes[0]
    cdf(ax, bare["_raw"]["idle_s"], "closed loop: send -> start")
    cdf(ax, bare["_raw"]["burst_s"], f"burst of {bare['burst']['n']}: send -> start")
    ax.set_title("bare Celery noop (prefork -c 1)")
    ax2 = axes[1]
    cdf(ax2, cip["_raw"]["idle_claim_s"], "closed loop: submit -> claim")
    cdf(ax2, cip["_raw"]["idle_finished_s"], "closed loop: submit -> finished")
    cdf(ax2, cip["_raw"]["burst_claim_s"], "burst: submit -> claim", linestyle="--")
    cdf(ax2, cip["_raw"]["burst_finished_s"], "burst: submit -> finished", linestyle="--")
    ax2.set_title("ci-pool no-op job (host mode, git checkout, -c 1)")
    raw = [v for v in (*bare["_raw"].values(), *cip["_raw"].values()) if v]
    lo = min((min(v) for v in raw), default=1e-4)
    hi = max((max(v) for v in raw), default=1.0)
    for a in axes[:2]:
        a.set_xscale("log")
        a.set_xlim(max(lo * 1000 * 0.8, 0.05), hi * 1000 * 1.2)
        a.axvline(TARGET_CLAIM_P50_MS, color="grey", linestyle=":", linewidth=1)
        a.set_xlabel("latency (ms, log scale); dotted: 15 ms")
        a.set_ylabel("fraction of tasks/jobs")
        a.grid(True, which="both", alpha=0.3)
        a.legend(loc="lower right", fontsize=8)
    bars = [
        ("bare Celery\nnoop tasks/s", bare["burst"]["throughput_per_s"], "tab:blue"),
        ("ci-pool\njobs/s e2e", cip["burst_submit_to_finished"]["throughput_per_s"], "tab:orange"),
        ("ci-pool\nclaims/s", cip["burst_submit_to_claim"]["throughput_per_s"], "tab:green"),
        ("ci-pool dispatch\nonly (derived)", cip["dispatch_gap"]["throughput_per_s"], "tab:grey"),
    ]
    ax3 = axes[2]
    values = [b[1] or 0.0 for b in bars]
    rects = ax3.bar([b[0] for b in bars], values, color=[b[2] for b in bars])
    for rect, v in zip(rects, values, strict=True):
        ax3.annotate(
            f"{v:.1f}", (rect.get_x() + rect.get_width() / 2, v), ha="center", va="bottom",
            fontsize=9,
        )  # fmt: skip
    ax3.set_yscale("log")
    ax3.set_ylabel("per second (log scale), burst, 1 worker process")
    ax3.set_title("throughput")
    ax3.tick_params(axis="x", labelsize=8)
    save_figure(fig, path)


def build_report(
    args: argparse.Namespace, bare: dict[str, Any], cip: dict[str, Any]
) -> dict[str, Any]:
    bare_tput = bare["burst"]["throughput_per_s"]
    e2e = cip["burst_submit_to_finished"]["throughput_per_s"]
    disp = cip["dispatch_gap"]["throughput_per_s"]
    ratio = round(e2e / bare_tput, 4) if e2e and bare_tput else None
    disp_ratio = round(disp / bare_tput, 4) if disp and bare_tput else None
    p50 = cip["idle_submit_to_claim"]["p50_ms"]
    series = {
        "bare_celery_closed_loop_send_to_start": bare["idle"],
        "bare_celery_burst_send_to_start": bare["burst"],
        "bare_celery_burst_start_cycle": bare["burst_cycle"],
        "ci_pool_closed_loop_submit_to_claim": cip["idle_submit_to_claim"],
        "ci_pool_closed_loop_submit_to_finished": cip["idle_submit_to_finished"],
        "ci_pool_closed_loop_claim_to_finished": cip["idle_claim_to_finished"],
        "ci_pool_checkout": cip["checkout"],
        "ci_pool_burst_submit_to_claim": cip["burst_submit_to_claim"],
        "ci_pool_burst_submit_to_finished": cip["burst_submit_to_finished"],
        "ci_pool_dispatch_only_gap": cip["dispatch_gap"],
    }
    return {
        "parameters": {
            "jobs": args.jobs,
            "warmup": args.warmup,
            "closed_loop_gap_ms": args.gap_ms,
            "worker_pool": "prefork",
            "worker_concurrency": 1,
            "worker_loglevel": args.loglevel,
            "broker": "embedded redis-server on 127.0.0.1 (one instance, db 0, both sides)",
            "store": "SQLite (WAL) in a temp dir",
            "ci_pool_capability": {"name": CAPABILITY, "mode": "host", "queue": CAPABILITY},
            "ci_pool_job": "git:// checkout of a 1-file repo at a full SHA, one step: true",
            "clock": "time.time() in the driver vs datetime.now(UTC) / time.time() in the "
            "workers: one host, one realtime clock",
        },
        "headline": [
            f"closed loop p50: bare Celery send->start {bare['idle']['p50_ms']} ms; ci-pool "
            f"submit->claim {p50} ms, submit->finished "
            f"{cip['idle_submit_to_finished']['p50_ms']} ms",
            f"burst of {args.jobs}: bare Celery {bare_tput} tasks/s; ci-pool {e2e} jobs/s end "
            f"to end ({ratio} of bare), dispatch only (derived) {disp} jobs/s",
        ],
        "series": series,
        "ci_pool_outcomes": cip["_outcomes"],
        "ci_pool_burst_submit_loop_s": cip["_burst_submit_loop_s"],
        "ratios": {
            "ci_pool_e2e_jobs_per_s_over_bare_celery_tasks_per_s": ratio,
            "ci_pool_dispatch_only_derived_over_bare_celery_tasks_per_s": disp_ratio,
        },
        "targets": {
            "submit_to_claim_p50_le_15ms": {
                "series": "ci_pool_closed_loop_submit_to_claim",
                "value_ms": p50,
                "target_ms": TARGET_CLAIM_P50_MS,
                "holds": p50 is not None and p50 <= TARGET_CLAIM_P50_MS,
            },
            "noop_job_throughput_ge_40pct_of_bare_celery": {
                "series": "ci_pool_burst_submit_to_finished / bare_celery_burst_send_to_start",
                "value": ratio,
                "target": TARGET_THROUGHPUT_RATIO,
                "holds": ratio is not None and ratio >= TARGET_THROUGHPUT_RATIO,
                "dispatch_only_derived_value": disp_ratio,
                "dispatch_only_derived_holds": disp_ratio is not None
                and disp_ratio >= TARGET_THROUGHPUT_RATIO,
            },
        },
    }


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=300, help="tasks/jobs per series (default 300)")
    ap.add_argument("--warmup", type=int, default=3, help="discarded warm-up tasks/jobs")
    ap.add_argument(
        "--gap-ms",
        type=float,
        default=20.0,
        help="pause before each closed-loop submit, so the worker is idle",
    )
    ap.add_argument("--loglevel", default="INFO", help="worker log level, both sides")
    ap.add_argument(
        "--burst-timeout",
        type=float,
        default=150.0,
        help="give up waiting for the ci-pool burst after this many seconds",
    )
    add_common_args(ap, "dispatch")
    args = ap.parse_args(argv)
    if args.quick:
        args.jobs, args.warmup = min(args.jobs, 20), min(args.warmup, 1)
    if args.jobs < 2:
        ap.error("--jobs must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with Bench("dispatch", args) as bench:
        redis_srv = bench.redis()
        repo = bench.git_repo({"f.txt": "x"})
        config = bench.config(CAPABILITY)
        bench.log(f"redis {redis_srv.url}, git {repo.url} @ {repo.sha[:12]}, tmp {bench.tmp}")
        bare = run_bare_celery(bench, redis_srv.url, config)
        bench.log(
            f"bare Celery: closed-loop p50 {bare['idle']['p50_ms']} ms, "
            f"burst {bare['burst']['throughput_per_s']} tasks/s"
        )
        cip = run_ci_pool(bench, redis_srv.url, config, repo)
        bench.write(build_report(args, bare, cip), lambda png: plot(png, bare, cip))
    return 0


if __name__ == "__main__":
    sys.exit(main())
