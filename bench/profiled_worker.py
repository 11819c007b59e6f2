#!/usr/bin/env python
"""``ci-pool <args>`` under cProfile, the stats written to the first argument when the
process ends (a worker's warm shutdown on SIGTERM included). Used by throughput.py."""

from __future__ import annotations

import cProfile
import os
import sys

# bench/ holds docker.py, which would shadow the docker package the worker imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]

from ci_pool.cli.main import main  # noqa: E402


def run() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    profile = cProfile.Profile()
    sys.argv = ["ci-pool", *args]
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
