#!/usr/bin/env python
"""``ci-pool <args>`` under cProfile, the stats written to the first argument when the
process ends (a worker's warm shutdown on SIGTERM included). Used by throughput.py.

BENCH_PROFILE_SKIP=N starts profiling only at the task after the first N (their lazy
imports and first-use set-up would otherwise be charged to the jobs); BENCH_PROFILE_CLOCK=cpu
measures the process's CPU time (all its threads) instead of wall time."""

from __future__ import annotations

import cProfile
import os
import sys
import time
from typing import Any

# bench/ holds docker.py, which would shadow the docker package the worker imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]

from celery import signals  # noqa: E402

from ci_pool.cli.main import main  # noqa: E402


def run() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    cpu = os.environ.get("BENCH_PROFILE_CLOCK") == "cpu"
    profile = cProfile.Profile(time.process_time) if cpu else cProfile.Profile()
    skip = int(os.environ.get("BENCH_PROFILE_SKIP", "0"))
    seen = [0]

    def start(**_kw: Any) -> None:
        seen[0] += 1
        if seen[0] == skip + 1:
            profile.enable()

    signals.task_prerun.connect(start, weak=False)
    sys.argv = ["ci-pool", *args]
    if skip == 0:
        profile.enable()
    try:
        main()
    except SystemExit:
        pass
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    run()
