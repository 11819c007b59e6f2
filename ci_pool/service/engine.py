"""Doctor's view of the Docker engine a runner uses: its version and storage driver, the
capabilities' images, whether container limits hold, and what nesting costs against
host mode on a small build-like workload."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import docker
import docker.errors

from ci_pool import container_engine, defaults
from ci_pool.core.capabilities import Capability
from ci_pool.embedded import build_busybox_image
from ci_pool.exceptions import ExecutorError
from ci_pool.service import workload
from ci_pool.service.doctor import Check, Status
from ci_pool.service.images import ENGINE_ERRORS
from ci_pool.service.toolchecks import tool_checks
from ci_pool.settings import Settings

ENGINE_FIX = (
    "start dockerd (systemctl start docker) or set DOCKER_HOST, or start `podman system "
    'service` (container_runtime = "podman"); or run the capability on '
    'the host: mode = "host" in its [capabilities.<name>] table'
)


def engine_checks(
    caps: list[Capability], *, bench: bool = True, settings: Settings | None = None
) -> list[Check]:
    """The engine, the images of ``caps`` (docker mode), limits and nesting overhead."""
    if not caps:
        return []
    try:
        endpoint = container_engine.engine(settings)
        client = container_engine.connect(settings, timeout=30)
        version = client.version()
        info = client.info()
    except ExecutorError as exc:
        return [Check("docker engine", Status.FAIL, str(exc), ENGINE_FIX)]
    except ENGINE_ERRORS as exc:
        return [Check("docker engine", Status.FAIL, f"no engine answers: {exc}", ENGINE_FIX)]
    try:
        checks = [
            Check(
                "docker engine",
                Status.OK,
                f"{endpoint.name} {version.get('Version', '?')} at {endpoint.url} "
                f"(API {version.get('ApiVersion', '?')}), storage driver {info.get('Driver', '?')}",
            ),
            cgroup_check(info),
        ]
        seen: set[str] = set()
        present: set[str] = set()
        for cap in caps:
            if cap.image not in seen:
                seen.add(cap.image)
                checks.append(image_check(client, cap))
                if checks[-1].status is Status.OK:
                    present.add(cap.image)
        for cap in caps:  # each capability's pins, in its image (shared images too)
            if cap.image in present:
                checks += tool_checks(client, cap)
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


def overhead_check(client: Any, runs: int = defaults.DOCTOR_BENCH_RUNS) -> Check:
    """The same build-like workload (service/workload.py, in small) in a container (the
    project in a bind mount, like a job's workspace) and on the host; nested Docker above
    the design's ratio is worth running in host mode."""
    name = "docker overhead"
    busybox = shutil.which("busybox")
    if not busybox:
        return Check(
            name, Status.WARN, "not measured: no busybox here to run the same shell in both",
            "apt-get install busybox-static (or skip with --skip-bench)",
        )  # fmt: skip
    try:
        try:
            client.images.get(defaults.DOCTOR_BENCH_IMAGE)
        except docker.errors.ImageNotFound:
            build_busybox_image(client, defaults.DOCTOR_BENCH_IMAGE, busybox)
        with tempfile.TemporaryDirectory(
            prefix="ci-pool-doctor-", ignore_cleanup_errors=True
        ) as tmp:
            project = workload.write_project(
                Path(tmp), defaults.DOCTOR_WORKLOAD_C_FILES, defaults.DOCTOR_WORKLOAD_TESTS
            )
            found = workload.compare(client, defaults.DOCTOR_BENCH_IMAGE, project, runs)
    except (*ENGINE_ERRORS, OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return Check(name, Status.WARN, f"not measured: {exc}", "ci-pool doctor --skip-bench")
    nested, host, ratio = found.nested, found.host, found.ratio
    detail = (
        f"container {nested:.3f} s vs host {host:.3f} s per run (x{ratio:.2f}, median of {runs}; "
        f"{project.describe()})"
    )
    if found.degraded:
        return Check(
            name, Status.WARN, f"{detail}: nested Docker costs over "
            f"{(defaults.DOCTOR_OVERHEAD_WARN - 1) * 100:.0f} % here",
            'run the capabilities on the host: mode = "host" in their [capabilities.<name>] '
            "tables (the jobs then share this machine)",
        )  # fmt: skip
    return Check(name, Status.OK, detail)
