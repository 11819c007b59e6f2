"""The baseline tools' pins: read from the worker images' Dockerfiles, and the verdict on
what an image printed for each (the version pinned, another one, or nothing)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ci_pool.core.toolchains import (
    MARK,
    TOOLS,
    Verdict,
    dockerfile_args,
    pinned_tools,
    probe_script,
    read_probe,
)

IMAGES = Path(__file__).resolve().parents[3] / "worker_images"

#: The RFC's baseline tools per image (tool names of core.toolchains.TOOLS).
BASELINE = {
    "linux": {"go", "node", "rust", "flutter"},
    "android": {"android sdk", "android ndk", "java", "gradle"},
    "flutter-web": {"flutter", "chromium"},
}


@pytest.mark.parametrize("image", sorted(BASELINE))
def test_every_image_pins_its_baseline_tools_and_each_download_by_sha256(image: str) -> None:
    text = (IMAGES / image / "Dockerfile").read_text()
    pins = dict((tool.name, value) for tool, value in pinned_tools(text))
    assert set(pins) == BASELINE[image]
    for name, value in pins.items():
        assert re.fullmatch(r"\d+(\.\d+)+(-\S+)?", value), f"{image}: {name} pin {value!r}"
    args = dockerfile_args(text)
    shas = {k: v for k, v in args.items() if k.endswith("_SHA256")}
    assert shas, f"{image} checks no download"
    for key, value in shas.items():
        assert re.fullmatch(r"[0-9a-f]{64}", value), f"{image}: {key} is not a sha256"
        assert f'echo "${{{key}}}  ' in text, f"{image}: {key} is never checked"
    # Every download is checked: one sha256sum -c per curl.
    assert text.count("curl -fsSL") == text.count("| sha256sum -c -")


def test_go_pin_is_1_25_and_node_24() -> None:
    args = dockerfile_args((IMAGES / "linux" / "Dockerfile").read_text())
    assert args["GO_VERSION"].startswith("1.25.")
    assert args["NODE_VERSION"].startswith("24.")


def test_args_are_read_with_continuations_and_comments() -> None:
    text = (
        "# ARG NOT_ME=1\nARG BASE_IMAGE=debian:12\nFROM ${BASE_IMAGE}\n"
        'ARG GO_VERSION="1.25.2"\nARG GO_VERSION=9.9.9\nARG NO_DEFAULT\n'
        "RUN echo \\\n  ARG INSIDE=1\n"
    )
    assert dockerfile_args(text) == {"BASE_IMAGE": "debian:12", "GO_VERSION": "1.25.2"}


def test_the_probe_output_gives_one_verdict_per_tool() -> None:
    tools = list(zip(TOOLS[:4], ["1.25.2", "24.11.1", "1.91.0", "3.47.5"], strict=True))
    script = probe_script(tools)
    assert script.count(MARK + " ") == 4 and "go version" in script
    output = (
        f"{MARK} GO_VERSION\ngo version go1.25.2 linux/amd64\n{MARK}-rc 0\n"
        f"{MARK} NODE_VERSION\nv23.1.0\n{MARK}-rc 0\n"
        f"{MARK} RUST_VERSION\nsh: rustc: not found\n{MARK}-rc 127\n"
    )  # flutter: no section at all (the container died)
    go, node, rust, flutter = read_probe(tools, output)
    assert (go.verdict, go.found) == (Verdict.OK, "1.25.2")
    assert (node.verdict, node.found, node.pinned) == (Verdict.WRONG, "23.1.0", "24.11.1")
    assert (rust.verdict, rust.found) == (Verdict.MISSING, "sh: rustc: not found")
    assert flutter.verdict is Verdict.MISSING


def test_a_pin_with_a_suffix_compares_by_its_version_and_silence_is_missing() -> None:
    chromium = next(t for t in TOOLS if t.name == "chromium")
    java = next(t for t in TOOLS if t.name == "java")
    tools = [(chromium, "156.0.8078.108-1~deb12u1"), (java, "17.0.12")]
    output = (
        f"{MARK} CHROMIUM_VERSION\nChromium 156.0.8078.108 built on Debian 12.11\n{MARK}-rc 0\n"
        f"{MARK} JAVA_VERSION\n{MARK}-rc 0\n"
    )
    found = read_probe(tools, output)
    assert [f.verdict for f in found] == [Verdict.OK, Verdict.MISSING]
    assert found[0].pinned == "156.0.8078.108"
