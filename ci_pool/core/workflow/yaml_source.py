"""YAML that remembers where each key and value was, and a collector of positioned errors.

The loader reads YAML 1.2 core scalars the way GitHub does: only ``true``/``false`` are
booleans (so the key ``on`` stays the string "on", not YAML 1.1's ``True``), dates stay
strings and ``1:30`` is not a base-60 number. Duplicate keys are errors, not silently
overwritten, and merge keys (``<<``) are plain keys the workflow schema then rejects.

Bounds (``ci_pool.defaults``): the text's size; control characters are refused with their
line; nodes are counted as they are composed, an alias counting as a copy of everything it
names, so an alias bomb stops at ``MAX_YAML_NODES`` before anything is expanded; nesting
stops at ``MAX_YAML_DEPTH`` (aliases included), and an alias inside its own anchor is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import yaml
from yaml._yaml import CParser
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.resolver import Resolver

from ci_pool import defaults
from ci_pool.exceptions import WorkflowError

# What YAML's reader refuses, except the line breaks (tab, LF, CR, NEL).
_CONTROL = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class Pos(NamedTuple):
    """A 1-based line and column; ``style`` is the YAML scalar style (None for plain)."""

    line: int
    column: int
    style: str | None = None


class MarkedMap(dict[str, Any]):
    """A YAML mapping with the positions of its keys and of its values."""

    def __init__(self) -> None:
        super().__init__()
        self.key_pos: dict[str, Pos] = {}
        self.value_pos: dict[str, Pos] = {}


class MarkedList(list[Any]):
    """A YAML sequence with the position of each item."""

    def __init__(self) -> None:
        super().__init__()
        self.pos: list[Pos] = []


def _pos(node: yaml.Node) -> Pos:
    style = (node.style or None) if isinstance(node, yaml.ScalarNode) else None
    return Pos(node.start_mark.line + 1, node.start_mark.column + 1, style)


class InputBound(yaml.MarkedYAMLError):
    """The document is over one of the loader's bounds; ``problem`` names it."""


class _Loader(Composer, CParser, SafeConstructor, Resolver):
    """A safe loader building MarkedMap/MarkedList and noting problems instead of raising.

    LibYAML parses (ten times faster than PyYAML's parser: a large file is no way to stall
    the API); PyYAML's composer builds the nodes, so that every node is counted.

    Composing counts what constructing would build: ``_size`` and ``_height`` of each node
    composed so far (an alias adds its anchor's), so no bound is checked after the fact.
    """

    def __init__(self, text: str):
        CParser.__init__(self, text)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        Composer.__init__(self)
        self.problems: list[tuple[str, Pos]] = []
        self._nodes = 0
        self._depth = 0
        self._size: dict[int, int] = {}
        self._height: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(AliasEvent):
            mark = self._mark()
            node = super().compose_node(parent, index)
            if id(node) not in self._size:
                raise InputBound(
                    problem="an alias may not refer to its own anchor", problem_mark=mark
                )
            self._count(self._size[id(node)], self._height[id(node)], mark)
            return node
        mark = self._mark()
        self._depth += 1
        if self._depth > defaults.MAX_YAML_DEPTH:
            raise InputBound(
                problem=f"nested deeper than {defaults.MAX_YAML_DEPTH} levels", problem_mark=mark
            )
        node = super().compose_node(parent, index)
        self._depth -= 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        self._size[id(node)] = 1 + sum(self._size[id(c)] for c in children)
        self._height[id(node)] = 1 + max((self._height[id(c)] for c in children), default=0)
        self._count(1, 1, mark)
        return node

    def _mark(self) -> Any:
        """Where the next event starts (LibYAML's mark has the same line and column)."""
        return self.peek_event().start_mark  # type: ignore[union-attr]

    def _count(self, size: int, height: int, mark: Any) -> None:
        self._nodes += size
        if self._nodes > defaults.MAX_YAML_NODES:
            raise InputBound(
                problem=f"more than {defaults.MAX_YAML_NODES} values (aliases count as copies "
                "of what they name)",
                problem_mark=mark,
            )
        if self._depth + height > defaults.MAX_YAML_DEPTH:
            raise InputBound(
                problem=f"nested deeper than {defaults.MAX_YAML_DEPTH} levels (aliases included)",
                problem_mark=mark,
            )


