"""A job's service containers (``services:``) on a Docker network of its own.

The network is ``internal`` and labelled with the job and attempt, as are the services, so
``remove_leftovers`` and the runner's sweep remove them with the job's container. For a
container job the host gets no address on the network (``NETWORK_NO_HOST_ADDRESS``): the
containers on it have no gateway, so nothing on it can reach past it even where dockerd
runs with ``--iptables=false`` and cannot enforce ``internal`` itself. A host job reaches
its services through loopback ports the runner relays (``PortRelay``); Docker publishes no
port of an internal network.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import stat
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import EndpointConfig, Healthcheck, Mount

from ci_pool import container_engine, defaults
from ci_pool.core.capabilities import Capability
from ci_pool.core.services import ContainerOptions, ServiceSpec, memory_bytes
from ci_pool.exceptions import ExecutorError
from ci_pool.worker.executors.base import JobContext

ENGINE_ERRORS = container_engine.ENGINE_ERRORS
_NS = 1_000_000_000
#: Connections one relayed port carries at once.
_RELAY_CONNECTIONS = 64


def job_labels(ctx: JobContext) -> dict[str, str]:
    return {
        defaults.LABEL_JOB: ctx.job_id,
        defaults.LABEL_RUNNER: ctx.runner_id,
        defaults.LABEL_ATTEMPT: str(ctx.attempt),
    }


def _healthcheck(service: ServiceSpec) -> Healthcheck | None:
    health = service.parsed_options.health
    if health is None:
        return None
    return Healthcheck(
        test=["CMD-SHELL", health.cmd],
        interval=int(health.interval * _NS),
        timeout=int(health.timeout * _NS),
        retries=health.retries,
        start_period=int(health.start_period * _NS),
    )


class PortRelay:
    """A loopback port on the host whose connections are relayed to one service port."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="ci-pool-relay").start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return  # closed
            with self._lock:
                if len(self._open) >= 2 * _RELAY_CONNECTIONS:
                    conn.close()
                    continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            conn.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.update((conn, upstream))
        pump = threading.Thread(target=self._pump, args=(upstream, conn), daemon=True)
        pump.start()
        self._pump(conn, upstream)
        pump.join()
        with self._lock:
            self._open.difference_update((conn, upstream))
        conn.close()
        upstream.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.server.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def bridge_name(job_id: str, attempt: int) -> str:
    """The Linux bridge of a host job's service network (at most 15 characters)."""
    return "cip" + hashlib.sha256(f"{job_id}-{attempt}".encode()).hexdigest()[:11]


