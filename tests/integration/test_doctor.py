"""``ci-pool doctor`` against a real redis-server, SQLite store and dockerd: a ready
machine passes; a closed broker port, an old store schema and a missing capability image
each fail with the command that fixes them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command

from ci_pool import defaults
from ci_pool.embedded import RedisServer, free_port, redis_server_binary
from ci_pool.store.engine import make_engine
from ci_pool.store.migrate import HEAD, config
from tests.conftest import FAST_TIMINGS, GitServer, Harness, write_config

pytestmark = pytest.mark.integration


def _pool(root: Path, redis_url: str, image: str, linux_image: str | None = None) -> Harness:
    root.mkdir()
    h = Harness(root, redis_url, dict(FAST_TIMINGS))
    # Every docker capability (audit included) on an image that is here.
    write_config(h.config, image, extra=f'\n[capabilities.audit]\nimage = "{image}"\n')
    if linux_image:
        h.config.write_text(
            h.config.read_text().replace(
                f'[capabilities.linux]\nimage = "{image}"',
                f'[capabilities.linux]\nimage = "{linux_image}"',
            )
        )
    return h


def _checks(h: Harness, *args: str, **env: str) -> tuple[int, dict[str, dict[str, str]], str]:
    """``ci-pool doctor --json`` in the pool's environment (plus ``env``): its exit code,
    the checks by name, and the raw output."""
    res = subprocess.run(
        [sys.executable, "-m", "ci_pool", "doctor", "--json", *args], env={**h.env(), **env},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "Traceback" not in res.stderr, res.stderr
    rows = json.loads(res.stdout)
    for row in rows:
        assert set(row) == {"name", "status", "detail", "fix"}
        assert row["status"] in ("ok", "warn", "fail")
        assert row["status"] == "ok" or row["fix"], row  # a problem always says what fixes it
    return res.returncode, {r["name"]: r for r in rows}, res.stdout


def test_a_ready_machine_passes_every_check(
    tmp_path: Path, redis_server: RedisServer, busybox_image: str, docker_client: Any
) -> None:
    h = _pool(tmp_path / "pool", redis_server.url, busybox_image)
    assert h.cli("db", "upgrade").returncode == 0
    rc, checks, out = _checks(h)
    assert rc == 0, out
    assert checks["broker"]["status"] == "ok" and redis_server.url in checks["broker"]["detail"]
    assert checks["store"]["status"] == "ok" and HEAD in checks["store"]["detail"]
    assert str(tmp_path / "pool" / "home") in checks["home"]["detail"]
    assert checks["clock"]["status"] == "ok"
    assert checks["git"]["detail"].startswith("git version")
    assert checks["docker engine"]["status"] == "ok"
    assert "storage driver" in checks["docker engine"]["detail"]
    assert checks["cgroups docker"]["status"] == "ok"
    image_id = docker_client.images.get(busybox_image).id
    for cap in ("linux", "android", "flutter-web", "deploy"):
        # One image shared by every capability is checked once, under the first one.
        if f"image {cap}" in checks:
            assert image_id in checks[f"image {cap}"]["detail"]
    assert "image linux" in checks
    for disk in ("disk workspace", "disk mirrors", "disk artifacts"):
        assert "GiB free in" in checks[disk]["detail"]
    overhead = checks["docker overhead"]
    assert overhead["status"] in ("ok", "warn")  # a loaded machine may advise host mode
    assert "vs host" in overhead["detail"] and " (x" in overhead["detail"]
    # The same build-like workload as bench/modes.py, in small.
    assert "C files" in overhead["detail"] or "shell workload" in overhead["detail"]
    if overhead["status"] == "warn":
        assert 'mode = "host"' in overhead["fix"]
    # The workload's container is gone.
    left = docker_client.containers.list(all=True, filters={"label": defaults.LABEL_DOCTOR})
    assert left == []


def test_a_closed_broker_port_fails_with_the_fix_and_no_password(
    tmp_path: Path, redis_server: RedisServer, busybox_image: str
) -> None:
    h = _pool(tmp_path / "pool", redis_server.url, busybox_image)
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    rc, checks, out = _checks(h, "--submitter", CI_POOL_BROKER_URL=url)
    assert rc == 1
    broker = checks["broker"]
    assert broker["status"] == "fail"
    assert "cannot reach redis://:***@127.0.0.1:" in broker["detail"]
    assert "CI_POOL_BROKER_URL" in broker["fix"] and "redis-server" in broker["fix"]
    assert "hunter2" not in out
    assert "clock" not in checks  # nothing to compare with
    assert "docker engine" not in checks  # --submitter: no runner checks


def test_an_old_store_schema_fails_until_db_upgrade(
    tmp_path: Path, redis_server: RedisServer, busybox_image: str
) -> None:
    h = _pool(tmp_path / "pool", redis_server.url, busybox_image)
    rc, checks, _ = _checks(h, "--submitter")
    assert rc == 1 and checks["store"]["status"] == "fail"
    assert "no store at" in checks["store"]["detail"]
    assert checks["store"]["fix"] == "ci-pool db upgrade"
    assert not (tmp_path / "pool" / "home" / "ci-pool.db").exists()  # doctor creates nothing

    (tmp_path / "pool" / "home").mkdir()
    engine = make_engine(h.settings().resolved_store_url)
    with engine.begin() as conn:
        command.upgrade(config(conn), "0003")
    engine.dispose()
    rc, checks, _ = _checks(h, "--submitter")
    assert rc == 1
    store = checks["store"]
    assert store["status"] == "fail"
    assert f"is at migration 0003; this ci-pool needs {HEAD}" in store["detail"]
    assert store["fix"].startswith("ci-pool db upgrade")

    res = h.cli("db", "upgrade")
    assert res.returncode == 0, res.stderr
    assert f"at migration {HEAD}" in res.stdout
    rc, checks, _ = _checks(h, "--submitter")
    assert rc == 0 and checks["store"]["status"] == "ok"


def test_a_missing_capability_image_fails_naming_images_build(
    tmp_path: Path, redis_server: RedisServer, busybox_image: str
) -> None:
    missing = f"ci-pool-test/absent-{uuid.uuid4().hex[:8]}:latest"
    h = _pool(tmp_path / "pool", redis_server.url, busybox_image, linux_image=missing)
    assert h.cli("db", "upgrade").returncode == 0
    rc, checks, _ = _checks(h, "--skip-bench", "--capability", "linux")
    assert rc == 1
    image = checks["image linux"]
    assert image["status"] == "fail" and missing in image["detail"]
    assert image["fix"] == "ci-pool images build linux"
    assert "image android" not in checks and "docker overhead" not in checks
    # For people: the same finding and its fix, one per line.
    res = h.cli("doctor", "--skip-bench", "--capability", "linux")
    assert res.returncode == 1
    assert "fail image linux" in " ".join(res.stdout.split())
    assert "fix: ci-pool images build linux" in res.stdout


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A redis-server of its own on loopback that requires a password."""
    port, password = free_port(), f"pw-{uuid.uuid4().hex[:12]}"
    (tmp_path / "redis-auth").mkdir()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(tmp_path / "redis-auth"), "--requirepass", password],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield port, password
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_broker_check_is_authenticated(
    tmp_path: Path, redis_with_password: tuple[int, str], busybox_image: str
) -> None:
    port, password = redis_with_password
    h = _pool(tmp_path / "pool", f"redis://127.0.0.1:{port}/0", busybox_image)
    rc, checks, _ = _checks(h, "--submitter")
    assert rc == 1 and checks["broker"]["status"] == "fail"
    assert "needs a password" in checks["broker"]["detail"]
    assert "redis://:PASSWORD@" in checks["broker"]["fix"]

    _, checks, out = _checks(
        h, "--submitter", CI_POOL_BROKER_URL=f"redis://:wrong-{password}@127.0.0.1:{port}/0"
    )
    assert checks["broker"]["status"] == "fail" and password not in out
    assert "refused the user or password" in checks["broker"]["detail"]

    _, checks, out = _checks(
        h, "--submitter", CI_POOL_BROKER_URL=f"redis://:{password}@127.0.0.1:{port}/0"
    )
    assert checks["broker"]["status"] == "ok"
    assert f"redis://:***@127.0.0.1:{port}/0 answers PING" in checks["broker"]["detail"]
    assert checks["clock"]["status"] == "ok"
    assert password not in out


