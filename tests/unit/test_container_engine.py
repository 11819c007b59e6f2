"""Which sockets each ``container_runtime`` asks, in which order, and the error that says
where it asked when none answers."""

from __future__ import annotations

import pytest

from ci_pool import container_engine, defaults
from ci_pool.container_engine import Endpoint
from ci_pool.exceptions import ExecutorError

PODMAN = "unix:///srv/podman.sock"


def test_auto_asks_docker_first_then_podman(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert container_engine.endpoints("auto", PODMAN) == [
        Endpoint("docker", defaults.DOCKER_HOST),
        Endpoint("podman", PODMAN),
    ]
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2376")
    assert container_engine.endpoints("docker", PODMAN) == [
        Endpoint("docker", "tcp://127.0.0.1:2376")
    ]
    assert container_engine.endpoints("podman", "") == [Endpoint("podman", defaults.PODMAN_HOST)]


def test_an_unknown_runtime_names_the_setting() -> None:
    with pytest.raises(ExecutorError, match="container_runtime 'lxc' is not one of auto"):
        container_engine.endpoints("lxc", PODMAN)


def test_the_error_names_only_the_engines_asked() -> None:
    docker_only = container_engine.unavailable(
        [(Endpoint("docker", defaults.DOCKER_HOST), "connection refused")]
    )
    assert docker_only == (
        f"no container engine answers at Docker at {defaults.DOCKER_HOST} (connection "
        "refused); start dockerd (systemctl start docker) or set DOCKER_HOST"
    )
    podman_only = container_engine.unavailable([(Endpoint("podman", PODMAN), "no socket there")])
    assert "podman system service --time=0 unix:///srv/podman.sock" in podman_only
    assert "dockerd" not in podman_only
