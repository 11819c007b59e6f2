"""Images built for docker actions are bounded per runner: past the count or byte bound the
least recently used images the runner stamped are removed, never the one just used nor
one a container still uses (real dockerd; images FROM the test busybox image)."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from ci_pool import defaults
from ci_pool.worker.actions.image import evict_images, stamp

pytestmark = pytest.mark.integration


@pytest.fixture
def action_images(docker_client: Any, busybox_image: str) -> Iterator[list[str]]:
    """Four tiny action images (their own tags; removed at the end whatever happened)."""
    tags = []
    for _ in range(4):
        tag = f"{defaults.ACTION_IMAGE_REPOSITORY}:test{uuid.uuid4().hex}"
        text = f"FROM {busybox_image}\nLABEL ci-pool.test={uuid.uuid4().hex}\n"
        docker_client.images.build(
            fileobj=io.BytesIO(text.encode()), tag=tag, rm=True, pull=False,
            labels={defaults.LABEL_ACTION_IMAGE: "test"},
        )  # fmt: skip
        tags.append(tag)
    yield tags
    for tag in tags:
        try:
            docker_client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass


def present(client: Any, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def test_the_least_recently_used_action_images_are_removed_never_one_in_use(
    docker_client: Any, action_images: list[str], tmp_path: Path
) -> None:
    a, b, c, d = action_images
    for tag in (a, b, c):  # used in this order: a is the oldest
        stamp(tmp_path, tag)
        time.sleep(0.01)
    # a job's container still runs from a
    box = docker_client.containers.run(
        a, ["sleep", "60"], detach=True, labels={"ci-pool.job": "test-action-images"}
    )
    try:
        removed = evict_images(docker_client, tmp_path, c, max_count=1, max_bytes=1 << 40)
        assert removed == [b]
        assert present(docker_client, a) and present(docker_client, c)
        assert not present(docker_client, b)
    finally:
        box.remove(force=True)
    # once no container uses it, a goes too; an image this runner never stamped stays
    assert evict_images(docker_client, tmp_path, c, max_count=1, max_bytes=1 << 40) == [a]
    assert present(docker_client, d)
    stamps = sorted(p.name for p in (tmp_path / defaults.ACTION_IMAGE_STAMPS).iterdir())
    assert stamps == [c.rsplit(":", 1)[1]]


def test_the_byte_bound_keeps_what_fits(
    docker_client: Any, action_images: list[str], tmp_path: Path
) -> None:
    a, b, c, _ = action_images
    size = int(docker_client.images.get(a).attrs["Size"])
    for tag in (a, b, c):
        stamp(tmp_path, tag)
        time.sleep(0.01)
    removed = evict_images(docker_client, tmp_path, c, max_count=10, max_bytes=2 * size + 1)
    assert removed == [a]
    assert present(docker_client, b) and present(docker_client, c)
