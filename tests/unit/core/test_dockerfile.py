"""The images a container action's Dockerfile uses, which the runner checks against the
capability before building it."""

from __future__ import annotations

import pytest

from ci_pool.core.capabilities import Capability
from ci_pool.core.dockerfile import base_images


@pytest.mark.parametrize(
    ("text", "images"),
    [
        ("FROM scratch\nCOPY a /a\n", []),
        ("from debian:12\n", ["debian:12"]),
        ("FROM --platform=linux/amd64 debian:12 AS build\nFROM build\n", ["debian:12"]),
        ("FROM a AS one\nFROM scratch\nCOPY --from=one /x /x\nCOPY --from=0 /y /y\n", ["a"]),
        ("FROM scratch\nCOPY --from=evil:1 /x /x\n", ["evil:1"]),
        ("FROM scratch\nRUN --mount=type=bind,from=evil:2,target=/m true\n", ["evil:2"]),
        ("# FROM hidden:1\nFROM \\\n  split:2\n", ["split:2"]),
        ("FROM build AS build\n", ["build"]),  # a stage cannot name itself
    ],
)
def test_images_of_a_dockerfile(text: str, images: list[str]) -> None:
    assert base_images(text) == images


def test_an_image_behind_a_build_variable_is_refused_with_its_line() -> None:
    with pytest.raises(ValueError, match=r"^act/Dockerfile:3: \$\{BASE\} uses a build variable"):
        base_images("ARG BASE=x\n\nFROM ${BASE}\n", "act/Dockerfile")
    with pytest.raises(ValueError, match=r"Dockerfile:2: \$img uses a build variable"):
        base_images("FROM scratch\nCOPY --from=$img /a /a\n")


def test_a_capability_allows_its_own_image_and_more_only_with_override() -> None:
    cap = Capability(name="linux", queue="linux", image="ci/linux")
    assert cap.allows_image("ci/linux") and cap.allows_image("ci/linux:latest")
    assert not cap.allows_image("ci/linux:other") and not cap.allows_image("alpine")
    assert Capability(name="x", queue="x", allow_container_override=True).allows_image("alpine")


@pytest.mark.parametrize("value", ["usr", "/usr/../etc", "./node"])
def test_node_runtime_must_be_an_absolute_directory(value: str) -> None:
    with pytest.raises(ValueError, match="must be an absolute directory holding bin/node"):
        Capability(name="linux", queue="linux", node_runtime=value)
    assert Capability(name="l", queue="l", node_runtime="/opt/node/").node_runtime == "/opt/node"
