"""The environment files a step appends to ($GITHUB_ENV, $GITHUB_OUTPUT, $GITHUB_PATH),
parsed as GitHub Actions reads them. Pure: the worker reads the bytes (capped, never
through a link) and hands them here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ci_pool import defaults

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class KeyValues:
    """``NAME=value`` lines and ``NAME<<DELIMITER`` blocks, in order; what was wrong."""

    values: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def parse_key_values(data: bytes) -> KeyValues:
    """``name=value`` lines and ``name<<DELIM`` ... ``DELIM`` blocks, as Actions writes
    them; a line of neither form or a block without its delimiter is a problem."""
    out = KeyValues()
    lines = data.decode(errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    i = 0
    while i < len(lines):
        line = lines[i].removesuffix("\r")
        i += 1
        if not line.strip():
            continue
        heredoc = "<<" in line and ("=" not in line or line.index("<<") < line.index("="))
        if heredoc:
            name, delim = line.split("<<", 1)
            start = i
            block: list[str] = []
            while i < len(lines) and lines[i].removesuffix("\r") != delim:
                block.append(lines[i].removesuffix("\r"))
                i += 1
            if i >= len(lines) or not delim:
                out.problems.append(f"line {start}: no line {delim!r} ends {name}<<")
            i += 1
            out.values[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            out.values[name] = value
        else:
            out.problems.append(f"line {i}: {line[:60]!r} is neither NAME=value nor NAME<<EOF")
    return out


def reserved(name: str) -> bool:
    """Whether $GITHUB_ENV may not set ``name`` (see ``defaults.RESERVED_ENV_NAMES``)."""
    upper = name.upper()
    for entry in defaults.RESERVED_ENV_NAMES:
        if upper == entry or (entry.endswith("*") and upper.startswith(entry[:-1])):
            return True
    return False


def env_updates(data: bytes) -> tuple[dict[str, str], list[str], list[str]]:
    """What a step's $GITHUB_ENV sets for the steps after it: (values, names refused as
    reserved, problems that fail the step)."""
    parsed = parse_key_values(data)
    values: dict[str, str] = {}
    refused: list[str] = []
    problems = list(parsed.problems)
    for name, value in parsed.values.items():
        if not _NAME.fullmatch(name):
            problems.append(f"{name[:60]!r} is not a variable name (letters, digits, _)")
        elif "\0" in value:
            problems.append(f"{name}: a value cannot hold a NUL byte")
        elif reserved(name):
            refused.append(name)
        else:
            values[name] = value
    return values, refused, problems


def path_entries(data: bytes) -> list[str]:
    """The directories a step's $GITHUB_PATH adds: one per non-empty line, in order."""
    entries = []
    for line in data.decode(errors="replace").splitlines():
        line = line.strip()
        if line and "\0" not in line:
            entries.append(line)
    return entries
