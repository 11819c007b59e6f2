"""bench/all.py's fork runner: every benchmark it preloads is that benchmark's own script
(bench/docker.py, not docker-py), and a forked benchmark's exit code, exception or
``SystemExit`` comes back as the exit code `make bench` records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"

_PROBE = """
import sys, types
sys.path.insert(0, sys.argv[1])
import all as runner

modules = runner.preload(runner.BENCHMARKS)
for name in runner.BENCHMARKS:
    module = modules[name]
    print(name, module.__file__, callable(getattr(module, "main", None)))

probe = types.ModuleType("probe")
probe.__file__ = "probe.py"
def crash(argv):
    raise RuntimeError("boom")
def usage(argv):
    raise SystemExit("usage: bad flag")
for main in (lambda argv: 0, lambda argv: 3, crash, usage, lambda argv: sys.exit(4)):
    probe.main = main
    print("exit", runner.run_forked(probe, []))
"""


def test_preloaded_scripts_and_forked_exit_codes() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(BENCH)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    loaded = [line.split() for line in lines if not line.startswith("exit")]
    assert len(loaded) == 11
    for name, path, has_main in loaded:
        assert Path(path) == BENCH / f"{name}.py"
        assert has_main == "True", name
    assert [line for line in lines if line.startswith("exit")] == [
        "exit 0",
        "exit 3",
        "exit 1",
        "exit 1",
        "exit 4",
    ]
    assert "RuntimeError: boom" in out.stderr
    assert "usage: bad flag" in out.stderr
