#!/usr/bin/env python
"""Nested Docker against host mode on a build-like job: the same generated C project
compiled (one compiler per CPU), linked and run, then a Python test suite run over its
output, in a container (the project bind-mounted like a job's workspace) and on the host.

    python bench/modes.py [--files 300] [--tests 20] [--runs 3] [--quick] [--out ...] [--keep]

The workload is ci_pool/service/workload.py, the one `ci-pool doctor` runs in small. No
image here has a compiler and none can be pulled, so the container is a busybox image
built FROM scratch with the host's /usr (gcc, binutils, headers, Python) bind-mounted
read-only: the same binaries run on both sides, only the nesting differs. Runs alternate
between the modes after one warm-up each; the median of each is compared with the
design's rule: fall back to host mode when nested Docker is more than 30 % slower.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import Bench, add_common_args, logger, pyplot, save_figure

from ci_pool import defaults
from ci_pool.embedded import build_busybox_image
from ci_pool.service import workload

IMAGE = "ci-pool-bench/busybox:latest"
LABEL = "ci-pool.bench"

log = logger("modes")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--files", type=int, default=300, help="C files (default 300)")
    ap.add_argument("--tests", type=int, default=20, help="Python test modules (default 20)")
    ap.add_argument("--runs", type=int, default=3, help="runs per mode (median, default 3)")
    add_common_args(ap, "modes")
    args = ap.parse_args(argv)
    if args.quick:
        args.files, args.tests, args.runs = 40, 4, 1
    if args.files < 1 or args.tests < 1 or args.runs < 1:
        ap.error("--files, --tests and --runs must be at least 1")
    return args


def plot(path: Path, nested: list[float], host: list[float], title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.2))
    names = ["host mode", "nested Docker"]
    medians = [statistics.median(host), statistics.median(nested)]
    ax.barh(names, medians, color=["tab:blue", "tab:orange"])
    for y, runs in enumerate((host, nested)):
        ax.plot(runs, [y] * len(runs), "k|", markersize=14)
        ax.annotate(
            f"{medians[y]:.2f} s", (max(runs), y), xytext=(6, 0), textcoords="offset points",
            va="center",
        )  # fmt: skip
    ax.axvline(medians[0] * defaults.DOCTOR_OVERHEAD_WARN, color="grey", linestyle=":")
    ax.set_xlim(0, max(max(host), max(nested)) * 1.25)
    ax.set_xlabel("wall time per run, s (bars: median; ticks: each run; dotted: host + 30 %)")
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)


def run(bench: Bench) -> None:
    import docker

    args = bench.args
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox is needed to build the container's image (nothing is pulled)")
    client = docker.from_env(timeout=120)
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        build_busybox_image(client, IMAGE, busybox, labels={LABEL: "modes"})
    missing = workload.toolchain_missing()
    project = workload.write_project(bench.tmp / "project", args.files, args.tests)
    log(f"{project.describe()}; {args.runs} run(s) per mode after a warm-up each")
    found = workload.compare(client, IMAGE, project, args.runs)
    client.close()
    ratio = round(found.ratio, 3)
    verdict = "host mode" if found.degraded else "nested Docker"
    headline = [
        f"{project.describe()}: nested Docker {found.nested:.2f} s, host mode "
        f"{found.host:.2f} s (median of {args.runs}); ratio {ratio:.2f}",
        f"verdict: {verdict} (the design falls back to host mode above "
        f"{defaults.DOCTOR_OVERHEAD_WARN:.2f}x)",
    ]
    report: dict[str, Any] = {
        "parameters": {
            "c_files": project.c_files,
            "test_modules": project.test_modules,
            "runs": args.runs,
            "workload": project.kind,
            "toolchain": missing or "the host's /usr, bind-mounted read-only into the container",
            "container": f"{IMAGE} (busybox FROM scratch), network none, project bind-mounted, "
            "each run an exec into one started container",
        },
        "headline": headline,
        "nested_s": [round(x, 3) for x in found.nested_s],
        "host_s": [round(x, 3) for x in found.host_s],
        "nested_median_s": round(found.nested, 3),
        "host_median_s": round(found.host, 3),
        "ratio": ratio,
        "verdict": verdict,
        "targets": {
            "nested_docker_within_30pct_of_host": {
                "series": "nested_median_s / host_median_s",
                "value": ratio,
                "target": defaults.DOCTOR_OVERHEAD_WARN,
                "holds": not found.degraded,
            }
        },
    }
    title = f"{project.describe()}\nratio {ratio:.2f} -> {verdict}"
    bench.write(report, lambda png: plot(png, found.nested_s, found.host_s, title))


def main(argv: Sequence[str] | None = None) -> int:
    with Bench("modes", parse_args(argv)) as bench:
        run(bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
