"""The images a Dockerfile builds from (``FROM``, and ``COPY --from=``/``--mount=from=``
naming an image), so a runner can refuse a container action whose images its capability
does not allow before anything is built.

Pure text reading; bounds: the file is capped by its reader, each line is read once."""

from __future__ import annotations

import re

_FROM = re.compile(r"^\s*FROM\s+(?P<rest>.+)$", re.IGNORECASE)
#: ``COPY --from=x`` and ``RUN --mount=...,from=x``: an image unless a stage of the file.
_FROM_FLAG = re.compile(r"(?:--from=|[=,]from=)(?P<name>[^\s,]+)", re.IGNORECASE)


def logical_lines(text: str) -> list[tuple[int, str]]:
    """The Dockerfile's instructions with the line each starts on: comment lines dropped,
    ``\\`` continuations joined."""
    lines: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.lstrip().startswith("#"):
            continue
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + raw))
        pending = ""
    if pending.strip():
        lines.append((start, pending))
    return lines


def _checked(image: str, file: str, line: int) -> str:
    if "$" in image:
        raise ValueError(
            f"{file}:{line}: {image} uses a build variable; name the image literally so the "
            "runner can check it is allowed"
        )
    return image


def base_images(text: str, file: str = "Dockerfile") -> list[str]:
    """The images the Dockerfile uses, in order: not ``scratch``, not a stage of its own.
    A ValueError names (file:line) an image that cannot be checked (a variable in it)."""
    stages: set[str] = set()
    images: list[str] = []
    for number, line in logical_lines(text):
        m = _FROM.match(line)
        if m is None:
            for flag in _FROM_FLAG.finditer(line):
                name = flag["name"]
                if name.lower() not in stages and not name.isdigit():
                    images.append(_checked(name, file, number))
            continue
        words = [w for w in m["rest"].split() if not w.startswith("--")]
        if not words:
            raise ValueError(f"{file}:{number}: FROM names no image")
        image = words[0]
        earlier_stage = image.lower() in stages
        if len(words) >= 3 and words[1].lower() == "as":
            stages.add(words[2].lower())
        if not earlier_stage and image.lower() != "scratch":
            images.append(_checked(image, file, number))
    return images
