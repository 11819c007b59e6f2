"""The worker's side of ``runner exec`` without a broker: the command's environment, its
bounds (time, output, process group) and the masking of the worker's secrets."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ci_pool.core.diagnostics import DiagnosticCommand, DiagnosticResult, diagnostic_command
from ci_pool.exceptions import InputError
from ci_pool.settings import load_settings
from ci_pool.worker.diagnostics import run_diagnostic, worker_secrets


def run(
    *argv: str, timeout: float = 10, max_output: int = 4096, secrets: tuple[str, ...] = ()
) -> DiagnosticResult:
    return run_diagnostic(DiagnosticCommand(argv=argv, timeout=timeout), "r1", max_output, secrets)


def test_clean_environment_temp_dir_and_exit_code() -> None:
    env = run("env")
    assert sorted(line.split("=", 1)[0] for line in env.output.splitlines()) == [
        "HOME",
        "LANG",
        "PATH",
        "TMPDIR",
    ]
    res = run("sh", "-c", "pwd; echo err >&2; exit 4")
    assert res.exit_code == 4 and not res.timed_out and not res.error
    where, err = res.output.splitlines()
    assert "ci-pool-exec-" in where and err == "err"
    assert not Path(where).exists()  # the temp dir is gone


def test_timeout_kills_the_whole_group_and_output_is_bounded(tmp_path: Path) -> None:
    marker = tmp_path / "child-alive"
    started = time.monotonic()
    res = run("sh", "-c", f"(sleep 3; touch {marker}) & echo started; sleep 60", timeout=0.5)
    assert time.monotonic() - started < 10
    assert res.timed_out and res.exit_code is None and res.output == "started\n"
    time.sleep(3.5)  # past the child's own sleep: its marker must not appear
    assert not marker.exists()  # the background child died with the group
    big = run("sh", "-c", "head -c 10000 /dev/zero | tr '\\0' y", max_output=1024)
    assert big.truncated and big.output == "y" * 1024


def test_a_missing_program_is_an_error_not_an_exception() -> None:
    res = run("/nonexistent/tool")
    assert res.exit_code is None and "cannot run '/nonexistent/tool' on r1" in res.error


def test_the_workers_secrets_are_masked(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        home=tmp_path,
        broker_url="redis://runner-7:broker-secret-pw@127.0.0.1:1/0",
        api_token="cip_apitoken123456",
        runner_credential="circ_credential123456",
    )
    env = {"CI_POOL_BROKER_URL": settings.broker_url, "DEPLOY_PASSWORD": "hunter2-long", "X": "y"}
    found = worker_secrets(settings, env)
    assert {"broker-secret-pw", "cip_apitoken123456", "circ_credential123456", "hunter2-long"} <= (
        set(found)
    )
    assert "y" not in found
    text = "broker-secret-pw cip_apitoken123456 circ_credential123456 hunter2-long ok"
    res = run("echo", text, secrets=tuple(found))
    assert res.output == "*** *** *** *** ok\n"


def test_command_bounds_are_input_errors() -> None:
    with pytest.raises(InputError, match="command"):
        diagnostic_command([], 5)
    with pytest.raises(InputError, match="NUL"):
        diagnostic_command(["echo", "a\x00b"], 5)
    with pytest.raises(InputError, match="timeout"):
        diagnostic_command(["true"], 10_000)
    with pytest.raises(InputError, match="64 arguments"):
        diagnostic_command(["echo"] * 65, 5)
    assert os.path.exists("/bin/sh")
