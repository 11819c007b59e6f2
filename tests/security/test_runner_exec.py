"""``ci-pool runner exec`` must not hand a runner's secrets to the command it runs: the
worker's environment (broker password, API token, runner credential) never reaches the
command's environment, nor its output even when the command reads the worker's own
/proc entry; and a worker refuses strict lanes by its own settings, whatever the caller's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from ci_pool.embedded import RedisServer
from ci_pool.store import diagnostics
from tests.conftest import Harness, Worker, isolated_harness

pytestmark = pytest.mark.integration

REDIS_DB = 6


@dataclass
class SecretPool:
    harness: Harness
    worker: Worker
    iso: Worker
    secrets: dict[str, str]


@pytest.fixture(scope="module")
def secret_pool(
    session_dir: Path, redis_server: RedisServer, busybox_image: str
) -> Iterator[SecretPool]:
    """A pool whose workers reach Redis as an ACL user with a password, and hold an API
    token and a runner credential in their environment."""
    user, password = f"exec-{uuid.uuid4().hex[:8]}", f"broker-pw-{uuid.uuid4().hex}"
    admin = redis.Redis.from_url(redis_server.url)
    admin.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
        commands=["+@all"],
    )  # fmt: skip
    secrets = {
        "password": password,
        "api_token": f"cip_{uuid.uuid4().hex}",
        "credential": f"circ_{uuid.uuid4().hex}",
    }
    h = isolated_harness(
        session_dir / "exec-secrets",
        redis_server,
        busybox_image,
        REDIS_DB,
        api_token=secrets["api_token"],
        runner_credential=secrets["credential"],
    )
    base = redis_server.url.rsplit("/", 1)[0].split("://", 1)[1]
    h.redis_url = f"redis://{user}:{password}@{base}/{REDIS_DB}"
    try:
        worker = h.start_worker("linux")
        iso = h.start_worker("iso")
        yield SecretPool(h, worker, iso, secrets)
    finally:
        h.stop()
        admin.acl_deluser(user)
        admin.close()


def _exec(
    pool: SecretPool, runner: str, *argv: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ci_pool", "runner", "exec", "--json", runner, "--", *argv],
        env={**pool.harness.env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _assert_clean(pool: SecretPool, text: str) -> None:
    for name, value in pool.secrets.items():
        assert value not in text, f"the {name} reached the command's output"


def test_the_workers_secrets_never_reach_the_command(secret_pool: SecretPool) -> None:
    pool = secret_pool
    pid = pool.worker.proc.pid
    with open(f"/proc/{pid}/environ", "rb") as fh:  # the worker does hold them
        held = fh.read().decode()
    assert pool.secrets["password"] in held and pool.secrets["credential"] in held

    res = _exec(pool, pool.worker.runner_id, "env")
    assert res.returncode == 0, res.stderr
    env = dict(line.split("=", 1) for line in json.loads(res.stdout)["output"].splitlines())
    assert set(env) == {"PATH", "HOME", "TMPDIR", "LANG"}
    _assert_clean(pool, res.stdout + res.stderr)

    # Reading the worker's own environment (same user) shows masks, not the values.
    res = _exec(pool, pool.worker.runner_id, "sh", "-c", "tr '\\0' '\\n' < /proc/$PPID/environ")
    assert res.returncode == 0, res.stderr
    output = json.loads(res.stdout)["output"]
    assert "CI_POOL_BROKER_URL=redis://" in output  # it did read the worker's environment
    assert "CI_POOL_RUNNER_CREDENTIAL=***" in output and "CI_POOL_API_TOKEN=***" in output
    _assert_clean(pool, res.stdout + res.stderr)

    # Nothing of them in the audit either.
    rows = [r.public().model_dump() for r in diagnostics.list_execs(pool.harness.pool().store)]
    assert rows and all(r["outcome"] == "exited" for r in rows)
    _assert_clean(pool, json.dumps(rows))


def test_a_strict_lane_refuses_by_its_own_settings(secret_pool: SecretPool) -> None:
    pool = secret_pool
    res = _exec(pool, pool.iso.runner_id, "id")
    assert res.returncode == 2 and "strict lane 'iso'" in res.stderr  # refused by the pool
    # A caller whose settings allow strict lanes still meets the worker's refusal.
    res = _exec(pool, pool.iso.runner_id, "id", CI_POOL_RUNNER_EXEC_STRICT="true")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"runner {pool.iso.runner_id} serves the strict lane 'iso'" in res.stderr
    assert "Traceback" not in res.stderr
    assert os.environ.get("CI_POOL_RUNNER_EXEC_STRICT") is None
