#!/usr/bin/env python
"""Dispatch benchmark: ci-pool's no-op job path against a bare Celery task on the same Redis.

    python bench/dispatch.py [--jobs N] [--out bench/results/dispatch.json]

Everything runs on loopback in a temp dir: its own redis-server, git daemon, SQLite store
and worker subprocesses (one at a time, prefork, concurrency 1). See bench/README.md for
what each number means. Exits non-zero only when the benchmark itself crashes; a missed
target is reported in the JSON, not in the exit code.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
from sqlalchemy import func, select

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from ci_pool import defaults  # noqa: E402
from ci_pool.embedded import GitDaemon, RedisServer, make_repo, redis_server_binary  # noqa: E402
from ci_pool.jobs import FINAL_STATES, JobSpec, JobState, parse_job_spec  # noqa: E402
from ci_pool.pool import Pool  # noqa: E402
from ci_pool.settings import load_settings  # noqa: E402
from ci_pool.store import Job  # noqa: E402

CAPABILITY = "bench"
BARE_QUEUE = "bare-noop"
BARE_RESULTS_KEY = "bench:bare:started"
TARGET_CLAIM_P50_MS = 15.0
TARGET_THROUGHPUT_RATIO = 0.40
FINAL_VALUES = frozenset(s.value for s in FINAL_STATES)


def log(msg: str) -> None:
    print(f"[dispatch {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- statistics ------------------------------------------------------------------------


def summarize(
    samples_s: Sequence[float],
    description: str,
    throughput: float | None = None,
    throughput_note: str | None = None,
) -> dict[str, Any]:
    """Latency percentiles in ms (linear interpolation) plus a throughput, if one applies."""
    ms = np.asarray(samples_s, dtype=float) * 1000.0
    out: dict[str, Any] = {"description": description, "n": int(ms.size)}
    if ms.size:
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        out.update(
            p50_ms=round(float(p50), 3),
            p90_ms=round(float(p90), 3),
            p99_ms=round(float(p99), 3),
            max_ms=round(float(ms.max()), 3),
            mean_ms=round(float(ms.mean()), 3),
            min_ms=round(float(ms.min()), 3),
        )
    else:
        out.update(p50_ms=None, p90_ms=None, p99_ms=None, max_ms=None, mean_ms=None, min_ms=None)
    out["throughput_per_s"] = None if throughput is None else round(throughput, 3)
    if throughput_note:
        out["throughput_note"] = throughput_note
    return out


# -- processes -------------------------------------------------------------------------


@dataclass
class Proc:
    """A worker subprocess in its own process group (main process plus pool children)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 20.0) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop within {grace:.0f}s; SIGKILL")
        # Whatever is left of the group (pool children) goes too.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def spawn(name: str, cmd: list[str], env: dict[str, str], cwd: Path, logfile: Path) -> Proc:
    fh = logfile.open("wb")
    try:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        fh.close()
    return Proc(name, proc, logfile)


