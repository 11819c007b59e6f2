#!/usr/bin/env python
# ruff: noqa: E402 - the docker package is imported after a sys.path fix (see below)
"""Docker path benchmark: a ``true`` job in a Docker capability against docker-py's floor.

    python bench/docker.py [--jobs N] [--quick] [--out bench/results/docker.json]

Everything runs on loopback in a temp dir (bench/harness.py): its own redis-server, git
daemon, SQLite store and one worker subprocess (prefork, concurrency 1) for a Docker
capability whose image is busybox built FROM scratch (nothing is pulled). Two series of
closed-loop jobs (one in flight), each job after one sample of docker-py's floor
(``create + start + wait + remove`` of ``true`` in the same image, interleaved so a change
of load moves both alike):

- ``cold``: no warm container (a container is created per job);
- ``warm``: ``warm_containers = 1`` (the next job's container is already created and
  started when it is claimed); skipped where the code has no such setting.

Each job's timeline comes from the store (submit, claim, finish, evidence.checkout_s), the
live log stream (the step's ``##[step] 1`` line and its exit line, stamped by the worker)
and Docker's own events (create, start, destroy of the job's container), one clock.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

# This file's name shadows the docker package on sys.path[0] (the script's directory):
# import the package with the directory off the path, then put it back for harness.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]
import docker
import redis

sys.path.insert(0, _HERE)
from harness import (
    Bench,
    GitRepo,
    Proc,
    add_common_args,
    begin_stop,
    ci_pool_env,
    latency_stats,
    pyplot,
    save_figure,
    stop_procs,
)

from ci_pool import defaults
from ci_pool.core.capabilities import Capability
from ci_pool.core.specs import FINAL_STATES, JobSpec, JobState, parse_job_spec
from ci_pool.embedded import build_busybox_image
from ci_pool.service.pool import Pool
from ci_pool.settings import load_settings
from ci_pool.store import Job

CAPABILITY = "benchdocker"
IMAGE = "ci-pool-bench/busybox:latest"
BENCH_LABEL = "ci-pool.bench"
FINAL_VALUES = frozenset(s.value for s in FINAL_STATES)
#: claim->finished may exceed docker-py's floor by this much (p50).
TARGET_OVERHEAD_MS = 30.0
#: claim->first step line with a warm container (p50).
TARGET_WARM_FIRST_LINE_MS = 50.0
#: The waterfall's phases, in order: (key, label).
PHASES = (
    ("claim", "submit -> claim"),
    ("checkout", "checkout"),
    ("create", "prepare + create"),
    ("start", "start"),
    ("exec", "-> step line"),
    ("step", "step (exec)"),
    ("finish", "-> finished"),
    ("remove", "-> removed"),
)


def _ts(dt: datetime | None) -> float | None:
    return None if dt is None else float(dt.timestamp())


class DockerEvents(threading.Thread):
    """Docker's container events for ci-pool's labels, with the engine's own timestamps:
    job id -> {"create": t, "start": t, "destroy": t}; warm containers by container id."""

    def __init__(self, client: docker.DockerClient) -> None:
        super().__init__(name="docker-events", daemon=True)
        self.stream = client.events(
            decode=True, filters={"type": "container", "label": defaults.LABEL_RUNNER}
        )
        self.by_job: dict[str, dict[str, float]] = {}
        self.by_container: dict[str, dict[str, float]] = {}
        self.lock = threading.Lock()

    def run(self) -> None:
        try:
            for ev in self.stream:
                action = str(ev.get("Action") or ev.get("status") or "")
                if action not in ("create", "start", "destroy", "die"):
                    continue
                attrs = ev.get("Actor", {}).get("Attributes", {})
                t = int(ev.get("timeNano", 0)) / 1e9
                with self.lock:
                    self.by_container.setdefault(ev.get("id", ""), {})[action] = t
                    job = attrs.get(defaults.LABEL_JOB)
                    if job:
                        self.by_job.setdefault(job, {})[action] = t
        except Exception:  # the stream is closed at the end of the run
            return

    def of_job(self, job_id: str, container_id: str | None) -> dict[str, float]:
        with self.lock:
            found = dict(self.by_container.get(container_id or "", {}))
            found.update(self.by_job.get(job_id, {}))
            return found

    def stop(self) -> None:
        self.stream.close()


def build_image(client: docker.DockerClient) -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise SystemExit("busybox is not installed (apt-get install busybox-static)")
    build_busybox_image(client, IMAGE, busybox, labels={BENCH_LABEL: "1"})


def floor_sample(client: docker.DockerClient) -> float:
    """docker-py create + start + wait + remove of ``true`` in the same image (seconds)."""
    t0 = time.perf_counter()
    c = client.containers.create(IMAGE, ["true"], network_mode="none", labels={BENCH_LABEL: "1"})
    c.start()
    c.wait()
    c.remove(force=True)
    return time.perf_counter() - t0


class Driver:
    def __init__(self, pool: Pool, repo: GitRepo, broker_url: str, worker: Proc):
        self.pool, self.repo, self.worker = pool, repo, worker
        self.r = redis.Redis.from_url(broker_url)

    def spec(self, name: str) -> JobSpec:
        return parse_job_spec(
            {
                "repo": self.repo.url,
                "ref": self.repo.sha,
                "capability": CAPABILITY,
                "steps": [{"run": "true", "name": "noop"}],
                "name": name,
            },
            allow_local_repos=True,
        )

    def lines(self, job_id: str, timeout: float = 60) -> list[tuple[float, str]]:
        """The job's live log lines with the worker's stamp, until its end marker."""
        key = defaults.LOG_STREAM_KEY.format(capability=CAPABILITY, job_id=job_id)
        last, out = "0-0", []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for _key, entries in self.r.xread({key: last}, block=500, count=100) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if b"eof" in fields:
                        return out
                    stamp = datetime.fromisoformat(fields[b"t"].decode()).timestamp()
                    out.append((stamp, fields.get(b"l", b"").decode()))
            self.worker.check()
        raise RuntimeError(f"job {job_id} did not finish in {timeout}s:\n{self.worker.tail()}")

    def final(self, job_id: str, timeout: float = 10) -> Job:
        end = time.monotonic() + timeout
        while True:
            job = self.pool.get(job_id)
            if job.state in FINAL_VALUES or time.monotonic() >= end:
                return job
            time.sleep(0.002)


def warm_ready(client: docker.DockerClient, timeout: float = 10) -> bool:
    """Wait (bounded) until an unused warm container is up, so each warm job finds one."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = client.containers.list(ignore_removed=True, filters={"label": defaults.LABEL_WARM})
        if any(c.name.startswith("ci-pool-warm-") for c in found):
            return True
        time.sleep(0.02)
    return False


