"""The container engine a runner talks to: Docker, or Podman through its Docker-compatible
API (``podman system service``). Every docker-py client of ci-pool comes from here, so the
``container_runtime`` setting holds for jobs, warm containers, services, container actions,
image builds and ``doctor`` alike; ``auto`` takes the first engine whose socket answers."""

from __future__ import annotations

import contextlib
import io
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests

from ci_pool import defaults
from ci_pool.exceptions import ExecutorError

if TYPE_CHECKING:
    from ci_pool.settings import Settings

#: What docker-py raises when the engine fails or is not there.
ENGINE_ERRORS = (docker.errors.DockerException, requests.RequestException)

_NAMES = {"docker": "Docker", "podman": "Podman"}


@dataclass(frozen=True)
class Endpoint:
    """One engine's socket: ``runtime`` is ``docker`` or ``podman``."""

    runtime: str
    url: str

    @property
    def name(self) -> str:
        return _NAMES[self.runtime]


def endpoints(runtime: str, podman_host: str) -> list[Endpoint]:
    """The sockets ``runtime`` may use, in the order ``auto`` tries them."""
    if runtime not in ("auto", *_NAMES):
        raise ExecutorError(
            f"container_runtime {runtime!r} is not one of auto, docker, podman: set "
            "CI_POOL_CONTAINER_RUNTIME (or container_runtime in ci-pool.toml) to one of them"
        )
    found = []
    if runtime in ("auto", "docker"):
        found.append(Endpoint("docker", os.environ.get("DOCKER_HOST") or defaults.DOCKER_HOST))
    if runtime in ("auto", "podman"):
        found.append(Endpoint("podman", podman_host or defaults.PODMAN_HOST))
    return found


def unavailable(tried: list[tuple[Endpoint, str]]) -> str:
    """The error for engines that did not answer: where each was asked, and how to start one."""
    where = "; ".join(f"{e.name} at {e.url} ({why})" for e, why in tried)
    podman = next((e.url for e, _ in tried if e.runtime == "podman"), defaults.PODMAN_HOST)
    starts = []
    if any(e.runtime == "docker" for e, _ in tried):
        starts.append("start dockerd (systemctl start docker) or set DOCKER_HOST")
    if any(e.runtime == "podman" for e, _ in tried):
        starts.append(f"start `podman system service --time=0 {podman}` or set CI_POOL_PODMAN_HOST")
    return f"no container engine answers at {where}; {', or '.join(starts)}"


class EngineClient(docker.DockerClient):  # type: ignore[misc]
    """A docker-py client that knows which engine it talks to ("docker" or "podman")."""

    runtime = "docker"


def client_for(endpoint: Endpoint, timeout: float) -> EngineClient:
    """A docker-py client of ``endpoint`` (Docker's keeps DOCKER_TLS_VERIFY/CERT_PATH)."""
    if endpoint.runtime == "docker" and os.environ.get("DOCKER_HOST"):
        client: EngineClient = EngineClient.from_env(timeout=int(timeout))
    else:
        client = EngineClient(base_url=endpoint.url, timeout=int(timeout))
    client.runtime = endpoint.runtime
    return client


#: The header of each frame of an attached exec's output: stream, 3 zero bytes, length.
_FRAME = struct.Struct(">BxxxL")


def exec_output(api: Any, exec_id: str) -> Iterator[bytes]:
    """Start the created exec ``exec_id`` (no tty) and yield its output as the engine sends it.

    docker-py reads an attached exec's frames from the socket under the HTTP response, past
    the response's read buffer: output the engine sent before the client had read the
    response's headers (a command that prints at once and exits, on a busy host) sits in
    that buffer and is lost. Here every frame is read through the buffer. An engine reached
    another way (ssh) keeps docker-py's reader; a connection that drops ends the output, as
    docker-py's does (the exec's inspect then says what happened)."""
    stream = api.exec_start(exec_id, stream=True)
    fp = getattr(getattr(getattr(stream, "_response", None), "raw", None), "_fp", None)
    fp = getattr(fp, "fp", None)
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    try:
        if not isinstance(fp, io.BufferedReader) or sock is None:
            yield from stream
            return
        sock.settimeout(None)  # a step may be silent for longer than the client's timeout
        while True:
            header = fp.read(_FRAME.size)
            if len(header) < _FRAME.size:
                return
            _, left = _FRAME.unpack(header)
            while left:
                data = fp.read1(left)  # what has come of the frame so far
                if not data:
                    return
                left -= len(data)
                yield data
    except OSError:
        return
    finally:
        stream.close()


def runtime_of(client: object) -> str:
    """The engine behind a docker-py client ("docker" unless it came from ``connect``)."""
    return str(getattr(client, "runtime", "docker"))


#: What a failed connection to a socket means, by the error docker-py wraps.
_CAUSES = (
    ("FileNotFoundError", "no socket there"),
    ("ConnectionRefusedError", "connection refused"),
    ("PermissionError", "permission denied"),
)


def _why(exc: Exception) -> str:
    text = str(exc).split("\n", 1)[0]
    for marker, meaning in _CAUSES:
        if marker in text:
            return meaning
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


_chosen: dict[tuple[str, str, str], Endpoint] = {}
_lock = threading.Lock()


def resolve(runtime: str, podman_host: str) -> Endpoint:
    """The engine to use: the one named, or for ``auto`` the first that answers a ping
    (remembered for the process once found; a failure is asked again next time)."""
    candidates = endpoints(runtime, podman_host)
    if len(candidates) == 1:
        return candidates[0]
    key = (runtime, podman_host, os.environ.get("DOCKER_HOST", ""))
    with _lock:
        if key in _chosen:
            return _chosen[key]
    tried: list[tuple[Endpoint, str]] = []
    for endpoint in candidates:
        try:
            with contextlib.closing(client_for(endpoint, defaults.ENGINE_PROBE_TIMEOUT)) as c:
                c.ping()
        except ENGINE_ERRORS as exc:
            tried.append((endpoint, _why(exc)))
            continue
        with _lock:
            _chosen[key] = endpoint
        return endpoint
    raise ExecutorError(unavailable(tried))


def _configured(settings: Settings | None) -> tuple[str, str]:
    if settings is None:
        from ci_pool.settings import get_settings

        settings = get_settings()
    return settings.container_runtime, settings.podman_host


def engine(settings: Settings | None = None) -> Endpoint:
    """The endpoint ``settings`` (default: the process's settings) select."""
    return resolve(*_configured(settings))


def connect(
    settings: Settings | None = None, *, timeout: float = 60, ping: bool = False
) -> EngineClient:
    """A client of the configured engine; with ``ping`` it must answer, else ExecutorError
    saying where it was asked and how to start it."""
    endpoint = engine(settings)
    try:
        client = client_for(endpoint, timeout)
    except ENGINE_ERRORS as exc:
        raise ExecutorError(unavailable([(endpoint, _why(exc))])) from exc
    if ping:
        try:
            client.ping()
        except ENGINE_ERRORS as exc:
            client.close()
            raise ExecutorError(unavailable([(endpoint, _why(exc))])) from exc
    return client


def available(settings: Settings | None = None) -> bool:
    """Whether the configured engine answers here."""
    try:
        with contextlib.closing(connect(settings, timeout=defaults.ENGINE_PROBE_TIMEOUT)) as c:
            c.ping()
    except (*ENGINE_ERRORS, ExecutorError):
        return False
    return True
