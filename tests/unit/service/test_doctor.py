"""Doctor's and the image builder's pure parts: URL redaction, disk thresholds, the base
images a Dockerfile needs and which capabilities ``images build`` builds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ci_pool import defaults
from ci_pool.exceptions import CapabilityNotFound
from ci_pool.service.doctor import Status, disk_checks, redact, store_check
from ci_pool.service.images import ImageBuilder, base_images, worker_images_dir
from ci_pool.settings import load_settings


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@10.0.0.5:6379/0", "redis://:***@10.0.0.5:6379/0"),
        ("rediss://ci:pw@redis.internal:6380/1", "rediss://ci:***@redis.internal:6380/1"),
        ("postgresql+psycopg://ci:p%40ss@db/ci_pool", "postgresql+psycopg://ci:***@db/ci_pool"),
    ],
)
def test_redact_hides_only_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_base_images_resolve_args_and_skip_scratch_and_stages() -> None:
    text = (
        "ARG BASE=debian:12\nFROM ${BASE} AS build\nRUN make \\\n  all\n"
        "FROM build\nFROM scratch\nFROM --platform=linux/amd64 alpine:3.20\n"
    )
    assert base_images(text) == ["debian:12", "alpine:3.20"]
    linux = (worker_images_dir() / "linux" / "Dockerfile").read_text()
    assert base_images(linux) == ["debian:bookworm-20241111-slim"]


def test_images_build_targets_every_docker_capability_once_per_image(tmp_path: Path) -> None:
    settings = load_settings(None, home=tmp_path)
    builder = ImageBuilder(None, settings.capabilities, worker_images_dir())
    names = [c.name for c in builder.targets(())]
    # iso runs on the host; audit shares linux's image and has no Dockerfile of its own.
    assert sorted(names) == ["android", "deploy", "flutter-web", "linux"]
    assert [c.name for c in builder.targets(["iso", "linux", "iso"])] == ["iso", "linux"]
    with pytest.raises(CapabilityNotFound, match="'linx'"):
        builder.targets(["linx"])


def test_disk_thresholds_warn_then_fail(tmp_path: Path) -> None:
    settings = load_settings(None, home=tmp_path / "not-yet")  # roots need not exist yet
    free = shutil.disk_usage(tmp_path).free
    for warn, fail, want in (
        (free // 2, free // 4, Status.OK),
        (free * 2, free // 2, Status.WARN),
        (free * 4, free * 2, Status.FAIL),
    ):
        checks = disk_checks(settings, warn_below=warn, fail_below=fail)
        assert [c.status for c in checks] == [want] * 3
        assert all(bool(c.fix) == (want is not Status.OK) for c in checks)
        assert all(str(tmp_path / "not-yet") in c.detail for c in checks)
    assert defaults.DOCTOR_DISK_FAIL_BYTES < defaults.DOCTOR_DISK_WARN_BYTES


def test_store_check_creates_no_store(tmp_path: Path) -> None:
    check = store_check(load_settings(None, home=tmp_path))
    assert check.status is Status.FAIL and check.fix == "ci-pool db upgrade"
    assert list(tmp_path.iterdir()) == []