def timeline(
    job: Job, submit: float, lines: list[tuple[float, str]], ev: dict[str, float]
) -> dict[str, float | None]:
    """The job's moments, in seconds since the epoch."""
    step = next((t for t, line in lines if line.startswith("##[step] 1 ")), None)
    exit_ = next((t for t, line in lines if line.startswith("##[step] 1 exit")), None)
    claim = _ts(job.started_at)
    checkout = job.evidence.checkout_s if job.evidence else None
    return {
        "submit": submit,
        "claim": claim,
        "checkout_done": claim + checkout if claim is not None and checkout is not None else None,
        "create": ev.get("create"),
        "start": ev.get("start"),
        "step_line": step,
        "step_exit": exit_,
        "finished": _ts(job.finished_at),
        "removed": ev.get("destroy"),
    }


def run_series(
    bench: Bench, client: docker.DockerClient, events: DockerEvents, repo: GitRepo,
    redis_url: str, warm: int, floor: list[float], retiring: Sequence[Proc] = (),
) -> tuple[dict[str, Any], Proc]:  # fmt: skip
    """One worker with ``warm`` warm containers; ``--jobs`` closed-loop ``true`` jobs, each
    after one sample of docker-py's floor (interleaved, so a change of the machine's load
    moves both alike). ``retiring``, the previous series' worker, is already shutting down:
    that overlaps this worker's start-up and ends before the first job. Returns the series
    and its worker, told to stop in turn."""
    args, tag = bench.args, "warm" if warm else "cold"
    home = bench.tmp / f"home-{tag}"
    home.mkdir()
    config = bench.tmp / f"ci-pool-{tag}.toml"
    text = f'[capabilities.{CAPABILITY}]\nimage = "{IMAGE}"\nqueue = "{CAPABILITY}"\n'
    if warm:
        text += f"warm_containers = {warm}\n"
    config.write_text(text)
    store_url = f"sqlite:///{home / 'ci-pool.db'}"
    settings = load_settings(
        config, broker_url=redis_url, home=home, store_url=store_url, allow_local_repos=True
    )
    pool = Pool(settings)
    pool.store  # noqa: B018 - creates the schema before the worker opens the store
    env = ci_pool_env(
        broker_url=redis_url, store_url=store_url, home=home, config=config,
        CI_POOL_ALLOW_LOCAL_REPOS="1", CI_POOL_ALLOW_LOOPBACK_GIT="1",
    )  # fmt: skip
    (worker,) = bench.workers(pool, CAPABILITY, [env], tag=tag, loglevel="WARNING")
    stop_procs(retiring)
    drv = Driver(pool, repo, redis_url, worker)
    rows: list[dict[str, Any]] = []
    try:
        for i in range(args.warmup + args.jobs):
            time.sleep(args.gap_ms / 1000)
            if warm and not warm_ready(client):
                bench.log("no warm container came up within 10 s")
            sample = floor_sample(client)
            if i >= args.warmup:
                floor.append(sample)
            t0 = time.time()
            job = pool.submit(drv.spec(f"{tag}-{i}"))
            lines = drv.lines(job.id)
            done = drv.final(job.id)
            if done.state != JobState.SUCCEEDED.value:
                raise RuntimeError(f"job {job.id} ended {done.state}: {done.reason}")
            cid = done.evidence.container_id if done.evidence else None
            end = time.monotonic() + 10
            while "destroy" not in events.of_job(job.id, cid) and time.monotonic() < end:
                time.sleep(0.005)
            if i < args.warmup:
                continue
            row = timeline(done, t0, lines, events.of_job(job.id, cid))
            row["warm_container"] = getattr(done.evidence, "warm_container", None)
            rows.append(row)
    except BaseException:
        worker.stop()
        raise
    begin_stop([worker])
    return analyse(rows), worker


