"""``ci-pool images build``: the linux image is buildable on a machine without registry
access (from the host's busybox) and a linux job then runs in it; what cannot be built
offline says why and what to do. Nothing here pulls: every build runs with --offline."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci_pool import defaults
from ci_pool.embedded import RedisServer
from tests.conftest import FAST_TIMINGS, GitServer, Harness, write_config

pytestmark = pytest.mark.integration

#: The base image of worker_images/linux, which this machine has no registry to pull.
DEBIAN_BASE = "debian:bookworm-20241111-slim"


@pytest.fixture
def linux_tag(docker_client: Any) -> Iterator[str]:
    """A tag of its own for the linux image, removed afterwards."""
    tag = f"ci-pool-test/linux-offline-{uuid.uuid4().hex[:8]}:latest"
    yield tag
    try:
        docker_client.images.remove(tag, force=True)
    except Exception:  # already gone
        pass


def _pool(root: Path, redis_server: RedisServer, linux_image: str, other: str) -> Harness:
    root.mkdir()
    h = Harness(root, redis_server.url.rsplit("/", 1)[0] + "/9", dict(FAST_TIMINGS))
    # write_config names one image for every capability; linux gets its own tag here.
    write_config(h.config, other)
    text = h.config.read_text().replace(
        f'[capabilities.linux]\nimage = "{other}"', f'[capabilities.linux]\nimage = "{linux_image}"'
    )
    h.config.write_text(text)
    return h


def test_offline_build_of_linux_runs_a_linux_job(
    tmp_path: Path,
    redis_server: RedisServer,
    busybox_image: str,
    git_server: GitServer,
    docker_client: Any,
    linux_tag: str,
) -> None:
    try:
        docker_client.images.get(DEBIAN_BASE)
        pytest.skip(f"{DEBIAN_BASE} is here: the offline fallback would not be taken")
    except Exception:
        pass
    h = _pool(tmp_path / "pool", redis_server, linux_tag, busybox_image)
    try:
        res = h.cli("images", "build", "linux", "--offline", timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Traceback" not in res.stderr
        # It says plainly that this is the small busybox image, not worker_images/linux.
        assert f"built {linux_tag}" in res.stdout
        assert "busybox" in res.stdout and "not the full toolchain" in res.stdout
        assert DEBIAN_BASE in res.stdout  # why the Dockerfile was not used
        image = docker_client.images.get(linux_tag)
        assert image.labels[defaults.LABEL_IMAGE_SOURCE] == "busybox (offline)"

        h.start_worker("linux")
        job = h.submit(git_server, "echo in-the-offline-image; cat VERSION")
        h.wait_state(job, "succeeded", timeout=90)
        pool = h.pool()
        log = pool.store.read_log(job, 1)
        assert "in-the-offline-image" in log and "1.2.3" in log
        evidence = pool.get(job).evidence
        assert evidence is not None and evidence.mode == "docker"
        assert evidence.image == linux_tag
    finally:
        h.stop()


def test_offline_build_without_the_base_image_fails_with_what_to_do(
    tmp_path: Path, redis_server: RedisServer, busybox_image: str, docker_client: Any
) -> None:
    tag = f"ci-pool-test/android-{uuid.uuid4().hex[:8]}:latest"
    h = _pool(tmp_path / "pool", redis_server, busybox_image, tag)
    res = h.cli("images", "build", "android", "iso", "--offline")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert f"android: its base image {DEBIAN_BASE} is not here" in res.stderr
    assert f"docker pull {DEBIAN_BASE}" in res.stderr
    assert 'iso runs on the host (mode = "host")' in res.stderr
    with pytest.raises(Exception, match=r"No such image|not found"):
        docker_client.images.get(tag)


def test_unknown_capability_is_refused_with_the_list(
    tmp_path: Path, redis_server: RedisServer, busybox_image: str
) -> None:
    h = _pool(tmp_path / "pool", redis_server, busybox_image, busybox_image)
    res = h.cli("images", "build", "linx")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "no capability matches 'linx'" in res.stderr and "linux" in res.stderr