def clean_env() -> dict[str, str]:
    """This environment without any CI_POOL_* or BENCH_* (the caller's must not leak in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CI_POOL_", "BENCH_"))}


# -- environment -----------------------------------------------------------------------


@dataclass
class Env:
    tmp: Path
    redis: RedisServer
    git: GitDaemon
    repo_url: str
    sha: str
    config: Path
    home: Path
    store_url: str
    procs: list[Proc] = field(default_factory=list)

    @property
    def broker_url(self) -> str:
        return self.redis.url

    def ci_pool_env(self) -> dict[str, str]:
        env = clean_env()
        env.update(
            CI_POOL_BROKER_URL=self.broker_url,
            CI_POOL_STORE_URL=self.store_url,
            CI_POOL_HOME=str(self.home),
            CI_POOL_CONFIG=str(self.config),
            CI_POOL_ALLOW_LOCAL_REPOS="1",
        )
        return env

    def bare_env(self) -> dict[str, str]:
        env = clean_env()
        env.update(
            BENCH_BROKER_URL=self.broker_url,
            BENCH_CONFIG=str(self.config),
            BENCH_QUEUE=BARE_QUEUE,
            BENCH_RESULTS_KEY=BARE_RESULTS_KEY,
            PYTHONPATH=os.pathsep.join(
                p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH", "")) if p
            ),
        )
        return env


def write_config(path: Path) -> None:
    path.write_text(
        "# written by bench/dispatch.py\n"
        f'[capabilities.{CAPABILITY}]\nmode = "host"\nqueue = "{CAPABILITY}"\n'
    )


# -- baseline: bare Celery -------------------------------------------------------------


def run_bare_celery(env: Env, n: int, warmup: int, gap: float, loglevel: str) -> dict[str, Any]:
    import bare_celery_app  # bench/ is on sys.path (see top of file)

    r = redis.Redis.from_url(env.broker_url)
    r.delete(BARE_RESULTS_KEY)
    app = bare_celery_app.make_app(env.broker_url, str(env.config))

    node = f"bare@{socket.gethostname()}-bench"
    worker = spawn(
        "bare-celery-worker",
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
            "1",
            "-Q",
            BARE_QUEUE,
            "-n",
            node,
            "-l",
            loglevel,
            "--without-mingle",
            "--without-gossip",
        ],
        env.bare_env(),
        env.tmp,
        env.tmp / "bare-worker.log",
    )
    env.procs.append(worker)
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
                if not worker.alive():
                    raise RuntimeError(f"bare Celery worker exited:\n{worker.tail()}")
                raise RuntimeError(
                    f"bare Celery task did not start within {timeout}s:\n{worker.tail()}"
                )
            i, t = got[1].decode().split()
            return int(i), float(t)

        # Warm-up: the first one waits for the worker to come up.
        for w in range(warmup):
            send(-1 - w)
            take(60 if w == 0 else 10)
        log(f"bare Celery worker up (pid {worker.proc.pid}); {n} tasks closed-loop")

        idle: list[float] = []
        for i in range(n):
            time.sleep(gap)
            t0 = send(i)
            j, started = take(10)
            if j != i:
                raise RuntimeError(f"bare Celery: expected task {i}, got {j}")
            idle.append(started - t0)

        log(f"bare Celery: {n} tasks burst")
        time.sleep(0.2)
        sent: dict[int, float] = {}
        for i in range(n):
            sent[i] = send(i)
        started_at: dict[int, float] = {}
        while len(started_at) < n:
            j, t = take(30)
            started_at[j] = t
        first_send = min(sent.values())
        last_start = max(started_at.values())
        burst_lat = [started_at[i] - sent[i] for i in range(n)]
        starts = sorted(started_at.values())
        gaps = list(np.diff(starts))
        burst_tput = n / (last_start - first_send)
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
                burst_tput,
                "n / (last task start - first send)",
            ),
            "burst_cycle": summarize(
                gaps,
                "bare Celery, burst: time between consecutive task starts (per-task "
                "dispatch cycle of the worker: ack, fetch next, start)",
                1.0 / float(np.mean(gaps)) if gaps else None,
                "1 / mean cycle (derived)",
            ),
            "_raw": {"idle_s": idle, "burst_s": burst_lat},
        }
    finally:
        worker.stop()


# -- ci-pool -------------------------------------------------------------------------------


def _ts(dt: Any) -> float | None:
    return None if dt is None else float(dt.timestamp())


class CiPoolDriver:
    def __init__(self, env: Env, pool: Pool):
        self.env = env
        self.pool = pool
        self.r = redis.Redis.from_url(env.broker_url)

    def spec(self, i: int | str) -> JobSpec:
        return parse_job_spec(
            {
                "repo": self.env.repo_url,
                "ref": self.env.sha,
                "capability": CAPABILITY,
                "steps": [{"run": "true", "name": "noop"}],
                "name": f"bench-{i}",
            },
            allow_local_repos=True,
        )

    def wait_eof(self, job_id: str, timeout: float, worker: Proc) -> None:
        """Block on the job's live log stream until its end marker (no store polling)."""
        key = defaults.LOG_STREAM_KEY.format(job_id=job_id)
        last = "0-0"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            resp = self.r.xread({key: last}, block=500, count=100)
            for _key, entries in resp or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if b"eof" in fields:
                        return
            if not worker.alive():
                raise RuntimeError(f"ci-pool worker exited:\n{worker.tail()}")
        raise RuntimeError(f"job {job_id} did not finish within {timeout}s:\n{worker.tail()}")

    def wait_final(self, job_id: str, timeout: float = 10) -> Job:
        end = time.monotonic() + timeout
        while True:
            job = self.pool.get(job_id)
            if job.state in FINAL_VALUES or time.monotonic() >= end:
                return job
            time.sleep(0.002)

    def wait_all(self, ids: list[str], timeout: float, worker: Proc) -> list[Job]:
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
            if not worker.alive():
                raise RuntimeError(f"ci-pool worker exited:\n{worker.tail()}")
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