def _span(rows: Sequence[dict[str, Any]], a: str, b: str) -> list[float]:
    return [r[b] - r[a] for r in rows if r.get(a) is not None and r.get(b) is not None]


def analyse(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def stats(a: str, b: str, what: str) -> dict[str, Any]:
        return {"description": what, **latency_stats(_span(rows, a, b))}

    # Phase boundaries; a missing moment (a warm job has no create/start event of its
    # own in the job's window) takes the one before it, so its phase shows as zero.
    order = ["submit", "claim", "checkout_done", "create", "start", "step_line", "step_exit",
             "finished", "removed"]  # fmt: skip
    phases: dict[str, list[float]] = {k: [] for k, _ in PHASES}
    for r in rows:
        moments, prev = [], None
        for key in order:
            t = r.get(key)
            if t is None or (prev is not None and t < prev and key in ("create", "start")):
                t = prev
            moments.append(t)
            prev = t
        for (key, _label), a, b in zip(PHASES, moments[:-1], moments[1:], strict=True):
            if a is not None and b is not None:
                phases[key].append(max(0.0, b - a))
    return {
        "n": len(rows),
        "submit_to_claim_ms": stats("submit", "claim", "Pool.submit() -> jobs.started_at"),
        "claim_to_running_ms": stats(
            "claim", "start", "jobs.started_at -> Docker's start event of the job's container"
        ),
        "claim_to_first_line_ms": stats(
            "claim", "step_line", "jobs.started_at -> the step's first log line (##[step] 1)"
        ),
        "claim_to_finished_ms": stats("claim", "finished", "jobs.started_at -> finished_at"),
        "claim_to_removed_ms": stats(
            "claim", "removed", "jobs.started_at -> Docker's destroy event of the container"
        ),
        "finished_to_removed_ms": stats("finished", "removed", "finished_at -> destroy event"),
        "phases_ms_p50": {
            k: round(1000 * sorted(v)[len(v) // 2], 2) if v else None for k, v in phases.items()
        },
        "_rows": list(rows),
    }


def plot(path: Path, report: dict[str, Any]) -> None:
    plt = pyplot()
    series = [("docker-py floor\n(from claim)", None)]
    series += [(name, report[name]) for name in ("cold", "warm") if report.get(name)]
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.9 * len(series)))
    colors = plt.get_cmap("tab10").colors
    labels = []
    for y, (name, data) in enumerate(series):
        labels.append(name)
        if data is None:
            # Drawn from the cold series' claim: the floor is what claim->finished competes with.
            p50, at = report["floor_ms"]["p50"], report["cold"]["phases_ms_p50"]["claim"] or 0.0
            ax.barh(y, p50, left=at, color="grey")
            ax.annotate(
                f"{p50:.0f} ms", (at + p50, y), va="center", fontsize=8, xytext=(3, 0),
                textcoords="offset points",
            )  # fmt: skip
            continue
        left = 0.0
        for i, (key, label) in enumerate(PHASES):
            width = data["phases_ms_p50"].get(key) or 0.0
            ax.barh(y, width, left=left, color=colors[i % 10], label=label if y == 1 else None)
            if width >= 8:
                ax.annotate(f"{width:.0f}", (left + width / 2, y), ha="center", va="center",
                            fontsize=7)  # fmt: skip
            left += width
    ax.set_yticks(range(len(series)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("ms from submit (p50 of each phase, closed loop, one worker)")
    ax.set_title("Docker path of a `true` job: where each millisecond goes")
    ax.legend(loc="lower right", fontsize=7, ncol=4)
    ax.grid(True, axis="x", alpha=0.3)
    save_figure(fig, path)


def build_report(args: argparse.Namespace, floor: list[float], cold: dict[str, Any],
                 warm: dict[str, Any] | None, warm_note: str) -> dict[str, Any]:  # fmt: skip
    floor_stats = latency_stats(floor)
    floor_p50 = floor_stats["p50_ms"]
    cold_p50 = cold["claim_to_finished_ms"]["p50_ms"]
    overhead = round(cold_p50 - floor_p50, 3) if cold_p50 is not None else None
    warm_first = warm["claim_to_first_line_ms"]["p50_ms"] if warm else None
    return {
        "parameters": {
            "jobs": args.jobs,
            "warmup": args.warmup,
            "gap_ms": args.gap_ms,
            "image": f"{IMAGE} (busybox FROM scratch)",
            "job": "git:// checkout of a 1-file repo at a full SHA (tree cache on), one step: true",
            "worker": "prefork, concurrency 1, one at a time",
            "store": "SQLite (WAL) in a temp dir",
        },
        "headline": [
            f"docker-py create+start+wait+remove p50 {floor_p50} ms; ci-pool cold claim->"
            f"finished p50 {cold_p50} ms (overhead {overhead} ms)",
            f"warm claim->first step line p50 {warm_first} ms"
            if warm
            else f"warm containers: {warm_note}",
        ],
        "floor_ms": {"p50": floor_p50, **floor_stats},
        "cold": cold,
        "warm": warm,
        "warm_note": warm_note,
        "overhead_vs_floor_ms": {"p50": overhead},
        "targets": {
            "cold_claim_to_finished_le_floor_plus_30ms": {
                "value_ms": overhead,
                "target_ms": TARGET_OVERHEAD_MS,
                "holds": overhead is not None and overhead <= TARGET_OVERHEAD_MS,
            },
            "warm_claim_to_first_line_le_50ms": {
                "value_ms": warm_first,
                "target_ms": TARGET_WARM_FIRST_LINE_MS,
                "holds": warm_first is not None and warm_first <= TARGET_WARM_FIRST_LINE_MS,
            },
        },
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=40, help="jobs per series (default 40)")
    ap.add_argument("--warmup", type=int, default=2, help="discarded warm-up jobs per series")
    ap.add_argument("--gap-ms", type=float, default=300.0, help="pause before each submit")
    ap.add_argument("--no-warm", action="store_true", help="skip the warm series")
    add_common_args(ap, "docker")
    args = ap.parse_args(argv)
    if args.quick:
        args.jobs, args.warmup = min(args.jobs, 8), min(args.warmup, 1)
    if args.jobs < 2:
        ap.error("--jobs must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    client = docker.from_env(timeout=60)
    with Bench("docker", args) as bench:
        redis_srv = bench.redis()
        repo = bench.git_repo({"f.txt": "x"})
        build_image(client)
        events = DockerEvents(client)
        events.start()
        bench.defer(events)
        floor: list[float] = []
        bench.log(f"cold series x{args.jobs}, each job after a docker-py floor sample")
        cold, last = run_series(bench, client, events, repo, redis_srv.url, 0, floor)
        warm, note = None, ""
        if args.no_warm:
            note = "skipped (--no-warm)"
        elif "warm_containers" not in Capability.model_fields:
            note = "not measured: this code has no warm_containers setting"
        else:
            bench.log(f"warm series x{args.jobs}")
            warm, last = run_series(bench, client, events, repo, redis_srv.url, 1, floor, [last])
        report = build_report(args, floor, cold, warm, note)
        bench.write(report, lambda png: plot(png, report))
        stop_procs([last])  # its warm container goes before the image
        for c in client.containers.list(
            ignore_removed=True, all=True, filters={"label": BENCH_LABEL}
        ):
            c.remove(force=True)
        client.images.remove(IMAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
