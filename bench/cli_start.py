#!/usr/bin/env python
"""CLI start-up benchmark: how long `ci-pool --help`, `show ID`, `status` and a local
`submit` take from a cold process, and how much of it is spent importing, against
`python -c "import typer, rich"` measured in the same run.

    python bench/cli_start.py [--runs 15] [--import-runs N] [--compare REV] [--quick]
                              [--out bench/results/cli_start.json] [--keep]

Everything runs in a temp dir on 127.0.0.1 (bench/harness.py): its own redis-server, a
`git daemon` serving a one-file repository and `ci-pool up` on a home of its own, with a
capability `bench` that no worker serves (submitted jobs stay queued). The commands set
only CI_POOL_HOME, as a user's shell does, so they take the quick way to up's API; the
series marked "no up" set the broker and store instead (local mode: SQLite and Redis).
Each command runs `--runs` times, the commands interleaved so that load on the machine
hits them alike; the figure is the median. Wall time is measured around the subprocess;
import time is the sum of the self times that `python -X importtime` reports (a separate
run of each command, in the first `--import-runs` rounds: default every round).
`--compare REV` also times the commands on the `ci_pool` package of git revision REV
(exported with `git archive` into the temp dir), in the same rounds.

Exits non-zero only when the benchmark itself crashes; a missed target is reported in the
JSON, not in the exit code.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from harness import (
    Bench,
    add_common_args,
    ci_pool_env,
    clean_env,
    logger,
    pyplot,
    save_figure,
)

#: Import time a command may spend over the typer + rich baseline (seconds).
TARGET_IMPORT_S = 0.25
REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINE = "baseline (import typer, rich)"
#: Suffix of the series run without ``ci-pool up`` (straight to the store and broker).
LOCAL = " (no up: store + broker)"
#: An image no machine has: up starts no worker for the bench's capability.
ABSENT_IMAGE = "ci-pool-bench/absent:none"

log = logger("cli_start")


def import_seconds(stderr: str) -> float:
    """Sum of the self times (µs) in ``-X importtime`` output, in seconds."""
    total = 0
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            field = line.removeprefix("import time:").split("|", 1)[0].strip()
            if field.isdigit():
                total += int(field)
    return total / 1e6


def run_once(argv: list[str], env: dict[str, str], cwd: Path, importtime: bool) -> float:
    """Wall seconds of one run (or its import seconds with ``importtime``); a command
    that fails stops the benchmark with its output."""
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), *argv]
    start = time.perf_counter()
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr[-2000:]}")
    return import_seconds(res.stderr) if importtime else wall


def export_revision(rev: str, dest: Path) -> Path:
    """The ``ci_pool`` package of git revision ``rev``, unpacked under ``dest``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", rev, "ci_pool"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def commands(url: str, sha: str, job_id: str) -> dict[str, list[str]]:
    return {
        "help": ["-m", "ci_pool", "--help"],
        "show": ["-m", "ci_pool", "show", job_id],
        "status": ["-m", "ci_pool", "status"],
        "submit": [
            "-m",
            "ci_pool",
            "submit",
            "--repo",
            url,
            "--ref",
            sha,
            "--capability",
            "bench",
            "--run",
            "true",
        ],
    }


def start_up(bench: Bench, redis_url: str, tree_env: dict[str, str]) -> Callable[[], Path]:
    """``ci-pool up`` on a home of its own (broker: the bench's redis-server; no worker, its
    one capability's image is absent, so submitted jobs stay queued), started in the
    background; returns a call that waits until up is ready and returns its home."""
    home = bench.tmp / "up-home"
    home.mkdir()
    (home / "ci-pool.toml").write_text(
        f'[capabilities.bench]\nmode = "docker"\nimage = "{ABSENT_IMAGE}"\nqueue = "bench"\n'
    )
    env = {**clean_env(), "CI_POOL_HOME": str(home), "CI_POOL_BROKER_URL": redis_url}
    env.update(CI_POOL_ALLOW_LOOPBACK_GIT="true", PYTHONPATH=tree_env["PYTHONPATH"])
    proc = bench.spawn("up", [sys.executable, "-m", "ci_pool", "up"], env)
    deadline = time.monotonic() + 180

    def ready() -> Path:
        while "ready:" not in proc.log.read_text(errors="replace"):
            proc.check(" at start")
            if time.monotonic() > deadline:
                raise RuntimeError(f"ci-pool up never got ready:\n{proc.tail()}")
            time.sleep(0.1)
        return home

    return ready


