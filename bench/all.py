#!/usr/bin/env python
"""Every benchmark in one go, as `make bench` runs them: one after the other (never two at
once: they would skew each other's figures on a small machine), each in a child process of
this interpreter, with its wall time, exit code and the load average around it recorded.

    python bench/all.py [--quick] [--only NAME ...] [--skip NAME ...] [--out results/all.json]
                        [--spawn]

Each child is a fork of this process after it has imported every benchmark script (and
with them ci_pool, Celery, SQLAlchemy, docker-py, FastAPI and matplotlib), so no benchmark
pays its 1-3 s of imports again; each runs its own ``main()`` as ``python bench/NAME.py``
would. ``--spawn`` starts a fresh interpreter per benchmark instead.

Writes ``results/all.json`` (and a bar chart of where the run's time went, ``all.png``) with
the target ``make_bench_le_600s`` (the whole run within 10 minutes on a 2-core machine), then
refreshes ``summary.md``. A benchmark that fails is reported and the run goes on; the exit
code is 1 when any failed. ``--quick`` passes ``--quick`` to each (results under
``results/quick/``); with ``--out`` every benchmark writes beside it instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from harness import BENCH_DIR, Bench, load_script, logger, pyplot, save_figure

#: The order `make bench` runs them in: the cheap, load-sensitive ones first.
BENCHMARKS = (
    "dispatch", "throughput", "docker", "pipeline", "status", "api", "ui", "ui_screens",
    "cli_start", "modes", "checkout",
)  # fmt: skip
#: What `make bench` passes beyond each benchmark's defaults, to keep the whole run within
#: the budget; each figure keeps its meaning (the sizes that targets name are unchanged).
ARGS: dict[str, list[str]] = {
    "docker": ["--jobs", "20"],  # 20 cold and 20 warm jobs after 2 warm-ups each
    "pipeline": ["--seconds", "1"],  # builds of 1 s: the makespans' overheads are the figure
    # 10 cold status() calls (the target's series) on the same 110k-job stores; 5 of each
    # warm series and of each query on its own; 3 of every series without the indexes (a
    # comparison, no target: 4-5 times slower on SQLite, far beyond its run-to-run spread)
    "status": ["--runs", "10", "--part-runs", "5", "--noindex-runs", "3"],
    # every series 300 calls, but the list's (a page of 100, the slowest call, no target):
    # 100 calls on the same store
    "api": ["--list-calls", "100"],
    "ui": ["--calls", "100"],  # 100 calls per list series on the same 100k-job store
    # 3 timed runs of each command; its import time (sum of -X importtime self times, steady
    # from run to run) from one more run each
    "cli_start": ["--runs", "3", "--import-runs", "1"],
    "modes": ["--runs", "2"],
    "checkout": ["--repeat", "2"],
}
#: The whole run's budget on a 2-core machine (issue: `make bench` in at most 10 minutes).
BUDGET_S = 600.0

log = logger("all")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    ap.add_argument("--skip", nargs="+", choices=BENCHMARKS, default=[], help="leave these out")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="all.json's path (default results/all.json); every benchmark then writes its "
        "own JSON and PNG beside it",
    )
    ap.add_argument("--keep", action="store_true", help="keep this run's temp dir")
    ap.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    ap.add_argument(
        "--spawn",
        action="store_true",
        help="run each benchmark in a fresh interpreter instead of a fork of this one",
    )
    return ap.parse_args(argv)


def preload(names: Sequence[str]) -> dict[str, ModuleType]:
    """Import the benchmark scripts (not run: each keeps its ``__main__`` guard) and
    matplotlib, once, before the first fork. Each is loaded from its file under a name of
    its own (``bench_docker``: a plain ``docker`` is docker-py)."""
    modules = {}
    for name in names:
        modules[name] = load_script(BENCH_DIR / f"{name}.py")
    pyplot()
    return modules


def run_forked(module: ModuleType, argv: list[str]) -> int:
    """``module.main(argv)`` in a forked child, as ``python bench/NAME.py ARGV`` runs it;
    returns its exit code. The child leaves through ``os._exit``, so nothing of this
    process's own clean-up (its Bench's temp dir) ever runs in it."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.chdir(BENCH_DIR.parent)
            sys.argv = [str(module.__file__), *argv]
            code = module.main(argv) or 0
        except SystemExit as exc:
            if isinstance(exc.code, int) or exc.code is None:
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    try:
        _, status = os.waitpid(pid, 0)
    except BaseException:
        os.kill(pid, signal.SIGTERM)  # the child's Bench stops what it started
        os.waitpid(pid, 0)
        raise
    return os.waitstatus_to_exitcode(status)


