"""Doctor's look inside the capabilities' images: every baseline tool their Dockerfile pins
(``ARG GO_VERSION=...``, see core/toolchains.py) runs in the image, one container per
image, and each tool gets its own line: the pinned version, another one, or missing."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from ci_pool import defaults
from ci_pool.core.capabilities import Capability
from ci_pool.core.toolchains import Finding, Verdict, pinned_tools, probe_script, read_probe
from ci_pool.service.doctor import Check, Status
from ci_pool.service.images import ENGINE_ERRORS, worker_images_dir

#: Seconds the tools of one image get to print their versions (a JVM or Flutter's first
#: start takes a few).
PROBE_TIMEOUT = 120


def tool_checks(client: Any, cap: Capability, root: Path | None = None) -> list[Check]:
    """One check per tool pinned in ``worker_images/<cap>/Dockerfile``, run in ``cap.image``.

    A tool missing or at another version fails when the image was built from that
    Dockerfile (``ci-pool images build``), and warns for an image made otherwise (an
    offline busybox stand-in, an operator's own image): the pins may not be meant for it."""
    dockerfile = (root or worker_images_dir()) / cap.name / "Dockerfile"
    if not dockerfile.is_file():
        return []
    tools = pinned_tools(dockerfile.read_text())
    if not tools:
        return []
    where = f"worker_images/{cap.name}/Dockerfile"
    try:
        labels = client.images.get(cap.image).attrs.get("Config", {}).get("Labels") or {}
        output = _probe(client, cap.image, probe_script(tools))
    except (*ENGINE_ERRORS, OSError) as exc:
        return [
            Check(
                f"tools {cap.name}", Status.FAIL,
                f"could not run the pinned tools of {where} in {cap.image}: {exc}",
                f"check that {cap.image} has a shell (sh): ci-pool images build {cap.name}",
            )
        ]  # fmt: skip
    built_from_it = labels.get(defaults.LABEL_IMAGE_SOURCE) == f"worker_images/{cap.name}"
    return [_check(cap, f, where, built_from_it) for f in read_probe(tools, output)]


def _check(cap: Capability, f: Finding, where: str, built_from_it: bool) -> Check:
    name = f"tool {cap.name} {f.tool.name}"
    pin = f"{f.tool.arg}={f.pinned} in {where}"
    if f.verdict is Verdict.OK:
        return Check(name, Status.OK, f"{f.tool.name} {f.found} in {cap.image} (pinned {pin})")
    status = Status.FAIL if built_from_it else Status.WARN
    if built_from_it:
        fix = f"rebuild the image from the pins: ci-pool images build {cap.name}"
    else:
        fix = (
            f"{cap.image} was not built from {where}: build it with `ci-pool images build "
            f"{cap.name}`, or install {f.tool.name} {f.pinned} in it"
        )
    if f.verdict is Verdict.WRONG:
        detail = f"{f.tool.name} is {f.found} in {cap.image}, pinned {pin}"
    else:
        detail = (
            f"{f.tool.name} is missing from {cap.image} (`{f.tool.command}`: {f.found}); "
            f"pinned {pin}"
        )
    return Check(name, status, detail, fix)


def _probe(client: Any, image: str, script: str) -> str:
    """The output of ``script`` run once in ``image``: no network, removed afterwards."""
    container = client.containers.create(
        image, [script], entrypoint=["sh", "-c"], network_mode="none",
        labels={defaults.LABEL_DOCTOR: "tools"},
    )  # fmt: skip
    try:
        container.start()
        container.wait(timeout=PROBE_TIMEOUT)
        return bytes(container.logs(stdout=True, stderr=True)).decode(errors="replace")
    finally:
        with contextlib.suppress(*ENGINE_ERRORS):
            container.remove(force=True)
