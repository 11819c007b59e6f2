"""The launcher a JavaScript action's phase runs through: node found (or a clear error),
and inputs whose names a shell would drop (``INPUT_MY-INPUT``) handed to node intact."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ci_pool.worker.actions.node import NO_NODE, launcher, shell_safe


def run(tmp_path: Path, script: str, env: dict[str, str], program: str = "") -> tuple[int, str]:
    safe, odd = shell_safe(env)
    launch = tmp_path / "launch.sh"
    launch.write_text(launcher(program, script, "no node here: set node_runtime", odd))
    res = subprocess.run(
        ["sh", "-e", str(launch)],
        env={"PATH": os.environ["PATH"], "GITHUB_ACTION_PATH": str(tmp_path), **safe},
        capture_output=True,
        text=True,
        check=False,
    )
    return res.returncode, res.stdout


def test_inputs_with_dashes_reach_node_under_their_own_name(tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    (tmp_path / "main.js").write_text(
        "console.log(process.env['INPUT_GREETING-WORD'] + '/' + process.env.INPUT_WHO);"
        "process.exit(5)"
    )
    code, out = run(tmp_path, "main.js", {"INPUT_GREETING-WORD": "a b=c'd", "INPUT_WHO": "w"})
    assert (code, out) == (5, "a b=c'd/w\n")


def test_a_missing_node_says_how_to_fix_it(tmp_path: Path) -> None:
    code, out = run(tmp_path, "main.js", {}, program=str(tmp_path / "bin" / "node"))
    assert code == NO_NODE
    assert out == "::error::no node here: set node_runtime\n"


def test_names_a_shell_cannot_hold_are_moved() -> None:
    safe, odd = shell_safe({"A": "1", "INPUT_X-Y": "2", "STATE_a.b": "3", "BAD=NAME": "4"})
    assert safe == {"A": "1", "CI_POOL_ENV_0": "2", "CI_POOL_ENV_1": "3"}
    assert odd == ["INPUT_X-Y", "STATE_a.b"]