def run_ci_pool(
    env: Env, n: int, warmup: int, gap: float, loglevel: str, burst_timeout: float
) -> dict[str, Any]:
    settings = load_settings(
        env.config,
        broker_url=env.broker_url,
        home=env.home,
        store_url=env.store_url,
        allow_local_repos=True,
    )
    pool = Pool(settings)
    pool.store  # noqa: B018 - creates the schema before the worker opens the store
    drv = CiPoolDriver(env, pool)

    worker = spawn(
        "ci-pool-worker",
        [
            sys.executable,
            "-m",
            "ci_pool",
            "worker",
            "--capability",
            CAPABILITY,
            "--concurrency",
            "1",
            "--loglevel",
            loglevel,
        ],
        env.ci_pool_env(),
        env.tmp,
        env.tmp / "ci-pool-worker.log",
    )
    env.procs.append(worker)
    try:
        deadline = time.monotonic() + 60
        while not [x for x in pool.runners(CAPABILITY) if x.pid == worker.proc.pid]:
            if not worker.alive():
                raise RuntimeError(f"ci-pool worker exited at start:\n{worker.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"ci-pool worker did not register in 60s:\n{worker.tail()}")
            time.sleep(0.05)
        log(f"ci-pool worker registered (pid {worker.proc.pid}); warm-up x{warmup}")

        specs = [drv.spec(f"warmup-{w}") for w in range(warmup)]
        for spec in specs:
            job = pool.submit(spec)
            drv.wait_eof(job.id, 120, worker)
            job = drv.wait_final(job.id)
            if job.state != JobState.SUCCEEDED.value:
                raise RuntimeError(
                    f"warm-up job {job.id} ended {job.state}: {job.reason}\n"
                    f"{pool.store.read_log(job.id)}"
                )

        # Closed loop: one job in flight, the worker idle when it is submitted.
        log(f"ci-pool: {n} jobs closed-loop")
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
        log(f"ci-pool: {n} jobs burst")
        time.sleep(0.2)
        specs = [drv.spec(f"burst-{i}") for i in range(n)]
        burst_submit: dict[str, float] = {}
        order: list[str] = []
        for spec in specs:
            t0 = time.time()
            job = pool.submit(spec)
            burst_submit[job.id] = t0
            order.append(job.id)
        submit_s = time.time() - min(burst_submit.values())
        burst_jobs = drv.wait_all(order, burst_timeout, worker)
    finally:
        worker.stop()

    def lat(jobs: Sequence[Job], submit: dict[str, float], col: str) -> list[float]:
        out = []
        for j in jobs:
            t = _ts(getattr(j, col))
            if t is not None and j.state == JobState.SUCCEEDED.value:
                out.append(t - submit[j.id])
        return out

    idle_claim = lat(idle_jobs, idle_submit, "started_at")
    idle_fin = lat(idle_jobs, idle_submit, "finished_at")
    idle_exec = [
        _ts(j.finished_at) - _ts(j.started_at)  # type: ignore[operator]
        for j in idle_jobs
        if j.state == JobState.SUCCEEDED.value
    ]
    checkout = [
        float(j.evidence["checkout_s"])
        for j in idle_jobs
        if j.evidence and "checkout_s" in j.evidence
    ]

    ok = [j for j in burst_jobs if j.state == JobState.SUCCEEDED.value]
    first_submit = min(burst_submit.values())
    burst_claim = lat(burst_jobs, burst_submit, "started_at")
    burst_fin = lat(burst_jobs, burst_submit, "finished_at")
    claims = sorted(_ts(j.started_at) for j in burst_jobs if j.started_at)  # type: ignore[type-var]
    finishes = sorted(_ts(j.finished_at) for j in ok)  # type: ignore[type-var]
    claims_tput = len(claims) / (claims[-1] - first_submit) if claims else None
    e2e_tput = len(finishes) / (finishes[-1] - first_submit) if finishes else None

    # Dispatch gap: worker free (previous job's finished_at) -> next claim. In a burst the
    # next message is already waiting, so this is the per-job cost of the dispatch path
    # alone (return from the task, ack, fetch, claim), without checkout or steps.
    by_claim = sorted((j for j in ok), key=lambda j: j.started_at)  # type: ignore[arg-type,return-value]
    gaps = []
    for prev, cur in itertools.pairwise(by_claim):
        free = max(_ts(prev.finished_at), burst_submit[cur.id])  # type: ignore[type-var]
        gaps.append(_ts(cur.started_at) - free)  # type: ignore[operator]

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
            1.0 / float(np.mean(gaps)) if gaps else None,
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


def tool_version(cmd: list[str]) -> str:
    """A tool's version line (or why it is unknown), for the machine record."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"


def machine_info() -> dict[str, Any]:
    import celery
    import kombu
    import sqlalchemy

    import ci_pool

    return {
        "nproc": os.cpu_count(),
        "nproc_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis_py": redis.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "redis_server": tool_version([redis_server_binary(), "--version"]),
        "git": tool_version(["git", "--version"]),
        "ci_pool": ci_pool.__version__,
        "loadavg_at_start": list(os.getloadavg()),
    }


def plot(path: Path, bare: dict[str, Any], cip: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def cdf(ax: Any, samples: Sequence[float], label: str, **kw: Any) -> None:
        if not samples:
            return
        x = np.sort(np.asarray(samples) * 1000.0)
        y = np.arange(1, x.size + 1) / x.size
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
    lo = min((min(v) for v in (*bare["_raw"].values(), *cip["_raw"].values()) if v), default=1e-4)
    hi = max((max(v) for v in (*bare["_raw"].values(), *cip["_raw"].values()) if v), default=1.0)
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
    labels = [b[0] for b in bars]
    values = [b[1] or 0.0 for b in bars]
    rects = ax3.bar(labels, values, color=[b[2] for b in bars])
    for rect, v in zip(rects, values, strict=True):
        ax3.annotate(
            f"{v:.1f}",
            (rect.get_x() + rect.get_width() / 2, v),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax3.set_yscale("log")
    ax3.set_ylabel("per second (log scale), burst, 1 worker process")
    ax3.set_title("throughput")
    ax3.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_report(
    args: argparse.Namespace,
    info: dict[str, Any],
    bare: dict[str, Any],
    cip: dict[str, Any],
    runtime_s: float,
) -> dict[str, Any]:
    bare_tput = bare["burst"]["throughput_per_s"]
    e2e = cip["burst_submit_to_finished"]["throughput_per_s"]
    disp = cip["dispatch_gap"]["throughput_per_s"]
    ratio = (e2e / bare_tput) if e2e and bare_tput else None
    disp_ratio = (disp / bare_tput) if disp and bare_tput else None
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
        "benchmark": "dispatch",
        "machine": info,
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
        "series": series,
        "ci_pool_outcomes": cip["_outcomes"],
        "ci_pool_burst_submit_loop_s": cip["_burst_submit_loop_s"],
        "ratios": {
            "ci_pool_e2e_jobs_per_s_over_bare_celery_tasks_per_s": None
            if ratio is None
            else round(ratio, 4),
            "ci_pool_dispatch_only_derived_over_bare_celery_tasks_per_s": None
            if disp_ratio is None
            else round(disp_ratio, 4),
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
                "value": None if ratio is None else round(ratio, 4),
                "target": TARGET_THROUGHPUT_RATIO,
                "holds": ratio is not None and ratio >= TARGET_THROUGHPUT_RATIO,
                "dispatch_only_derived_value": None if disp_ratio is None else round(disp_ratio, 4),
                "dispatch_only_derived_holds": disp_ratio is not None
                and disp_ratio >= TARGET_THROUGHPUT_RATIO,
            },
        },
        "loadavg_at_end": list(os.getloadavg()),
        "runtime_s": round(runtime_s, 1),
    }


# -- main ------------------------------------------------------------------------------


def setup(tmp: Path) -> Env:
    redis_srv = RedisServer.start(tmp / "redis")
    try:
        base = tmp / "git"
        base.mkdir()
        sha = make_repo(base / "bench.git", {"f.txt": "x"})
        daemon = GitDaemon.start(base)
    except BaseException:
        redis_srv.stop()
        raise
    home = tmp / "home"
    home.mkdir()
    config = tmp / "ci-pool.toml"
    write_config(config)
    return Env(
        tmp=tmp,
        redis=redis_srv,
        git=daemon,
        repo_url=daemon.url("bench.git"),
        sha=sha,
        config=config,
        home=home,
        store_url=f"sqlite:///{home / 'ci-pool.db'}",
    )


def teardown(env: Env | None) -> None:
    if env is None:
        return
    for p in env.procs:
        try:
            p.stop()
        except Exception as exc:
            log(f"stopping {p.name}: {exc}")
    for svc in (env.git, env.redis):
        try:
            svc.stop()
        except Exception as exc:
            log(f"stopping {type(svc).__name__}: {exc}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=300, help="tasks/jobs per series (default 300)")
    ap.add_argument(
        "--out",
        type=Path,
        default=BENCH_DIR / "results" / "dispatch.json",
        help="JSON output; the PNG goes next to it with a .png suffix",
    )
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
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, store)")
    args = ap.parse_args(argv)
    if args.jobs < 2:
        ap.error("--jobs must be at least 2")
    return args


def on_sigterm(signum: int, _frame: Any) -> None:
    """SIGTERM ends a benchmark through SystemExit, so its cleanup runs."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="ci-pool-bench-"))
    env: Env | None = None
    try:
        info = machine_info()
        env = setup(tmp)
        log(f"redis {env.broker_url}, git {env.repo_url} @ {env.sha[:12]}, tmp {tmp}")
        os.environ.pop("CI_POOL_CONFIG", None)
        bare = run_bare_celery(env, args.jobs, args.warmup, args.gap_ms / 1000, args.loglevel)
        log(
            f"bare Celery: closed-loop p50 {bare['idle']['p50_ms']} ms, "
            f"burst {bare['burst']['throughput_per_s']} tasks/s"
        )
        cip = run_ci_pool(
            env, args.jobs, args.warmup, args.gap_ms / 1000, args.loglevel, args.burst_timeout
        )
        report = build_report(args, info, bare, cip, time.monotonic() - started)
        out: Path = args.out
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        png = out.with_suffix(".png")
        plot(png, bare, cip)
        log(f"wrote {out} and {png}")
        print_summary(report)
        return 0
    finally:
        teardown(env)
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def print_summary(report: dict[str, Any]) -> None:
    print()
    print(f"{'series':<44}{'n':>5}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'per s':>10}")
    for name, s in report["series"].items():

        def f(v: Any) -> str:
            return "-" if v is None else f"{v:.2f}"

        print(
            f"{name:<44}{s['n']:>5}{f(s['p50_ms']):>10}{f(s['p99_ms']):>10}"
            f"{f(s['max_ms']):>10}{f(s['throughput_per_s']):>10}"
        )
    print()
    for name, t in report["targets"].items():
        print(
            f"target {name}: {'holds' if t['holds'] else 'MISSED'} "
            f"({t.get('value_ms', t.get('value'))})"
        )


if __name__ == "__main__":
    sys.exit(main())
