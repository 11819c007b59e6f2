"""Every script under bench/ still imports against today's package: a renamed or removed
name breaks `make bench` only when somebody runs it, long after the change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"

# Loads one script the way `python bench/NAME.py` sees the world (bench/ first on the path)
# without running its main().
_PROBE = """
import pathlib, sys
sys.path.insert(0, sys.argv[1])
from harness import load_script
module = load_script(pathlib.Path(sys.argv[2]), "bench_script")
"""


def test_every_benchmark_script_imports() -> None:
    scripts = sorted(BENCH.glob("*.py"))
    assert {"all", "harness", "dispatch", "throughput", "api"} <= {p.stem for p in scripts}
    probes = {
        p.stem: subprocess.Popen(
            [sys.executable, "-c", _PROBE, str(BENCH), str(p)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for p in scripts
    }
    failed = {}
    for name, proc in probes.items():
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            failed[name] = out.strip().splitlines()[-1:]
    assert not failed, failed
