"""The baseline tools of the worker images and their pins: each tool is pinned by an
``ARG`` of its capability's Dockerfile (``ARG GO_VERSION=1.25.2``), and ``doctor`` runs the
tool's version command in the image and compares. Pure text reading and comparison; the
engine side is in ``service/toolchecks.py``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from ci_pool.core.dockerfile import logical_lines

_ARG = re.compile(r"^\s*ARG\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>\S+)\s*$", re.IGNORECASE)
#: The first dotted number of a version line: ``go1.25.2`` -> 1.25.2, ``v24.11.1`` -> 24.11.1.
_VERSION = re.compile(r"\d+(?:\.\d+)+")
#: Marks one tool's section in the probe's output: ``<mark> <arg> <exit code>``.
MARK = "@@ci-pool-tool"


@dataclass(frozen=True, slots=True)
class Tool:
    """A baseline tool: its name, the Dockerfile ARG that pins it, the shell command that
    prints its version."""

    name: str
    arg: str
    command: str


#: Every tool a worker image may pin; a Dockerfile pins the ones it installs.
TOOLS = (
    Tool("go", "GO_VERSION", "go version"),
    Tool("node", "NODE_VERSION", "node --version"),
    Tool("rust", "RUST_VERSION", "rustc --version"),
    Tool("flutter", "FLUTTER_VERSION", "flutter --version"),
    Tool("java", "JAVA_VERSION", "java -version"),
    Tool("gradle", "GRADLE_VERSION", "gradle --version"),
    Tool("android sdk", "CMDLINE_TOOLS_VERSION", "sdkmanager --version"),
    Tool("android ndk", "NDK_VERSION", 'cat "$ANDROID_NDK_HOME/source.properties"'),
    Tool("chromium", "CHROMIUM_VERSION", "chromium --version"),
)


class Verdict(str, Enum):
    OK = "ok"  # the tool prints the pinned version
    WRONG = "wrong"  # it prints another version
    MISSING = "missing"  # it is not there, fails, or prints no version


@dataclass(frozen=True, slots=True)
class Finding:
    tool: Tool
    #: The version the Dockerfile pins (its dotted number: ``17.0.12+7`` -> 17.0.12).
    pinned: str
    verdict: Verdict
    #: The version the image printed, or what it said instead (first line, capped).
    found: str


def dockerfile_args(text: str) -> dict[str, str]:
    """``ARG NAME=value`` defaults of a Dockerfile (the first one of each name)."""
    args: dict[str, str] = {}
    for _, line in logical_lines(text):
        m = _ARG.match(line)
        if m:
            args.setdefault(m["name"], m["value"].strip("\"'"))
    return args


def pinned_tools(text: str) -> list[tuple[Tool, str]]:
    """The tools a Dockerfile pins, with the pinned value of each."""
    args = dockerfile_args(text)
    return [(tool, args[tool.arg]) for tool in TOOLS if tool.arg in args]


def version_of(text: str) -> str | None:
    """The first dotted version number in ``text``."""
    m = _VERSION.search(text)
    return m.group(0) if m else None


def probe_script(tools: list[tuple[Tool, str]]) -> str:
    """One shell script printing every tool's version output under its own mark, so one
    container answers for all of them."""
    parts = [
        f"echo '{MARK} {tool.arg}'; ( {tool.command} ) 2>&1; echo \"{MARK}-rc $?\""
        for tool, _ in tools
    ]
    return "; ".join(parts)


def read_probe(tools: list[tuple[Tool, str]], output: str) -> list[Finding]:
    """The findings of ``probe_script``'s output, one per tool in order."""
    sections: dict[str, tuple[list[str], int]] = {}
    current: str | None = None
    lines: list[str] = []
    for line in output.splitlines():
        if line.startswith(f"{MARK} "):
            current, lines = line.split(" ", 1)[1].strip(), []
        elif line.startswith(f"{MARK}-rc ") and current is not None:
            code = line.split(" ", 1)[1].strip()
            sections[current] = (lines, int(code) if code.isdigit() else -1)
            current = None
        elif current is not None:
            lines.append(line)
    return [_finding(tool, pin, sections.get(tool.arg)) for tool, pin in tools]


def _finding(tool: Tool, pin: str, section: tuple[list[str], int] | None) -> Finding:
    pinned = version_of(pin) or pin
    if section is None:
        return Finding(tool, pinned, Verdict.MISSING, "no answer")
    lines, code = section
    text = "\n".join(lines).strip()
    first = (text.splitlines() or [""])[0][:200]
    found = version_of(text)
    if code != 0 or found is None:
        return Finding(tool, pinned, Verdict.MISSING, first or f"exit code {code}")
    return Finding(tool, pinned, Verdict.OK if found == pinned else Verdict.WRONG, found)