def _stop_forwarding(bridge: str) -> str:
    """Turn off IPv4 forwarding of packets that arrive on ``bridge``: the services of a host
    job then reach the host's own addresses only. "off", or why it stays on."""
    try:
        with open(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding", "w") as knob:
            knob.write("0")
    except OSError as exc:
        return f"host policy ({exc.strerror})"
    return "off"


class ServiceSet:
    """Starts, waits for and removes the services of one job attempt."""

    def __init__(self, client: docker.DockerClient, ctx: JobContext, *, host_job: bool):
        self.client, self.ctx, self.host_job = client, ctx, host_job
        self.network_name = f"ci-pool-{ctx.job_id}-{ctx.attempt}"
        self.network: Any = None
        self.containers: dict[str, Any] = {}
        self.relays: list[PortRelay] = []
        #: Service name -> container port -> loopback port (host jobs).
        self.ports: dict[str, dict[str, str]] = {}
        #: A host job's network keeps a host address (the relays need it); its bridge
        #: forwards nothing where the runner may say so.
        self.bridge = bridge_name(ctx.job_id, ctx.attempt)
        self.forwarding = ""

    def start(self, stopping: threading.Event) -> None:
        """Create the network and every service, then wait until all are ready."""
        self.launch()
        self.ready(stopping)

    def launch(self) -> None:
        """Create the network and start every service (without waiting for them)."""
        options = (
            {defaults.NETWORK_BRIDGE_NAME: self.bridge}
            if self.host_job
            else {defaults.NETWORK_NO_HOST_ADDRESS: "true"}
        )
        try:
            self.network = self.client.networks.create(
                self.network_name,
                driver="bridge",
                internal=True,
                labels=job_labels(self.ctx),
                options=options,
            )
            if self.host_job:
                self.forwarding = _stop_forwarding(self.bridge)
            for service in self.ctx.services:
                self.containers[service.name] = self._create(service)
            for container in self.containers.values():
                container.start()
        except docker.errors.ImageNotFound as exc:
            raise ExecutorError(
                f"a service image is not on this runner: {exc.explanation}"
            ) from None
        except ENGINE_ERRORS as exc:
            raise ExecutorError(f"docker could not start the job's services: {exc}") from exc

    def ready(self, stopping: threading.Event) -> None:
        """Wait until every service is ready; then relay the ports of a host job's."""
        self._wait(stopping)
        if self.host_job:
            self._relay()

    def _create(self, service: ServiceSpec) -> Any:
        cap, opts = self.ctx.capability, service.parsed_options
        kwargs: dict[str, Any] = {
            "image": service.image,
            "name": f"{self.network_name}-{service.name}",
            "labels": {**job_labels(self.ctx), defaults.LABEL_SERVICE: service.name},
            "environment": {**opts.env, **service.env},
            "network": self.network_name,
            "networking_config": {
                self.network_name: EndpointConfig(
                    self.client.api.api_version, aliases=[service.name]
                )
            },
            "detach": True,
        }
        health = _healthcheck(service)
        if health is not None:
            kwargs["healthcheck"] = health
        if opts.entrypoint is not None:
            kwargs["entrypoint"] = opts.entrypoint
        if opts.workdir is not None:
            kwargs["working_dir"] = opts.workdir
        if opts.user is not None:
            kwargs["user"] = opts.user
        if cap.pids_limit:
            kwargs["pids_limit"] = cap.pids_limit
        if cap.memory:
            kwargs["mem_limit"] = memory_bytes(cap.memory, "memory")
        if cap.cpus:
            kwargs["nano_cpus"] = int(cap.cpus * 1e9)
        kwargs.update(limits(opts, cap))
        return create_with_login(self.client, kwargs, self.ctx.service_auth.get(service.name))

    def _deadline(self) -> float:
        waits = [
            s.parsed_options.health.longest_wait
            for s in self.ctx.services
            if s.parsed_options.health is not None
        ]
        wait = min(max(waits, default=0.0) + 10.0, defaults.SERVICE_START_TIMEOUT)
        return time.monotonic() + wait

    def _wait(self, stopping: threading.Event) -> None:
        """Until every service runs and those with a health check are healthy."""
        deadline = self._deadline()
        pending = dict(self.containers)
        while pending:
            for name, container in list(pending.items()):
                if self._ready(name, container):
                    del pending[name]
            if not pending or stopping.is_set():
                return
            if time.monotonic() > deadline:
                name, container = next(iter(pending.items()))
                self._fail(name, container, "did not become healthy in time")
            time.sleep(0.2)

    def _ready(self, name: str, container: Any) -> bool:
        try:
            container.reload()
        except ENGINE_ERRORS as exc:
            raise ExecutorError(f"service {name!r}: docker could not inspect it: {exc}") from exc
        state = container.attrs.get("State") or {}
        if state.get("Status") in ("exited", "dead"):
            self._fail(name, container, f"exited with code {state.get('ExitCode')}")
        # Podman reports {"Status": ""} for a container without a health check.
        health = (state.get("Health") or {}).get("Status") or None
        if health == "unhealthy":
            self._fail(name, container, "is unhealthy")
        return state.get("Status") == "running" and health in (None, "healthy")

    def _fail(self, name: str, container: Any, what: str) -> None:
        state = container.attrs.get("State") or {}
        checks = (state.get("Health") or {}).get("Log") or []
        last = str(checks[-1].get("Output", "")).strip()[-500:] if checks else ""
        try:
            tail = container.logs(tail=defaults.SERVICE_LOG_TAIL).decode(errors="replace")
        except ENGINE_ERRORS:
            tail = ""
        detail = f"; last health check: {last!r}" if last else ""
        logs = f"; log tail:\n{tail.strip()}" if tail.strip() else "; it logged nothing"
        raise ExecutorError(f"service {name!r} {what}{detail}{logs}")

    def _relay(self) -> None:
        for service in self.ctx.services:
            container = self.containers[service.name]
            networks = container.attrs["NetworkSettings"]["Networks"]
            address = networks[self.network_name]["IPAddress"]
            mapped = self.ports.setdefault(service.name, {})
            for port in service.ports:
                relay = PortRelay((address, port))
                self.relays.append(relay)
                mapped[str(port)] = str(relay.port)

    def context(self) -> dict[str, Any]:
        """``job.services``: each service's id, network and mapped ports."""
        return {
            name: {
                "id": str(container.id),
                "network": self.network_name,
                "ports": self.ports.get(name, {}),
            }
            for name, container in self.containers.items()
        }

    def close(self) -> None:
        for relay in self.relays:
            relay.close()
        self.relays.clear()
        try:
            for container in self.containers.values():
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True, v=True)
            self.containers.clear()
            if self.network is not None:
                with contextlib.suppress(docker.errors.NotFound):
                    self.network.remove()
                self.network = None
        except ENGINE_ERRORS as exc:
            raise ExecutorError(f"could not remove the job's services: {exc}") from exc


