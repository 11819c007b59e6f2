"""With ``ci-pool up`` running for the home, ``show``, ``status``, ``submit``, ``logs``,
``cancel`` and ``runners`` ask its API over loopback (the address and token up keeps in the
home) and start without the store, the broker, the HTTP library, pydantic or the service
layer: the same output as straight to the store, fewer imports.

The home's ``up.json`` here names the session's real API (uvicorn over the shared pool)
and a live process (this one), as a running ``ci-pool up`` writes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ci_pool.home import UpRecord
from tests.conftest import GitServer, Harness
from tests.integration.test_api import make_token

pytestmark = pytest.mark.integration

#: What the quick way never loads (the usual way loads all of them for these commands).
HEAVY = {"sqlalchemy", "celery", "kombu", "redis", "httpx", "pydantic_settings", "alembic"}
HEAVY |= {"pydantic", "fastapi", "ci_pool.service", "ci_pool.core.specs"}

PROBE = (
    "import json, sys\nfrom ci_pool.cli.main import main\nsys.argv = ['ci-pool', *{argv!r}]\n"
    "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code or 0\nelse:\n    code = 0\n"
    "print('\\nMODULES ' + json.dumps(sorted(sys.modules)))\n"
    "sys.exit(code)"
)


def cli(env: dict[str, str], *argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``ci-pool ARGV`` in a new interpreter: its result (output without the probe's
    line) and the modules it imported, and their top-level packages."""
    res = subprocess.run([sys.executable, "-c", PROBE.format(argv=list(argv))], env=env,
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    out, _, modules = res.stdout.rpartition("\nMODULES ")
    assert modules, res.stdout + res.stderr
    res.stdout = out
    names = set(json.loads(modules))
    return res, names | {name.split(".")[0] for name in names}


def test_the_job_commands_ask_the_running_up_without_the_heavy_stack(
    harness: Harness, api_url: str, git_server: GitServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    token_file = home / "up-token"
    token_file.write_text(make_token(harness, "submit", "read", "cancel", "admin") + "\n")
    UpRecord(os.getpid(), harness.redis_url, api_url, str(token_file), False, time.time()).write(
        home
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
    env.update(CI_POOL_HOME=str(home), CI_POOL_CONFIG=str(harness.config))

    # No runner matches the glob: the job stays queued until it is cancelled below.
    sub, loaded = cli(env, "submit", "--repo", git_server.url(), "--ref", "main",
                      "--capability", "linux", "--run", "echo quick",
                      "--runner", "nobody-quick-*")  # fmt: skip
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip()
    assert loaded & HEAVY == set(), loaded & HEAVY
    assert harness.pool().get(job_id).repo == git_server.url()  # in the pool up serves

    show, loaded = cli(env, "show", job_id)
    assert show.returncode == 0, show.stderr
    assert loaded & HEAVY == set(), loaded & HEAVY
    # the same lines the store itself gives (the state and history may move on between)
    local = harness.cli("show", job_id)
    assert local.returncode == 0, local.stderr
    for key in ("name", "capability", "repo", "attempt", "queued"):
        want = next(line for line in local.stdout.splitlines() if line.strip().startswith(key))
        assert want in show.stdout.splitlines(), (want, show.stdout)

    as_json, _ = cli(env, "show", job_id, "--json")
    assert json.loads(as_json.stdout)["id"] == job_id

    status, loaded = cli(env, "status")
    assert status.returncode == 0, status.stderr
    assert loaded & HEAVY == set(), loaded & HEAVY
    assert f"home {home.resolve()}" in status.stdout
    assert any(line.split("│")[1].strip() == "linux" for line in status.stdout.splitlines()
               if line.count("│") > 2)  # fmt: skip
    rows, _ = cli(env, "status", "--json")
    assert {r["capability"] for r in json.loads(rows.stdout)} >= {"linux"}

    runners, loaded = cli(env, "runners")
    assert runners.returncode == 0, runners.stderr
    assert loaded & HEAVY == set(), loaded & HEAVY
    assert "runner" in runners.stdout and "last seen" in runners.stdout
    listed, _ = cli(env, "runners", "--json")
    assert listed.returncode == 0 and isinstance(json.loads(listed.stdout), list)

    logs, loaded = cli(env, "logs", job_id, "--attempt", "1")
    assert logs.returncode == 0, logs.stderr
    assert loaded & HEAVY == set(), loaded & HEAVY
    # a value typer refuses is still typer's error (typer's coercion, with pydantic)
    refused, loaded = cli(env, "logs", job_id, "--attempt", "first")
    assert refused.returncode == 2 and "Invalid value for '--attempt'" in refused.stderr

    cancel, loaded = cli(env, "cancel", job_id)
    assert cancel.returncode == 0, cancel.stderr
    assert loaded & HEAVY == set(), loaded & HEAVY
    assert cancel.stdout.startswith(f"job {job_id} "), cancel.stdout
    harness.wait_state(job_id, "cancelled")
    follow, loaded = cli(env, "logs", "-f", job_id)  # the stream ends with the job
    assert follow.returncode == 0, follow.stderr
    assert loaded & HEAVY == set(), loaded & HEAVY

    # an ended job's --json is the store's own, byte for byte
    quick_json, _ = cli(env, "show", job_id, "--json")
    local_json = harness.cli("show", job_id, "--json")
    assert quick_json.returncode == 0 and local_json.returncode == 0, local_json.stderr
    assert quick_json.stdout == local_json.stdout

    # errors read as in local mode, with the same exit codes
    missing, _ = cli(env, "show", "nosuchjob")
    assert missing.returncode == 2 and "no job with id 'nosuchjob'" in missing.stderr
    assert "Traceback" not in missing.stderr
    for argv in (["logs", "nosuchjob"], ["cancel", "nosuchjob"]):
        missing, _ = cli(env, *argv)
        assert missing.returncode == 2 and "no job with id 'nosuchjob'" in missing.stderr, argv
    # input the API refuses is the error submitting straight to the store gives
    bad = ("submit", "--repo", git_server.url(), "--capability", "linux", "--run", "true")
    bad += ("--timeout", "99999999999")
    refused, loaded = cli(env, *bad)
    local = harness.cli(*bad)
    assert loaded & HEAVY == set(), loaded & HEAVY
    assert (refused.returncode, refused.stderr) == (2, local.stderr), refused.stderr
    assert local.returncode == 2 and "timeout" in local.stderr

    # a token up no longer accepts says where it came from
    token_file.write_text("cip_not-a-token\n")
    denied, _ = cli(env, "show", job_id)
    assert denied.returncode != 0 and str(token_file) in denied.stderr, denied.stderr

    # anything that points elsewhere takes the usual way (here: the broker set by hand)
    _, loaded = cli({**env, "CI_POOL_BROKER_URL": harness.redis_url}, "status")
    assert "sqlalchemy" in loaded


def test_help_spends_well_under_a_second_importing() -> None:
    """A generous sanity bound (the benchmark bench/cli_start.py has the figures)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
    argv = [sys.executable, "-X", "importtime", "-m", "ci_pool", "--help"]
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    self_us = [
        int(line.split("|")[0].removeprefix("import time:").strip())
        for line in res.stderr.splitlines()
        if line.startswith("import time:") and line.split("|")[0][12:].strip().isdigit()
    ]
    assert self_us and sum(self_us) / 1e6 < 1.0