def run_one(
    name: str, quick: bool, out_dir: Path | None, module: ModuleType | None
) -> dict[str, Any]:
    """One benchmark: in a fork of this process when its script is preloaded (``module``),
    else in a fresh interpreter."""
    argv = ["--quick"] if quick and name != "ui_screens" else list(ARGS.get(name, []))
    if out_dir is not None:
        argv += ["--out", str(out_dir / (name if name != "ui_screens" else "ui"))]
        if name != "ui_screens":
            argv[-1] += ".json"
    script = str(BENCH_DIR / f"{name}.py")
    log(f"{name}: {' '.join([script, *argv])}")
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    if module is not None:
        rc = run_forked(module, argv)
    else:
        rc = subprocess.call([sys.executable, script, *argv], cwd=BENCH_DIR.parent)
    seconds = round(time.monotonic() - t0, 1)
    log(f"{name}: exit {rc} after {seconds} s")
    return {
        "name": name,
        "exit_code": rc,
        "seconds": seconds,
        "load_at_start": round(load, 2),
        "load_at_end": round(os.getloadavg()[0], 2),
    }


def report(runs: list[dict[str, Any]], quick: bool, preload_s: float) -> dict[str, Any]:
    total = round(preload_s + sum(r["seconds"] for r in runs), 1)
    failed = [r["name"] for r in runs if r["exit_code"] != 0]
    whole = len(runs) == len(BENCHMARKS)
    headline = [
        f"{len(runs)} benchmarks in {total} s"
        + ("" if whole else f" (a partial run: {len(BENCHMARKS) - len(runs)} left out)"),
        f"per benchmark: importing the scripts once {preload_s} s, "
        + ", ".join(f"{r['name']} {r['seconds']} s" for r in runs),
    ]
    if failed:
        headline.append("failed: " + ", ".join(failed))
    out: dict[str, Any] = {
        "parameters": {"benchmarks": [r["name"] for r in runs], "budget_s": BUDGET_S},
        "headline": headline,
        "runs": runs,
        "preload_s": preload_s,
        "total_s": total,
        "failed": failed,
    }
    if whole and not quick:
        out["targets"] = {
            "make_bench_le_600s": {
                "target_s": BUDGET_S,
                "value_s": total,
                "holds": total <= BUDGET_S and not failed,
            }
        }
    return out


def plot(runs: list[dict[str, Any]], total: float) -> Any:
    def draw(png: Path) -> None:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(runs) + 1.6))
        names = [r["name"] for r in runs]
        ax.barh(names, [r["seconds"] for r in runs], color="#4c72b0")
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        ax.set_title(f"make bench: {total} s in all (budget {BUDGET_S:.0f} s)")
        for i, r in enumerate(runs):
            ax.text(r["seconds"], i, f" {r['seconds']} s", va="center", fontsize=8)
        save_figure(fig, png)

    return draw


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [b for b in (args.only or BENCHMARKS) if b not in args.skip]
    with Bench("all", args) as bench:
        out_dir = args.out.resolve().parent if args.out is not None else None
        modules: dict[str, ModuleType] = {}
        t0 = time.monotonic()
        if not args.spawn:
            modules = preload(chosen)
        preload_s = round(time.monotonic() - t0, 1)
        log(f"imported {len(modules)} benchmark scripts in {preload_s} s")
        runs = [run_one(name, args.quick, out_dir, modules.get(name)) for name in chosen]
        result = report(runs, args.quick, preload_s)
        bench.write(result, plot(runs, result["total_s"]))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
