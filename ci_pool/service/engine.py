"""Doctor's view of the Docker engine a runner uses: its version and storage driver, the
capabilities' images, whether container limits hold, and what nesting costs against
host mode on a short shell workload."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import docker
import docker.errors
from docker.types import Mount

from ci_pool import defaults
from ci_pool.core.capabilities import Capability
from ci_pool.embedded import build_busybox_image
from ci_pool.service.doctor import Check, Status
from ci_pool.service.images import ENGINE_ERRORS

ENGINE_FIX = (
    "start dockerd (systemctl start docker) or set DOCKER_HOST; or run the capability on "
    'the host: mode = "host" in its [capabilities.<name>] table'
)
#: The overhead workload: shell arithmetic, then small files written, read and removed.
WORKLOAD = (
    'i=0; while [ "$i" -lt 20000 ]; do i=$((i+1)); done; '
    'n=0; while [ "$n" -lt 200 ]; do echo "$n" > "$1/f$n"; cat "$1/f$n" > /dev/null; '
    'n=$((n+1)); done; rm -f "$1"/f*'
)
_KEEPALIVE = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"


def engine_checks(caps: list[Capability], *, bench: bool = True) -> list[Check]:
    """The engine, the images of ``caps`` (docker mode), limits and nesting overhead."""
    if not caps:
        return []
    try:
        client = docker.from_env(timeout=30)
        version = client.version()
        info = client.info()
    except ENGINE_ERRORS as exc:
        return [Check("docker engine", Status.FAIL, f"no Docker engine answers: {exc}", ENGINE_FIX)]
    try:
        checks = [
            Check(
                "docker engine",
                Status.OK,
                f"Docker {version.get('Version', '?')} (API {version.get('ApiVersion', '?')}), "
                f"storage driver {info.get('Driver', '?')}",
            ),
            cgroup_check(info),
        ]
        seen: set[str] = set()
        for cap in caps:
            if cap.image not in seen:
                seen.add(cap.image)
                checks.append(image_check(client, cap))
        if bench:
            checks.append(overhead_check(client))
        return checks
    finally:
        client.close()


def cgroup_check(info: dict[str, Any]) -> Check:
    """The engine can enforce the capabilities' memory, pids and CPU limits."""
    where = f"cgroup v{info.get('CgroupVersion', '?')} ({info.get('CgroupDriver', '?')} driver)"
    missing = [
        what
        for what, key in (("memory", "MemoryLimit"), ("pids", "PidsLimit"), ("cpu", "CpuCfsQuota"))
        if not info.get(key)
    ]
    if missing:
        return Check(
            "cgroups docker", Status.FAIL,
            f"{where}: the engine cannot enforce {', '.join(missing)} limits",
            "enable the controllers (kernel: cgroup_enable=memory swapaccount=1; on Incus: "
            "security.nesting=true with the controllers delegated), then restart dockerd",
        )  # fmt: skip
    return Check("cgroups docker", Status.OK, f"{where}: memory, pids and cpu limits enforceable")


def image_check(client: Any, cap: Capability) -> Check:
    """The capability's image is on this engine: its id, digests and what it was built from."""
    name = f"image {cap.name}"
    try:
        image = client.images.get(cap.image)
    except docker.errors.ImageNotFound:
        return Check(
            name, Status.FAIL, f"{cap.image} is not on this engine: {cap.name} jobs cannot run",
            f"ci-pool images build {cap.name}",
        )  # fmt: skip
    except ENGINE_ERRORS as exc:
        return Check(name, Status.FAIL, f"cannot inspect {cap.image}: {exc}", ENGINE_FIX)
    digests = image.attrs.get("RepoDigests") or []
    labels = image.attrs.get("Config", {}).get("Labels") or {}
    source = labels.get(defaults.LABEL_IMAGE_SOURCE)
    detail = f"{cap.image} {image.id}"
    detail += f", digest {', '.join(digests)}" if digests else ", built here (no registry digest)"
    if source:
        detail += f", from {source}"
    return Check(name, Status.OK, detail)


def _timed(run: Callable[[], None], runs: int) -> float:
    """Median wall time of ``runs`` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def overhead_check(client: Any, runs: int = defaults.DOCTOR_BENCH_RUNS) -> Check:
    """The same busybox shell workload in a container (files in a bind mount, like a
    job's workspace) and on the host; nested Docker above the design's ratio is worth
    running in host mode."""
    name = "docker overhead"
    busybox = shutil.which("busybox")
    if not busybox:
        return Check(
            name, Status.WARN, "not measured: no busybox here to run the same shell in both",
            "apt-get install busybox-static (or skip with --skip-bench)",
        )  # fmt: skip
    container = None
    try:
        try:
            client.images.get(defaults.DOCTOR_BENCH_IMAGE)
        except docker.errors.ImageNotFound:
            build_busybox_image(client, defaults.DOCTOR_BENCH_IMAGE, busybox)
        with tempfile.TemporaryDirectory(prefix="ci-pool-doctor-") as tmp:
            container = client.containers.run(
                defaults.DOCTOR_BENCH_IMAGE, ["sh", "-c", _KEEPALIVE], detach=True,
                network_mode="none", labels={defaults.LABEL_DOCTOR: "bench"},
                mounts=[Mount("/bench", tmp, type="bind")],
            )  # fmt: skip

            def in_container() -> None:
                res = container.exec_run(["sh", "-c", WORKLOAD, "sh", "/bench"])
                if res.exit_code != 0:
                    raise RuntimeError(f"the workload exited {res.exit_code} in the container")

            def on_host() -> None:
                subprocess.run(
                    [busybox, "sh", "-c", WORKLOAD, "sh", tmp], check=True, timeout=120,
                    capture_output=True,
                )  # fmt: skip

            nested = _timed(in_container, runs)
            host = _timed(on_host, runs)
    except (*ENGINE_ERRORS, OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return Check(name, Status.WARN, f"not measured: {exc}", "ci-pool doctor --skip-bench")
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except ENGINE_ERRORS:
                pass
    ratio = nested / host if host > 0 else 1.0
    detail = (
        f"container {nested:.3f} s vs host {host:.3f} s per run (x{ratio:.2f}, median of {runs})"
    )
    if ratio > defaults.DOCTOR_OVERHEAD_WARN:
        return Check(
            name, Status.WARN, f"{detail}: nested Docker costs over "
            f"{(defaults.DOCTOR_OVERHEAD_WARN - 1) * 100:.0f} % here",
            'run the capabilities on the host: mode = "host" in their [capabilities.<name>] '
            "tables (the jobs then share this machine)",
        )  # fmt: skip
    return Check(name, Status.OK, detail)
