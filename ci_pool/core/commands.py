"""Workflow commands a step prints, as GitHub Actions defines them.

``::add-mask::VALUE`` masks a value in every later line (the command line included);
``::group::TITLE`` / ``::endgroup::`` become ``##[group]`` / ``##[endgroup]`` lines a
viewer can fold; ``::error|warning|notice file=F,line=L,col=C,title=T::MESSAGE`` become
``##[error]`` lines and annotations on the job; ``::debug::`` lines show only when the job
sets ``ACTIONS_STEP_DEBUG=true``; ``::stop-commands::TOKEN`` turns commands off until a
line ``::TOKEN::``. Other lines pass unchanged.

Bounds: annotations per kind per step and per job (as Actions), the length of each of
their fields, and the number of values a job may add as masks.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ci_pool import defaults
from ci_pool.core.masking import MIN_SECRET_LEN, Masker

Level = Literal["error", "warning", "notice"]
LEVELS: tuple[Level, ...] = ("error", "warning", "notice")

_COMMAND = re.compile(r"::([A-Za-z][A-Za-z0-9_-]*)(?: ([^:]*))?::(.*)", re.DOTALL)
_PROPERTY_NAMES = {
    "file": "file",
    "line": "line",
    "endLine": "end_line",
    "col": "col",
    "endColumn": "end_column",
    "title": "title",
}


class Annotation(BaseModel):
    """An error, warning or notice a step attached to the job, with where it points."""

    model_config = ConfigDict(frozen=True)

    level: Level
    message: str
    #: The step (1-based) whose output carried it.
    step: int
    title: str | None = None
    file: str | None = None
    line: int | None = None
    end_line: int | None = None
    col: int | None = None
    end_column: int | None = None


def unescape_data(text: str) -> str:
    """A command's message as Actions escapes it (``%25``, ``%0D``, ``%0A``)."""
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def unescape_property(text: str) -> str:
    """A command property as Actions escapes it (also ``%3A`` and ``%2C``)."""
    return unescape_data(text.replace("%3A", ":").replace("%2C", ","))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _properties(raw: str | None) -> dict[str, str]:
    props: dict[str, str] = {}
    for part in (raw or "").split(","):
        name, sep, value = part.strip().partition("=")
        if sep and name in _PROPERTY_NAMES:
            props[_PROPERTY_NAMES[name]] = unescape_property(value)
    return props


def _positive(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    number = int(value.strip())
    return number if 0 < number < 2**31 else None


class CommandReader:
    """Reads one job's output line by line; what to log for each line, and the
    annotations found. ``masker`` is the job's: added masks go into it, and it masks the
    annotations kept (the log writer masks the lines it is given back)."""

    def __init__(self, masker: Masker, *, debug: bool = False):
        self.masker = masker
        self.debug = debug
        self.step = 0
        self.annotations: list[Annotation] = []
        self._stop_token: str | None = None
        self._group_open = False
        self._counts: dict[tuple[int, str], int] = {}
        self._total = 0
        self._told: set[tuple[int, str]] = set()
        self._added = 0

    def begin_step(self, index: int) -> list[str]:
        """A new step starts: commands are on again and no group is open."""
        lines = self.end_step()
        self.step = index
        return lines

    def end_step(self) -> list[str]:
        """Close what the step left open; the lines that say so."""
        self._stop_token = None
        if self._group_open:
            self._group_open = False
            return ["##[endgroup]"]
        return []

    def take(self) -> list[Annotation]:
        """The annotations found since the last call."""
        found, self.annotations = self.annotations, []
        return found

    def feed(self, line: str) -> list[str]:
        """The lines to log for one line of output (none for a hidden debug line)."""
        if self._stop_token is not None:
            if line.strip() == f"::{self._stop_token}::":
                self._stop_token = None
            return [line]
        found = _COMMAND.fullmatch(line.strip()) if line.lstrip().startswith("::") else None
        if found is None:
            return [line]
        name, props, data = found.group(1), found.group(2), found.group(3)
        if name == "add-mask":
            return self._add_mask(unescape_data(data))
        if name == "stop-commands":
            if not data:
                return [line, "##[ci-pool] ::stop-commands:: needs a token; ignored"]
            self._stop_token = data
            return [line]
        if name == "group":
            closing = self.end_step() if self._group_open else []
            self._group_open = True
            return [*closing, f"##[group]{unescape_data(data)}"]
        if name == "endgroup":
            was_open, self._group_open = self._group_open, False
            return ["##[endgroup]"] if was_open else []
        if name == "debug":
            return [f"##[debug]{unescape_data(data)}"] if self.debug else []
        if name in LEVELS:
            return self._annotate(name, _properties(props), unescape_data(data))
        if name in ("set-env", "add-path"):
            target = "$GITHUB_ENV" if name == "set-env" else "$GITHUB_PATH"
            return [line, f"##[ci-pool] ::{name}:: is disabled, as in GitHub Actions; "
                          f"append to {target} instead"]  # fmt: skip
        return [line]

    def _add_mask(self, value: str) -> list[str]:
        shown = "::add-mask::***"
        if not value.strip():
            return [shown]
        if self._added >= defaults.MAX_ADDED_MASKS:
            return [
                shown,
                f"##[ci-pool] ::add-mask:: refused: a job may add at most "
                f"{defaults.MAX_ADDED_MASKS} masks",
            ]
        if not self.masker.add(value):
            return [
                shown,
                f"##[ci-pool] ::add-mask:: value shorter than the {MIN_SECRET_LEN} "
                "characters a mask needs; it is not masked",
            ]
        self._added += 1
        return [shown]

    def _annotate(self, level: Level, props: dict[str, str], message: str) -> list[str]:
        mask = self.masker.mask
        where = props.get("file", "")
        line_no = _positive(props.get("line"))
        if where and line_no:
            where += f":{line_no}"
            col = _positive(props.get("col"))
            where += f":{col}" if col else ""
        title = props.get("title")
        shown = f"##[{level}]" + (f"{where}: " if where else "") + (
            f"{title}: " if title else ""
        ) + message.replace("\r", "").replace("\n", " ")  # fmt: skip
        key = (self.step, level)
        count = self._counts.get(key, 0)
        if count >= defaults.ANNOTATIONS_PER_STEP or self._total >= defaults.ANNOTATIONS_PER_JOB:
            told = (0, "job") if self._total >= defaults.ANNOTATIONS_PER_JOB else key
            if told in self._told:
                return [shown]
            self._told.add(told)
            limit = (
                f"{defaults.ANNOTATIONS_PER_JOB} annotations per job"
                if told == (0, "job")
                else f"{defaults.ANNOTATIONS_PER_STEP} {level} annotations per step"
            )
            return [shown, f"##[ci-pool] more than {limit}: further ones stay in the log only"]
        self._counts[key] = count + 1
        self._total += 1
        self.annotations.append(
            Annotation(
                level=level,
                message=mask(_cut(message, defaults.ANNOTATION_MAX_CHARS)),
                step=self.step,
                title=mask(_cut(title, defaults.ANNOTATION_FIELD_MAX_CHARS)) if title else None,
                file=mask(_cut(props["file"], defaults.ANNOTATION_FIELD_MAX_CHARS))
                if props.get("file")
                else None,
                line=line_no,
                end_line=_positive(props.get("end_line")),
                col=_positive(props.get("col")),
                end_column=_positive(props.get("end_column")),
            )
        )
        return [shown]
