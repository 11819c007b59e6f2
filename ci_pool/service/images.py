"""Job images of the capabilities: built from ``worker_images/<capability>/Dockerfile``
with docker-py or, for the default ``linux`` capability on a machine without registry
access, a small image around the host's static busybox (as ``ci-pool demo`` builds)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from ci_pool import container_engine, defaults
from ci_pool.core.capabilities import Capability
from ci_pool.embedded import build_busybox_image
from ci_pool.exceptions import CapabilityNotFound

#: What the Docker engine raises when it fails or goes away.
ENGINE_ERRORS = container_engine.ENGINE_ERRORS
#: The capability whose image may be built offline from busybox.
OFFLINE_CAPABILITY = "linux"
#: Value of the image-source label on the offline image.
BUSYBOX_SOURCE = "busybox (offline)"


def worker_images_dir() -> Path:
    """``worker_images/`` of the source tree, else of the current directory."""
    tree = Path(__file__).resolve().parents[2] / "worker_images"
    return tree if tree.is_dir() else Path.cwd() / "worker_images"


def base_images(dockerfile: str) -> list[str]:
    """The images a Dockerfile starts from (``ARG`` defaults resolved; no ``scratch``,
    no earlier stage)."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    bases: list[str] = []
    for line in dockerfile.replace("\\\n", " ").splitlines():
        words = line.split()
        if not words:
            continue
        keyword = words[0].upper()
        if keyword == "ARG" and len(words) > 1 and "=" in words[1]:
            name, _, value = words[1].partition("=")
            args.setdefault(name, value.strip("\"'"))
        elif keyword == "FROM" and len(words) > 1:
            ref = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), _from_ref(words))
            if len(words) >= 4 and words[-2].upper() == "AS":
                stages.add(words[-1])
            if ref and ref != "scratch" and ref not in stages and ref not in bases:
                bases.append(ref)
    return bases


def _from_ref(words: list[str]) -> str:
    """The image of a ``FROM [--platform=...] image [AS name]`` line."""
    rest = [w for w in words[1:] if not w.startswith("--")]
    return rest[0] if rest else ""


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What ``images build`` did for one capability."""

    capability: str
    image: str
    ok: bool
    #: What was built from what, or what went wrong and what to do.
    detail: str
    #: "dockerfile", "busybox" or "" (nothing built).
    source: str = ""


class ImageBuilder:
    """Builds the capabilities' job images on one Docker engine, reporting each build
    output line to ``on_line``."""

    def __init__(
        self,
        client: Any,
        capabilities: Mapping[str, Capability],
        root: Path,
        on_line: Callable[[str], None] = lambda _line: None,
        busybox: str | None = None,
    ):
        self.client = client
        self.capabilities = capabilities
        self.root = root
        self.on_line = on_line
        self.busybox = busybox if busybox is not None else shutil.which("busybox") or ""

    def targets(self, names: Iterable[str]) -> list[Capability]:
        """The named capabilities, or every docker-mode one whose image has a Dockerfile
        (one per image: ``audit`` shares linux's)."""
        names = list(names)
        if names:
            for name in names:
                if name not in self.capabilities:
                    raise CapabilityNotFound(name, list(self.capabilities))
            return [self.capabilities[n] for n in dict.fromkeys(names)]
        chosen: dict[str, Capability] = {}
        docker_caps = [c for c in self.capabilities.values() if c.mode == "docker"]
        for cap in sorted(docker_caps, key=lambda c: (not self._dockerfile(c).is_file(), c.name)):
            chosen.setdefault(cap.image, cap)
        return list(chosen.values())

    def _dockerfile(self, cap: Capability) -> Path:
        return self.root / cap.name / "Dockerfile"

    def _present(self, image: str) -> bool:
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            return False
        return True

    def build(self, cap: Capability, *, offline: bool = False) -> BuildResult:
        """Build one capability's image; never raises for a failed build."""
        if cap.mode != "docker":
            return BuildResult(
                cap.name, "", False, f"{cap.name} runs on the host (mode = \"host\"): it has no "
                "job image to build",
            )  # fmt: skip
        dockerfile = self._dockerfile(cap)
        fallback = cap.name == OFFLINE_CAPABILITY
        if not dockerfile.is_file():
            return self._fail(cap, f"there is no {dockerfile}; set capabilities.{cap.name}.image "
                              "to an image you build or pull")  # fmt: skip
        try:
            missing = [b for b in base_images(dockerfile.read_text()) if not self._present(b)]
            if offline and missing:
                why = f"its base image {missing[0]} is not here and --offline pulls nothing"
                if fallback:
                    return self._busybox(cap, why)
                return self._fail(cap, f"{why}; `docker pull {missing[0]}` on a machine with "
                                  "registry access (or `docker load` it here)")  # fmt: skip
            try:
                image_id = self._docker_build(cap, dockerfile)
            except _BuildFailed as exc:
                if fallback:
                    return self._busybox(cap, f"{dockerfile} did not build: {exc}")
                return self._fail(cap, f"{dockerfile} did not build: {exc}")
        except ENGINE_ERRORS as exc:
            return self._fail(cap, f"the Docker engine failed: {exc}")
        return BuildResult(
            cap.name, cap.image, True, f"built {cap.image} ({image_id[:19]}) from {dockerfile}",
            "dockerfile",
        )  # fmt: skip

    def _fail(self, cap: Capability, why: str) -> BuildResult:
        return BuildResult(cap.name, cap.image, False, why)

    def _docker_build(self, cap: Capability, dockerfile: Path) -> str:
        labels = {defaults.LABEL_IMAGE_SOURCE: f"worker_images/{cap.name}"}
        stream = self.client.api.build(
            path=str(dockerfile.parent), tag=cap.image, rm=True, forcerm=True, decode=True,
            labels=labels,
        )  # fmt: skip
        for chunk in stream:
            if "error" in chunk:
                raise _BuildFailed(str(chunk["error"]).strip().splitlines()[-1])
            text = str(chunk.get("stream", "")).rstrip()
            if text:
                self.on_line(text)
        return str(self.client.images.get(cap.image).id)

    def _busybox(self, cap: Capability, why: str) -> BuildResult:
        if not self.busybox:
            return self._fail(cap, f"{why}; and there is no busybox here to build the offline "
                              "image from: apt-get install busybox-static")  # fmt: skip
        self.on_line(f"{why}; building {cap.image} from {self.busybox} instead")
        build_busybox_image(
            self.client,
            cap.image,
            self.busybox,
            labels={defaults.LABEL_IMAGE_SOURCE: BUSYBOX_SOURCE},
        )
        image_id = str(self.client.images.get(cap.image).id)
        return BuildResult(
            cap.name, cap.image, True,
            f"built {cap.image} ({image_id[:19]}) from this machine's busybox (a small shell "
            f"image, not the full toolchain of worker_images/{cap.name}): {why}",
            "busybox",
        )  # fmt: skip


class _BuildFailed(Exception):
    """A Dockerfile step failed (its last error line)."""
