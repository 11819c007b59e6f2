"""What the pages show, made safe: log lines as numbered, coloured, foldable blocks (their
text always escaped by the templates), step summaries' markdown rendered and then
sanitized by an allow-list, durations and the pipeline's Gantt bars."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from ci_pool.store.browsing import LogLine

#: An SGR sequence (colours, bold...), any other escape sequence, or a control character
#: other than tab: SGR becomes classes, the rest is dropped.
_ESCAPES = re.compile(
    r"\x1b\[([0-9;]*)m|\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]"
)
_GROUP = "##[group]"
_ENDGROUP = "##[endgroup]"
_OWN = "##[ci-pool]"

#: What a rendered summary may contain (no script, style, iframe, form, event handler).
_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "details", "div", "em",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre",
    "s", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "th", "thead",
    "tr", "ul",
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "td": {"align"},
    "th": {"align"},
}
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(
    ["table", "strikethrough"]
)


def summary_html(markdown: str) -> str:
    """A step summary as HTML: markdown without raw HTML, then an allow-list sanitizer, so
    nothing in it can run script or load from elsewhere than this page allows."""
    return nh3.clean(
        _markdown.render(markdown),
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


@dataclass(frozen=True, slots=True)
class Span:
    """A run of text and the ANSI classes it is drawn with."""

    text: str
    classes: str


@dataclass(slots=True)
class Line:
    number: int
    time: str
    spans: list[Span]
    own: bool = False


@dataclass(slots=True)
class Group:
    """A ``::group::`` section: its title line and the lines inside, folded."""

    title: Line
    lines: list[Line] = field(default_factory=list)


def _sgr(codes: str, state: dict[str, str]) -> None:
    parts = [int(p) if p.isdigit() else 0 for p in codes.split(";")] if codes else [0]
    i = 0
    while i < len(parts):
        code = parts[i]
        if code == 0:
            state.clear()
        elif code in (1, 3, 4):
            state[str(code)] = {1: "ansi-bold", 3: "ansi-italic", 4: "ansi-underline"}[code]
        elif code in (22, 23, 24):
            state.pop(str(code - 21 if code != 22 else 1), None)
        elif 30 <= code <= 37 or 90 <= code <= 97:
            state["fg"] = f"ansi-fg-{code - 30 if code < 90 else code - 82}"
        elif 40 <= code <= 47 or 100 <= code <= 107:
            state["bg"] = f"ansi-bg-{code - 40 if code < 100 else code - 92}"
        elif code == 39:
            state.pop("fg", None)
        elif code == 49:
            state.pop("bg", None)
        elif code in (38, 48):  # 256 colours or RGB: not drawn, skipped whole
            i += 2 if i + 1 < len(parts) and parts[i + 1] == 5 else 4
        i += 1


def spans(text: str) -> list[Span]:
    """The text split where its ANSI colours change; other escapes and controls removed."""
    if text.isprintable():  # no escape sequence, no control character: one plain run
        return [Span(text, "")] if text else []
    out: list[Span] = []
    state: dict[str, str] = {}
    pos = 0
    for found in _ESCAPES.finditer(text):
        if found.start() > pos:
            out.append(Span(text[pos : found.start()], " ".join(sorted(state.values()))))
        if found.group(1) is not None:
            _sgr(found.group(1), state)
        pos = found.end()
    if pos < len(text):
        out.append(Span(text[pos:], " ".join(sorted(state.values()))))
    return out


def _clock(at: datetime) -> str:
    return at.strftime("%H:%M:%S")


def log_blocks(lines: Iterable[LogLine]) -> list[Line | Group]:
    """Lines in display order, the lines of each ``::group::`` inside its Group."""
    blocks: list[Line | Group] = []
    group: Group | None = None
    clocks: dict[datetime, str] = {}
    for raw in lines:
        if raw.text.startswith(_ENDGROUP) and group is not None:
            group = None
            continue
        clock = clocks.get(raw.at) or clocks.setdefault(raw.at, _clock(raw.at))
        if raw.text.startswith(_GROUP):
            title = raw.text[len(_GROUP) :]
            group = Group(Line(raw.number, clock, spans(title)))
            blocks.append(group)
            continue
        line = Line(raw.number, clock, spans(raw.text), own=raw.text.startswith(_OWN))
        if group is not None:
            group.lines.append(line)
        else:
            blocks.append(line)
    return blocks


def _line_html(line: Line) -> str:
    text = "".join(
        f'<span class="{s.classes}">{escape(s.text)}</span>' if s.classes else str(escape(s.text))
        for s in line.spans
    )
    n = line.number
    own = " own" if line.own else ""
    return (
        f'<div class="line{own}" id="L{n}"><a class="ln" href="#L{n}">{n}</a>'
        f'<time class="ts">{line.time}</time><span class="tx">{text}</span></div>'
    )


#: Blocks per ``<div class="chunk">``: the unit the browser skips the layout and paint of
#: while it is off screen (``content-visibility: auto`` in ui.css).
CHUNK_BLOCKS = 32


def log_html(blocks: Iterable[Line | Group]) -> Markup:
    """The log's lines as HTML: every piece of their text escaped, classes from our own
    fixed set (what a template would write, at a fraction of its cost per line), in
    chunks of ``CHUNK_BLOCKS`` blocks."""
    parts = []
    for n, block in enumerate(blocks):
        if n % CHUNK_BLOCKS == 0:
            parts.append('</div><div class="chunk">' if n else '<div class="chunk">')
        if isinstance(block, Group):
            inner = "".join(_line_html(line) for line in block.lines)
            parts.append(
                f'<details class="group" id="G{block.title.number}"><summary>'
                f"{_line_html(block.title)}</summary>{inner}</details>"
            )
        else:
            parts.append(_line_html(block))
    if parts:
        parts.append("</div>")
    # Escaped piece by piece above.
    return Markup("".join(parts))


def duration(start: datetime | None, end: datetime | None, now: datetime) -> str:
    """``1m 05s`` from start to end (or now, while it runs); "" before it starts."""
    if start is None:
        return ""
    return duration_of(max(0, int(((end or now) - start).total_seconds())))


_STEP_END = re.compile(
    r"^##\[step\] (\S+) (?:exit (-?\d+) in ([0-9.]+)s|(timed out) after .*|(.*) (skipped))$"
)


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """How a step ended, from its ``##[step]`` line: exit code and seconds, or a word."""

    outcome: str
    seconds: float | None