def first_job(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    res = subprocess.run([sys.executable, *argv], env=env, cwd=cwd, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"submit failed: {res.stderr}")
    return res.stdout.strip()


def warm_up(argvs: dict[str, tuple[list[str], dict[str, str]]], skip: set[str], cwd: Path) -> None:
    """Each command once, untimed, but those in ``skip`` (warm already)."""
    for key, (argv, env) in argvs.items():
        if key not in skip:
            run_once(argv, env, cwd, importtime=False)


def measure(
    bench: Bench, runs: int, import_runs: int, compare: str | None
) -> dict[str, dict[str, list[float]]]:
    t0 = time.monotonic()
    redis = bench.redis()
    repo = bench.git_repo({"README": "cli start\n"})
    local = ci_pool_env(
        broker_url=redis.url,
        store_url=f"sqlite:///{bench.tmp / 'store.db'}",
        home=bench.tmp / "home",
        config=bench.config("bench"),
        CI_POOL_ALLOW_LOOPBACK_GIT="true",
    )
    trees = {"current": str(REPO_ROOT)}
    if compare:
        trees[compare] = str(export_revision(compare, bench.tmp / "compare"))
    # Nothing is timed until the rounds: up starts while the local store gets its first job
    # and the local commands warm up (none of them needs up).
    up_ready = start_up(bench, redis.url, {"PYTHONPATH": trees["current"]})
    submit = commands(repo.url, repo.sha, "-")["submit"]
    job_local = first_job(submit, {**local, "PYTHONPATH": trees["current"]}, bench.tmp)
    local_argvs: dict[str, tuple[list[str], dict[str, str]]] = {}
    for name, argv in commands(repo.url, repo.sha, job_local).items():
        if name != "help":
            local_argvs[f"{name}{LOCAL}"] = (argv, {**local, "PYTHONPATH": trees["current"]})
    # Warm the bytecode and page caches: every command once, but those the first jobs just
    # ran (submit, in both modes, on the current tree) and the baseline (whose imports
    # every command makes) are warm already.
    warm = {"submit", f"submit{LOCAL}", BASELINE}
    warm_up(local_argvs, warm, bench.tmp)
    # With up running: the user's shell sets nothing but the home (README "Using it").
    user = {**clean_env(), "CI_POOL_HOME": str(up_ready())}
    job_up = first_job(submit, {**user, "PYTHONPATH": trees["current"]}, bench.tmp)
    series: dict[str, dict[str, list[float]]] = {BASELINE: {"wall": [], "import": []}}
    argvs: dict[str, tuple[list[str], dict[str, str]]] = {
        BASELINE: (["-c", "import typer, rich"], {**user, "PYTHONPATH": trees["current"]})
    }
    for tree, path in trees.items():
        at = "" if tree == "current" else f" @ {tree}"
        for name, argv in commands(repo.url, repo.sha, job_up).items():
            argvs[f"{name}{at}"] = (argv, {**user, "PYTHONPATH": path})
        if tree == "current":
            argvs.update(local_argvs)
    for key in argvs:
        series[key] = {"wall": [], "import": []}
    warm_up(argvs, warm | set(local_argvs), bench.tmp)
    log(f"set up (up ready, first jobs, caches warm) in {time.monotonic() - t0:.1f} s")
    for i in range(runs):
        for key, (argv, e) in argvs.items():
            series[key]["wall"].append(run_once(argv, e, bench.tmp, importtime=False))
            if i < import_runs:  # the first rounds also run each command under importtime
                series[key]["import"].append(run_once(argv, e, bench.tmp, importtime=True))
        log(f"round {i + 1}/{runs} done")
    return series


def build_report(args: argparse.Namespace, series: dict[str, dict[str, list[float]]]) -> Any:
    base = {k: statistics.median(v) for k, v in series[BASELINE].items()}
    rows: dict[str, dict[str, Any]] = {}
    for key, samples in series.items():
        wall, imp = statistics.median(samples["wall"]), statistics.median(samples["import"])
        rows[key] = {
            "wall_median_s": round(wall, 4),
            "import_median_s": round(imp, 4),
            "wall_over_baseline_s": round(wall - base["wall"], 4),
            "import_over_baseline_s": round(imp - base["import"], 4),
            "wall_runs_s": [round(v, 4) for v in samples["wall"]],
            "import_runs_s": [round(v, 4) for v in samples["import"]],
        }
    targets = {
        f"{name}_import_over_baseline": {
            "limit_s": TARGET_IMPORT_S,
            "value_s": rows[name]["import_over_baseline_s"],
            "holds": rows[name]["import_over_baseline_s"] <= TARGET_IMPORT_S,
        }
        for name in ("help", "show", "status", "submit")
    }
    return {
        "parameters": {
            "runs": args.runs,
            "import_runs": args.import_runs,
            "compare": args.compare,
            "pool": "`ci-pool up` on a home in a temp dir; the commands set only CI_POOL_HOME "
            "(the quick way to up's API). Series marked 'no up' set the broker and store "
            "(local mode, straight to SQLite and Redis)",
            "statistic": "median of the runs; import = sum of -X importtime self times",
        },
        "headline": [
            f"{key}: {r['wall_median_s']:.3f} s wall, {r['import_median_s']:.3f} s importing"
            + ("" if key == BASELINE else f" (+{r['import_over_baseline_s']:.3f} s over baseline)")
            for key, r in rows.items()
        ],
        "targets": targets,
        "series": rows,
    }


def plot(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    plt = pyplot()
    names = list(rows)
    fig, ax = plt.subplots(figsize=(10, 4.8))
    xs = range(len(names))
    wall = [rows[n]["wall_median_s"] for n in names]
    imp = [rows[n]["import_median_s"] for n in names]
    ax.bar([x - 0.2 for x in xs], wall, width=0.4, label="wall time (median)")
    ax.bar([x + 0.2 for x in xs], imp, width=0.4, label="importing (median)")
    limit = rows[BASELINE]["import_median_s"] + TARGET_IMPORT_S
    ax.axhline(limit, color="red", linestyle=":", label="baseline import + 0.25 s")
    ax.set_xticks(list(xs), [n.replace(" (", "\n(").replace(" @ ", "\n@ ") for n in names])
    ax.tick_params(axis="x", labelsize=8)
    ax.set_ylabel("seconds")
    ax.set_title("ci-pool CLI start-up, cold process each run (with ci-pool up; no up)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="runs per command (default 15)")
    ap.add_argument(
        "--import-runs",
        type=int,
        default=None,
        help="runs per command under -X importtime, in the first rounds (default: --runs)",
    )
    ap.add_argument(
        "--compare", default=None, help="also time the ci_pool package of this git revision"
    )
    add_common_args(ap, "cli_start")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs = min(args.runs, 3)
    args.import_runs = min(args.import_runs or args.runs, args.runs)
    if args.runs < 1 or args.import_runs < 1:
        ap.error("--runs and --import-runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with Bench("cli_start", args) as bench:
        report = build_report(args, measure(bench, args.runs, args.import_runs, args.compare))
        bench.write(report, lambda png: plot(png, report["series"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