def test_git_servers_are_tried_over_protocol_v2(
    tmp_path: Path, redis_server: RedisServer, busybox_image: str, git_server: GitServer
) -> None:
    h = _pool(tmp_path / "pool", redis_server.url, busybox_image)
    url = git_server.url()
    closed = f"git://127.0.0.1:{free_port()}/app.git"
    rc, checks, out = _checks(h, "--submitter", "--git-url", url, "--git-url", closed)
    assert rc == 1, out
    port = url.split(":")[2].split("/")[0]
    ok = checks[f"git server 127.0.0.1:{port}"]
    assert ok["status"] == "ok" and ok["detail"] == f"{url} answers over git protocol v2"
    down = checks[f"git server 127.0.0.1:{closed.split(':')[2].split('/')[0]}"]
    assert down["status"] == "fail" and f"git ls-remote {closed} failed" in down["detail"]
    # A server outside git_hosts is refused before any connection, with the fix.
    h.overrides["git_hosts"] = '["127.0.0.1"]'
    rc, checks, out = _checks(
        h, "--submitter", CI_POOL_DOCTOR_GIT_URLS='["git://git.elsewhere.invalid/app.git"]'
    )
    refused = checks["git server git.elsewhere.invalid:9418"]
    assert refused["status"] == "fail" and "not in the git_hosts setting" in refused["detail"]
    assert refused["fix"] == "add the host to git_hosts"