_DROPPED_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "timestamp", "merge")}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.2 core integers: "017" and "1:30" stay strings rather than octal or base 60.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Iterator[MarkedMap]:
    data = MarkedMap()
    yield data
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        where = _pos(key_node)
        if not isinstance(key, str):
            loader.problems.append((f"keys must be strings, not {key!r}", where))
            continue
        if key in data:
            first = data.key_pos[key].line
            loader.problems.append((f"{key}: duplicate key (first given on line {first})", where))
            continue
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_pos[key] = where
        data.value_pos[key] = _pos(value_node)


def _construct_list(loader: _Loader, node: yaml.SequenceNode) -> Iterator[MarkedList]:
    data = MarkedList()
    yield data
    for child in node.value:
        data.append(loader.construct_object(child, deep=True))
        data.pos.append(_pos(child))


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)  # type: ignore[type-var]
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_list)  # type: ignore[type-var]


def plain(value: Any) -> Any:
    """The same data as plain dicts and lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


# A line ending in a block scalar header (``run: |``, ``- >-``, ``key: |2  # note``).
_BLOCK_HEADER = re.compile(r"(?:^|[ \t])[|>][1-9+-]{0,2}[ \t]*(?:#.*)?$")
_BLANK_OR_COMMENT = re.compile(r"^[ \t]*(?:#.*)?$")


def _tabs_before_comments(text: str) -> str:
    """YAML 1.2 lets tabs separate a comment (or nothing) from the start of a line; LibYAML
    takes them for indentation and stops. Those tabs become spaces, one for one, so every
    line and column stays where it was; block scalars (scripts) are left as written, except
    a tab-only line inside one that cannot be content (it is indentation, then nothing)."""
    if "\t" not in text:
        return text
    lines = text.split("\n")
    block: int | None = None  # the indentation of the line that opened a block scalar
    for i, line in enumerate(lines):
        body = line.rstrip("\r")
        indent = len(body) - len(body.lstrip(" "))
        blank = not body.strip(" \t")
        if block is not None:
            if blank and "\t" in body and len(body) <= block + 1:
                lines[i] = line.replace("\t", " ")
            if blank or indent > block:
                continue
            block = None
        if "\t" in body and _BLANK_OR_COMMENT.match(body):
            lead = len(body) - len(body.lstrip(" \t"))
            lines[i] = " " * lead + line[lead:]
        elif _BLOCK_HEADER.search(body):
            block = indent
    return "\n".join(lines)


def _cells_note(cells: list[str]) -> str:
    if len(cells) == 1:
        return f" (matrix: {cells[0]})"
    if len(cells) <= 3:
        return f" (in {len(cells)} matrix cells: {' | '.join(cells)})"
    return f" (in {len(cells)} matrix cells)"


class Source:
    """One workflow file being read: its lines, and every error found in it so far."""

    def __init__(self, file: str, text: str):
        self.file = file
        self.text = text
        self.lines = text.splitlines()
        #: (line, column, message) -> the matrix cells it was found in (None: not a cell's).
        self._errors: dict[tuple[int, int, str], list[str] | None] = {}

    def error(self, message: str, pos: Pos | None, cell: str | None = None) -> None:
        """Record an error; the same message at the same place is kept once, with the
        matrix ``cell`` it was found in: repeats across cells are counted, not repeated."""
        line, column = (pos.line, pos.column) if pos else (0, 0)
        key = (line, column, message)
        if key not in self._errors:
            self._errors[key] = None if cell is None else [cell]
        elif cell is not None and (cells := self._errors[key]) is not None and cell not in cells:
            cells.append(cell)

    def check_keys(
        self,
        data: MarkedMap,
        path: str,
        level: str,
        allowed: tuple[str, ...],
        why: Mapping[str, str] | None = None,
    ) -> None:
        """Report keys of ``data`` not in ``allowed``; ``why`` explains the ones known to us."""
        for key in data:
            if key not in allowed:
                reason = (why or {}).get(key, "unknown key")
                where = f"{path}.{key}" if path else key
                self.error(
                    f"{where}: {reason}. A {level} may have: {', '.join(allowed)}",
                    data.key_pos[key],
                )

    @property
    def errors(self) -> list[WorkflowError]:
        """Errors in file order, each saying in which matrix cells it was found."""
        found = []
        for line, column, message in sorted(self._errors):
            cells = self._errors[line, column, message]
            if cells:
                first, nl, rest = message.partition("\n")
                message = f"{first}{_cells_note(cells)}{nl}{rest}"
            found.append(WorkflowError(message, file=self.file, line=line, column=column))
        return found

    def _over_bounds(self) -> bool:
        """Report a text too large or holding control characters (each line once)."""
        size = len(self.text.encode("utf-8", "surrogatepass"))
        if size > defaults.MAX_WORKFLOW_BYTES:
            self.error(
                f"the file is {size} bytes; the limit is {defaults.MAX_WORKFLOW_BYTES}",
                Pos(1, 1),
            )
            return True
        lines: set[int] = set()
        for match in _CONTROL.finditer(self.text):
            line = self.text.count("\n", 0, match.start()) + 1
            if line in lines:
                continue
            lines.add(line)
            column = match.start() - self.text.rfind("\n", 0, match.start())
            self.error(
                f"control character U+{ord(match.group()):04X} is not allowed in a workflow; "
                "remove it (write it as an escape in a double-quoted string if it is meant)",
                Pos(line, column),
            )
            if len(lines) >= 20:
                break
        return bool(lines)

    def _within(self, line: int, column: int) -> Pos:
        """A position in the text: LibYAML puts an error at the end of a text that does
        not end with a newline on a line after it; that is the end of the last line."""
        if line > len(self.lines) and self.lines and not self.text.endswith(("\n", "\r")):
            return Pos(len(self.lines), len(self.lines[-1]) + 1)
        return Pos(line, column)

    def load(self) -> Any:
        """The parsed YAML document; YAML problems become errors (None if it does not parse)."""
        if self._over_bounds():
            return None
        try:
            loader = _Loader(_tabs_before_comments(self.text))  # the reader checks characters
        except yaml.YAMLError as exc:
            self.error(f"not valid YAML: {exc}", Pos(1, 1))
            return None
        try:
            data = loader.get_single_data()
        except InputBound as exc:
            mark = exc.problem_mark
            where = Pos(mark.line + 1, mark.column + 1) if mark else None
            self.error(f"the YAML is over a bound: {exc.problem}", where)
            return None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = self._within(mark.line + 1, mark.column + 1) if mark else None
            self.error(f"not valid YAML: {exc.problem or exc.context}", where)
            return None
        except yaml.YAMLError as exc:
            self.error(f"not valid YAML: {exc}", None)
            return None
        finally:
            loader.dispose()
        for message, where in loader.problems:
            self.error(message, where)
        return data

    def locate(self, pos: Pos, value: str, offset: int) -> Pos:
        """Where character ``offset`` of the string ``value`` (which starts at ``pos``) is.

        YAML folding and block indentation change only whitespace, so the n-th occurrence of
        the non-blank text at ``offset`` is the n-th occurrence in the file from ``pos`` on
        (escapes in quoted strings can defeat this: then the value's start is the answer).
        """
        match = re.match(r"\S+", value[offset:])
        if match is None:
            return pos
        needle = match.group()
        wanted = value.count(needle, 0, offset)
        seen = 0
        for index in range(pos.line - 1, len(self.lines)):
            line = self.lines[index]
            start = pos.column - 1 if index == pos.line - 1 else 0
            while (found := line.find(needle, start)) >= 0:
                if seen == wanted:
                    return Pos(index + 1, found + 1)
                seen += 1
                start = found + len(needle)
        return pos
