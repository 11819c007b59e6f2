"""`ci-pool up` is stopped by Ctrl-C and SIGTERM even when its parent handed it SIGINT
ignored (a shell's background command) or blocked (a thread's signal mask survives exec)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = """
import os, signal, sys
from ci_pool.cli.up import _take_ctrl_c
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
if sys.argv[1] == "fixed":
    _take_ctrl_c()
try:
    os.kill(os.getpid(), getattr(signal, sys.argv[2]))
    import time; time.sleep(2)
except KeyboardInterrupt:
    print("stopped")
    sys.exit(0)
print("ran on")
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_up_takes_ctrl_c_and_sigterm_whatever_it_inherited(sig: str) -> None:
    fixed = subprocess.run([sys.executable, "-c", CHILD, "fixed", sig], capture_output=True,
                           text=True, timeout=60, check=False)  # fmt: skip
    assert fixed.stdout.strip() == "stopped", fixed.stdout + fixed.stderr
    # without it, the inherited disposition and mask keep the signal from up
    plain = subprocess.run([sys.executable, "-c", CHILD, "plain", sig], capture_output=True,
                           text=True, timeout=60, check=False)  # fmt: skip
    assert plain.stdout.strip() == "ran on", plain.stdout + plain.stderr