def step_outcomes(marks: Iterable[str]) -> dict[str, StepOutcome]:
    """Each step's (by its number, or ``post``) last outcome in the ``##[step]`` lines."""
    found: dict[str, StepOutcome] = {}
    for mark in marks:
        m = _STEP_END.match(mark)
        if m is None:
            continue
        key = m.group(1)
        if m.group(2) is not None:
            code = int(m.group(2))
            found[key] = StepOutcome("ok" if code == 0 else f"exit {code}", float(m.group(3)))
        elif m.group(4):
            found[key] = StepOutcome("timed out", None)
        else:
            found[key] = StepOutcome("skipped", None)
    return found


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}s" if value < 60 else duration_of(int(value))


def duration_of(total: int) -> str:
    if total < 60:
        return f"{total}s"
    minutes, rest = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


@dataclass(frozen=True, slots=True)
class Bar:
    """One job's bar in the Gantt chart, in the chart's 0-1000 units."""

    label: str
    state: str
    x: int
    width: int
    y: int


def gantt(
    rows: Sequence[tuple[str, str, datetime | None, datetime | None]], now: datetime
) -> list[Bar]:
    """Bars from (label, state, started, finished) rows, scaled to the run's span."""
    started = [s for _, _, s, _ in rows if s is not None]
    if not started:
        return []
    t0 = min(started)
    t1 = max([(f or now) for _, _, s, f in rows if s is not None] + [t0])
    span = max((t1 - t0).total_seconds(), 1e-3)
    bars = []
    for index, (label, state, start, end) in enumerate(rows):
        if start is None:
            bars.append(Bar(label, state, 0, 0, index * 24))
            continue
        x = int(1000 * (start - t0).total_seconds() / span)
        width = max(2, int(1000 * ((end or now) - start).total_seconds() / span))
        bars.append(Bar(label, state, min(x, 998), min(width, 1000 - min(x, 998)), index * 24))
    return bars
