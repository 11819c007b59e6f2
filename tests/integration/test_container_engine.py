"""Which container engine a runner uses, seen through ``ci-pool doctor``: ``auto`` takes
Docker when its socket answers and Podman's service when only that answers, says where it
asked when none does; and doctor runs the pinned tools of a capability's Dockerfile in its
image, one line per tool (a tiny busybox image with fake tools: one right, one wrong, one
missing; on Podman, the busybox image, where every tool is missing)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from ci_pool import container_engine, defaults
from ci_pool.core.toolchains import dockerfile_args
from ci_pool.embedded import BUSYBOX_DOCKERFILE
from ci_pool.exceptions import ExecutorError
from ci_pool.settings import Settings
from tests.conftest import FAST_TIMINGS, TEST_IMAGE, Harness, RedisServer, write_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PINS = dockerfile_args((ROOT / "worker_images" / "linux" / "Dockerfile").read_text())
TOOLS_IMAGE = "ci-pool-test/fake-tools:latest"
#: go and flutter print their pins, node another version, rustc is not there.
FAKE_TOOLS = {
    "go": f"echo 'go version go{PINS['GO_VERSION']} linux/amd64'",
    "node": "echo v23.1.0",
    "flutter": f"echo 'Flutter {PINS['FLUTTER_VERSION']} • channel stable'",
}


def build_tools_image(client: Any, tag: str, labels: dict[str, str]) -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copy(busybox, Path(ctx) / "busybox")
        (Path(ctx) / "tools").mkdir()
        for name, body in FAKE_TOOLS.items():
            script = Path(ctx) / "tools" / name
            script.write_text(f"#!/bin/sh\n{body}\n")
            script.chmod(0o755)
        (Path(ctx) / "Dockerfile").write_text(
            BUSYBOX_DOCKERFILE + "COPY tools/ /usr/local/bin/\nENV PATH=/usr/local/bin:/bin\n"
        )
        client.images.build(path=ctx, tag=tag, rm=True, labels=labels)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Harness:
    root = tmp_path_factory.mktemp("engine-pool")
    h = Harness(root, redis_server.url, dict(FAST_TIMINGS))
    write_config(h.config, TEST_IMAGE)
    assert h.cli("db", "upgrade").returncode == 0
    return h


def doctor(h: Harness, *args: str, **env: str) -> tuple[int, dict[str, dict[str, str]]]:
    """``ci-pool doctor --json --skip-bench`` for linux; its exit code and checks by name."""
    base = {k: v for k, v in h.env().items() if k != "DOCKER_HOST"}
    res = subprocess.run(
        [sys.executable, "-m", "ci_pool", "doctor", "--json", "--skip-bench",
         "--capability", "linux", *args],
        env={**base, **env}, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert "Traceback" not in res.stderr, res.stderr
    rows = json.loads(res.stdout)
    for row in rows:
        assert row["status"] == "ok" or row["fix"], row  # a problem says what fixes it
    return res.returncode, {r["name"]: r for r in rows}


def test_auto_takes_the_engine_that_answers_and_says_where_none_does(
    pool: Harness, busybox_image: str, podman_socket: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    dead_docker, dead_podman = f"unix://{tmp_path}/docker.sock", f"unix://{tmp_path}/podman.sock"
    # Docker's default socket answers: auto takes it (Podman is not asked).
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    chosen = container_engine.resolve("auto", dead_podman)
    assert (chosen.runtime, chosen.url) == ("docker", defaults.DOCKER_HOST)
    # Podman named, and it does not answer: only Podman is asked, though Docker answers.
    settings = Settings(home=tmp_path, container_runtime="podman", podman_host=dead_podman)
    with pytest.raises(ExecutorError) as refused:
        container_engine.connect(settings, ping=True)
    assert str(refused.value) == (
        f"no container engine answers at Podman at {dead_podman} (no socket there); start "
        f"`podman system service --time=0 {dead_podman}` or set CI_POOL_PODMAN_HOST"
    )
    # Only Podman's service answers: auto takes it, and the image is checked on it.
    rc, checks = doctor(
        pool, CI_POOL_CONTAINER_RUNTIME="auto", DOCKER_HOST=dead_docker,
        CI_POOL_PODMAN_HOST=podman_socket,
    )  # fmt: skip
    engine = checks["docker engine"]
    assert engine["status"] == "ok" and engine["detail"].startswith("Podman 4."), engine
    assert podman_socket in engine["detail"]
    assert checks["image linux"]["status"] == "ok"
    # The pinned tools run in the image on Podman too (the busybox test image has none).
    go = checks["tool linux go"]
    assert go["status"] == "warn", go
    assert go["detail"].startswith(f"go is missing from {TEST_IMAGE} (`go version`: "), go
    # None answers: one failure naming both sockets and how to start either engine.
    rc, checks = doctor(
        pool, CI_POOL_CONTAINER_RUNTIME="auto", DOCKER_HOST=dead_docker,
        CI_POOL_PODMAN_HOST=dead_podman,
    )  # fmt: skip
    assert rc == 1
    assert checks["docker engine"]["status"] == "fail"
    assert checks["docker engine"]["detail"] == (
        f"no container engine answers at Docker at {dead_docker} (no socket there); Podman at "
        f"{dead_podman} (no socket there); start dockerd (systemctl start docker) or set "
        f"DOCKER_HOST, or start `podman system service --time=0 {dead_podman}` or set "
        "CI_POOL_PODMAN_HOST"
    )
    # A runtime that does not exist is refused with the key to fix.
    bad = subprocess.run(
        [sys.executable, "-m", "ci_pool", "doctor", "--skip-bench"],
        env={**pool.env(), "CI_POOL_CONTAINER_RUNTIME": "lxc"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "container_runtime" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr


def test_doctor_checks_each_pinned_tool_in_the_image(
    pool: Harness, docker_client: Any, request: pytest.FixtureRequest
) -> None:
    build_tools_image(
        docker_client, TOOLS_IMAGE, {defaults.LABEL_IMAGE_SOURCE: "worker_images/linux"}
    )
    request.addfinalizer(lambda: docker_client.images.remove(TOOLS_IMAGE, force=True))
    config = pool.root / "tools.toml"
    write_config(config, TOOLS_IMAGE)
    rc, checks = doctor(pool, CI_POOL_CONFIG=str(config), CI_POOL_CONTAINER_RUNTIME="docker")
    pinned = "in worker_images/linux/Dockerfile"
    go, node = checks["tool linux go"], checks["tool linux node"]
    rust, flutter = checks["tool linux rust"], checks["tool linux flutter"]
    assert go["status"] == "ok"
    assert go["detail"] == (
        f"go {PINS['GO_VERSION']} in {TOOLS_IMAGE} (pinned GO_VERSION={PINS['GO_VERSION']} "
        f"{pinned})"
    )
    assert flutter["status"] == "ok"
    assert node["status"] == "fail"
    assert node["detail"] == (
        f"node is 23.1.0 in {TOOLS_IMAGE}, pinned NODE_VERSION={PINS['NODE_VERSION']} {pinned}"
    )
    assert node["fix"] == "rebuild the image from the pins: ci-pool images build linux"
    assert rust["status"] == "fail"
    assert rust["detail"].startswith(f"rust is missing from {TOOLS_IMAGE} (`rustc --version`: ")
    assert "not found" in rust["detail"]
    assert rc == 1
    # The probe's container is gone.
    left = docker_client.containers.list(all=True, filters={"label": defaults.LABEL_DOCTOR})
    assert left == []


def test_tools_of_an_image_not_built_from_the_dockerfile_only_warn(
    pool: Harness, docker_client: Any
) -> None:
    tag = "ci-pool-test/fake-tools-own:latest"
    build_tools_image(docker_client, tag, {})
    try:
        config = pool.root / "tools-own.toml"
        write_config(config, tag)
        rc, checks = doctor(pool, CI_POOL_CONFIG=str(config), CI_POOL_CONTAINER_RUNTIME="docker")
    finally:
        docker_client.images.remove(tag, force=True)
    node = checks["tool linux node"]
    assert node["status"] == "warn"
    assert f"{tag} was not built from worker_images/linux/Dockerfile" in node["fix"]
    assert checks["tool linux rust"]["status"] == "warn"
    assert rc == 0