def remove_networks(client: docker.DockerClient, labels: list[str]) -> int:
    """Remove the job networks carrying ``labels`` (their containers must be gone)."""
    found = client.networks.list(filters={"label": labels})
    for network in found:
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()
    return len(found)


def attempt_of(labels: Mapping[str, Any]) -> tuple[str, int] | None:
    """(job id, attempt) a container's or network's labels name, if they name one."""
    attempt = str(labels.get(defaults.LABEL_ATTEMPT, ""))
    job = labels.get(defaults.LABEL_JOB)
    return (str(job), int(attempt)) if job and attempt.isdigit() else None


def network_leftovers(client: docker.DockerClient) -> list[tuple[str, int]]:
    """(job id, attempt) of every job network still here."""
    try:
        found = client.networks.list(
            filters={"label": [defaults.LABEL_JOB, defaults.LABEL_ATTEMPT]}
        )
    except ENGINE_ERRORS:
        return []
    pairs = (attempt_of(network.attrs.get("Labels") or {}) for network in found)
    return [pair for pair in pairs if pair is not None]


def workspace_dir(workspace: Path, relative: str) -> Path:
    """``relative`` inside the workspace as a real directory (made if missing), never
    through a symlink the checkout could have planted."""
    path = workspace
    for part in (p for p in relative.split("/") if p not in ("", ".")):
        path = path / part
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            path.mkdir()
            continue
        if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
            raise ExecutorError(
                f"volume source ./{relative}: {path.relative_to(workspace)} is not a directory "
                "of the workspace (a symlink or a file); mount a plain directory"
            )
    return path


def limits(opts: ContainerOptions, cap: Capability) -> dict[str, Any]:
    """``--cpus`` and ``--memory`` asked for, where they are below the capability's."""
    out: dict[str, Any] = {}
    if opts.cpus is not None and (cap.cpus is None or opts.cpus < cap.cpus):
        out["nano_cpus"] = int(opts.cpus * 1e9)
    cap_memory = memory_bytes(cap.memory, "memory") if cap.memory else None
    if opts.memory is not None and (cap_memory is None or opts.memory < cap_memory):
        out["mem_limit"] = opts.memory
    return out


