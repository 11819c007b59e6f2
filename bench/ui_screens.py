#!/usr/bin/env python
"""Screenshots of the web view's pages, taken in headless Chromium from a small real pool.

    python bench/ui_screens.py [--out bench/results/ui] [--keep]

Everything runs in a temp dir on 127.0.0.1 (bench/harness.py): its own redis-server, a git
daemon, a SQLite store, two host-mode workers and uvicorn serving the API and the web view.
A workflow runs: ``build`` (coloured output, a folded group, a step summary) and ``test``
finish, ``watch`` is still running when the pages are taken (the pool shows a busy runner)
and is cancelled after.
Writes login.png, pool.png, pipelines.png, pipeline.png, job.png and runner.png (the whole
page, up to 2400 px high) to ``--out``; the README links them. Needs Debian's ``chromium`` and
``chromium-driver``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import browser
from harness import RESULTS_DIR, Bench, ci_pool_env

from ci_pool.api.server import make_server, running
from ci_pool.embedded import free_port
from ci_pool.service.pool import Pool
from ci_pool.settings import load_settings
from ci_pool.store import tokens

CAPABILITY = "bench"
WIDTH, MAX_HEIGHT = 1280, 2400

WORKFLOW = """\
name: release
on: push
jobs:
  build:
    runs-on: bench
    steps:
      - name: compile
        run: |
          echo "::group::toolchain"
          echo "cc (Debian 12.2.0) 12.2.0"
          echo "::endgroup::"
          for m in core net ui; do printf 'cc -O2 -c %s.c \\033[32mok\\033[0m\\n' "$m"; done
          printf '\\033[33mwarning:\\033[0m unused variable in net.c\\n'
          echo "::notice file=net.c,line=12::unused variable"
      - name: report
        id: report
        run: |
          echo "## Build report" >> "$GITHUB_STEP_SUMMARY"
          echo "| module | size |" >> "$GITHUB_STEP_SUMMARY"
          echo "|---|---|" >> "$GITHUB_STEP_SUMMARY"
          echo "| core | 12 KiB |" >> "$GITHUB_STEP_SUMMARY"
          echo "version=1.2.3" >> "$GITHUB_OUTPUT"
    outputs:
      version: ${{ steps.report.outputs.version }}
  test:
    runs-on: bench
    needs: build
    steps:
      - run: |
          for t in unit api cli; do echo "test $t: passed"; done
  watch:
    runs-on: bench
    steps:
      - run: |
          echo "waiting for the release gate"
          while [ ! -f gate ]; do sleep 0.2; done
"""

PAGES = ("pool", "pipelines", "pipeline", "job", "runner")


def wait(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return got


def shoot(driver: Any, url: str, path: Path) -> None:
    """The page at ``url``, its whole height (up to MAX_HEIGHT), as a PNG."""
    driver.set_window_size(WIDTH, 900)
    driver.get(url)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, min(max(int(height), 600), MAX_HEIGHT))
    driver.save_screenshot(str(path))


def run(bench: Bench, out: Path) -> list[Path]:
    redis_server = bench.redis()
    repo = bench.git_repo({"README.md": "screens\n"}, name="app.git")
    config = bench.config(CAPABILITY)
    store_url = f"sqlite:///{bench.tmp / 'store' / 'ci-pool.db'}"
    (bench.tmp / "store").mkdir()
    settings = load_settings(
        config, broker_url=redis_server.url, home=bench.tmp / "api", store_url=store_url
    )
    pool = Pool(settings)
    envs = [
        ci_pool_env(
            broker_url=redis_server.url,
            store_url=store_url,
            home=bench.tmp / "runners" / f"w{slot}",
            config=config,
        )
        for slot in (1, 2)
    ]
    bench.workers(pool, CAPABILITY, envs)
    token, _ = tokens.create_token(pool.store, "screens", ["admin"])
    pipeline = pool.submit_pipeline(WORKFLOW, ".github/workflows/release.yml", repo.url, "main")
    jobs = {j.job_ref: j for j in pool.store.pipeline_jobs(pipeline.id)}
    for name in ("build", "test"):
        wait(f"{name} to end", lambda n=name: pool.get(jobs[n].id).state == "succeeded")
    watch = wait("watch to run", lambda: (j := pool.get(jobs["watch"].id)).runner_id and j)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    urls = {
        "pool": "/ui/",
        "pipelines": "/ui/pipelines",
        "pipeline": f"/ui/pipelines/{pipeline.id}",
        "job": f"/ui/jobs/{jobs['build'].id}",
        "runner": f"/ui/runners/{watch.runner_id}",
    }
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with (
        running(make_server(settings, "127.0.0.1", port, log_level="warning")),
        browser.chromium(WIDTH, 900) as driver,
    ):
        shoot(driver, f"{base}/ui/login", out / "login.png")
        written.append(out / "login.png")
        browser.login(driver, base, token)
        for name in PAGES:
            shoot(driver, base + urls[name], out / f"{name}.png")
            written.append(out / f"{name}.png")
    pool.cancel(watch.id)
    return written


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "ui", help="PNG directory")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, store)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    why = browser.missing()
    if why:
        print(f"ui_screens: {why}", file=sys.stderr)
        return 2
    with Bench("ui_screens", args) as bench:
        for path in run(bench, args.out):
            bench.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