def container_settings(ctx: JobContext) -> dict[str, Any]:
    """``docker create`` arguments from the job's ``container:`` settings: the user and
    limits of its options and its workspace volumes."""
    spec = ctx.container
    if spec is None:
        return {}
    opts = spec.parsed_options
    out = limits(opts, ctx.capability)
    if opts.user is not None:
        out["user"] = opts.user
    if opts.env:
        out["environment"] = dict(opts.env)
    mounts = []
    for volume in spec.volumes:
        source, target, *mode = volume.split(":")
        host = workspace_dir(ctx.workspace, source[2:])
        mounts.append(Mount(target, str(host), type="bind", read_only=mode == ["ro"]))
    if mounts:
        out["mounts"] = mounts
    return out


def create_with_login(
    client: docker.DockerClient, kwargs: dict[str, Any], auth: dict[str, str] | None
) -> Any:
    """Create a container; with a registry login its image is pulled first, every time:
    the job's own login must grant the image, even when this runner holds it already from
    an earlier job's pull (an up-to-date pull only checks the manifest)."""
    if auth is not None:
        pull_image(client, kwargs["image"], auth)
    return client.containers.create(**kwargs)


def pull_image(client: docker.DockerClient, image: str, auth: dict[str, str]) -> None:
    """Pull the job's image with its registry login; the error never repeats the login."""
    repository, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    try:
        client.images.pull(repository, tag=tag or "latest", auth_config=auth)
    except ENGINE_ERRORS as exc:
        reason = str(exc).replace(auth.get("password", "\0"), "***")
        raise ExecutorError(
            f"image {image!r} is not on this runner and could not be pulled with the job's "
            f"credentials: {reason}"
        ) from None


def docker_client() -> docker.DockerClient:
    """A client of the local engine, for the services of a host job."""
    try:
        return container_engine.connect(timeout=60, ping=True)
    except ExecutorError as exc:
        raise ExecutorError(f"the job has services, and {exc}") from exc


def _labelled(client: docker.DockerClient, labels: list[str]) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": labels}))


def remove_job_objects(job_id: str, attempt: int | None = None) -> int:
    """Remove the labelled service containers and networks of a job (an attempt of it) on
    a runner without a Docker executor of its own; 0 when no engine answers."""
    labels = [f"{defaults.LABEL_JOB}={job_id}"]
    if attempt is not None:
        labels.append(f"{defaults.LABEL_ATTEMPT}={attempt}")
    containers, networks = _remove_labelled(labels)
    return len(containers) + networks


def remove_runner_objects(runner_id: str) -> set[tuple[str, int]]:
    """Remove every container and network ``runner_id`` made (its jobs', their services'
    and actions', its warm ones): a revoked runner leaves nothing running on its host.
    Returns the (job id, attempt) of the containers removed; none when no engine answers."""
    containers, _ = _remove_labelled([f"{defaults.LABEL_RUNNER}={runner_id}"])
    pairs = (attempt_of(c.labels) for c in containers)
    return {pair for pair in pairs if pair is not None}


def _remove_labelled(labels: list[str]) -> tuple[list[Any], int]:
    """Remove the containers, then the networks, carrying ``labels``: (the containers
    removed, the number of networks); nothing when no engine answers."""
    try:
        with contextlib.closing(container_engine.connect(timeout=10)) as client:
            found = _labelled(client, labels)
            for container in found:
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True, v=True)
            return found, remove_networks(client, labels)
    except (*ENGINE_ERRORS, ExecutorError):
        return [], 0


def job_objects() -> list[tuple[str, int]]:
    """(job id, attempt) of the service containers and networks on the local engine."""
    try:
        with contextlib.closing(container_engine.connect(timeout=10)) as client:
            found = _labelled(client, [defaults.LABEL_JOB, defaults.LABEL_ATTEMPT])
            pairs = set(network_leftovers(client))
    except (*ENGINE_ERRORS, ExecutorError):
        return []
    pairs.update(pair for c in found if (pair := attempt_of(c.labels)) is not None)
    return sorted(pairs)
