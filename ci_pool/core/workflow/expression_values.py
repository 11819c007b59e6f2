"""Values in the expression language: GitHub's truthiness, text, loose comparison, functions.

Everything here works on plain Python values (what contexts hold and expressions yield);
the syntax tree lives in ``expression_syntax`` and its evaluation in ``expressions``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from ci_pool.core.jsontext import json_depth
from ci_pool.defaults import MAX_FROM_JSON_BYTES, MAX_JSON_DEPTH

Scalar: TypeAlias = str | int | float | bool | None

#: Functions that read the status of the job or of the earlier steps; only in ``if:``.
STATUS_FUNCTIONS = frozenset({"success", "failure", "always", "cancelled"})
#: Functions that read the runner's workspace: evaluated only where the steps run.
RUNNER_FUNCTIONS = frozenset({"hashfiles"})
#: Every function, by lower-case name (GitHub's names are case-insensitive), to its arity.
FUNCTIONS: dict[str, tuple[int, int]] = {
    "success": (0, 0),
    "failure": (0, 0),
    "always": (0, 0),
    "cancelled": (0, 0),
    "contains": (2, 2),
    "startswith": (2, 2),
    "endswith": (2, 2),
    "format": (1, 64),
    "join": (1, 2),
    "tojson": (1, 1),
    "fromjson": (1, 1),
    "hashfiles": (1, 32),
}
#: The status a job or step condition is evaluated in (what ``success()`` etc. look at).
STATUSES = ("success", "failure", "cancelled")
#: A number as a literal writes it, and as a string must read to convert to one.
NUMBER = re.compile(r"[+-]?(?:0x[0-9a-fA-F]+|0o[0-7]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")


def number(text: str) -> int | float:
    """The value of a ``NUMBER`` match."""
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body[:2] in ("0x", "0o"):
        return sign * int(body, 0)
    return sign * (int(body) if body.isdigit() else float(body))


def truthy(value: Any) -> bool:
    """GitHub's truthiness: false, 0, NaN, '' and null are falsy; objects are truthy."""
    if isinstance(value, float) and math.isnan(value):
        return False
    return value is not None and value is not False and value != 0 and value != ""


def to_text(value: Any) -> str:
    """How a value is written into a string: null is '', numbers without a needless '.0'."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int | str):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _to_number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0.0
        return float(number(text)) if NUMBER.fullmatch(text) else math.nan
    return math.nan


def is_scalar(value: Any) -> bool:
    """Whether a value has a literal form (objects and arrays have none)."""
    return value is None or isinstance(value, str | int | float | bool)


def loose_equal(a: Any, b: Any) -> bool:
    """GitHub's ``==``: strings ignore case, other mixed types compare as numbers."""
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    if not (is_scalar(a) and is_scalar(b)):
        return a is b  # objects and arrays are equal only to themselves
    if type(a) is type(b) and not isinstance(a, float):
        return bool(a == b)
    return _to_number(a) == _to_number(b)


def compare(op: str, a: Any, b: Any) -> bool:
    """GitHub's comparison operators: ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``."""
    if op == "==":
        return loose_equal(a, b)
    if op == "!=":
        return not loose_equal(a, b)
    if isinstance(a, str) and isinstance(b, str):
        x: Any = a.casefold()
        y: Any = b.casefold()
    else:
        x, y = _to_number(a), _to_number(b)  # NaN makes every comparison false
    return bool({"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op])


# -- functions ---------------------------------------------------------------------------


def format_problem(fmt: str, count: int) -> str | None:
    """Why ``format(fmt, ...)`` with ``count`` arguments after ``fmt`` would fail, or None."""
    for m in re.finditer(r"\{\{|\}\}|\{(\d+)\}|[{}]", fmt):
        if m.group() in ("{", "}"):
            return f"format(): lone {m.group()!r} in {fmt!r} (write {{{{ or }}}} for a brace)"
        if m.group(1) is not None and int(m.group(1)) >= count:
            return f"format(): {fmt!r} uses {{{m.group(1)}}} but has {count} argument(s)"
    return None


def _format(fmt: str, args: list[Any]) -> str:
    problem = format_problem(fmt, len(args))
    if problem:
        raise ValueError(problem)

    def sub(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return m.group()[0]  # {{ or }}
        return to_text(args[int(m.group(1))])

    return re.sub(r"\{\{|\}\}|\{(\d+)\}", sub, fmt)


def _join(items: Any, sep: Any) -> str:
    if not isinstance(items, list):
        return to_text(items)
    return to_text(sep).join(to_text(i) for i in items)


def _from_json(text: Any) -> Any:
    """GitHub's ``fromJSON``: the value of a JSON text, within the depth and size bounds."""
    raw = to_text(text)
    if len(raw.encode()) > MAX_FROM_JSON_BYTES:
        raise ValueError(f"fromJSON(): the text is over {MAX_FROM_JSON_BYTES} bytes")
    if json_depth(raw.encode()) > MAX_JSON_DEPTH:
        raise ValueError(f"fromJSON(): the JSON nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw)
    except ValueError:
        raise ValueError(f"fromJSON(): {raw[:60]!r} is not JSON") from None


def call(
    name: str,
    args: list[Any],
    status: str,
    hash_files: Callable[[list[str]], str] | None = None,
) -> Any:
    """Call the function ``name`` (lower case); ``status`` is what the status functions see,
    ``hash_files`` is the runner's ``hashFiles`` (None where no workspace exists)."""
    if name in STATUS_FUNCTIONS:
        return True if name == "always" else status == name
    if name == "contains":
        hay, needle = args
        if isinstance(hay, list):
            return any(loose_equal(item, needle) for item in hay)
        return to_text(needle).casefold() in to_text(hay).casefold()
    if name == "startswith":
        return to_text(args[0]).casefold().startswith(to_text(args[1]).casefold())
    if name == "endswith":
        return to_text(args[0]).casefold().endswith(to_text(args[1]).casefold())
    if name == "format":
        return _format(to_text(args[0]), args[1:])
    if name == "join":
        return _join(args[0], args[1] if len(args) > 1 else ",")
    if name == "tojson":
        return json.dumps(args[0], indent=2)
    if name == "fromjson":
        return _from_json(args[0])
    if name == "hashfiles":
        if hash_files is None:
            raise ValueError("hashFiles() is evaluated only on the runner, in a step")
        return hash_files([to_text(a) for a in args])
    raise ValueError(f"unknown function {name}()")


class Wildcard(str):
    """``*`` in a reference's path, GitHub's object filter: ``needs.*.result`` is the
    result of every need, ``github.event.commits.*.author.name`` every commit's author."""

    __slots__ = ()


#: The one wildcard a parsed path holds.
STAR = Wildcard("*")


class _Filtered(list[Any]):
    """What a wildcard selected: the keys after it apply to each item."""


def _items(value: Any) -> list[Any]:
    if isinstance(value, list):
        return list(value)
    return list(value.values()) if isinstance(value, Mapping) else []


def follow(value: Any, path: tuple[str | int, ...]) -> Any:
    """The value at ``path`` under ``value``. After a wildcard, each key applies to every
    item selected (items without it are left out, as on GitHub) and the result is an
    array; a wildcard on an array selects its items, on an object its values."""
    for key in path:
        if isinstance(key, Wildcard):
            items = value if isinstance(value, _Filtered) else [value]
            value = _Filtered(item for one in items for item in _items(one))
        elif isinstance(value, _Filtered):
            value = _Filtered(v for v in (lookup(item, key) for item in value) if v is not None)
        else:
            value = lookup(value, key)
    return list(value) if isinstance(value, _Filtered) else value


def lookup(container: Any, key: str | int) -> Any:
    """A property of an object (keys compare case-insensitively, like GitHub's contexts)."""
    if isinstance(container, list) and isinstance(key, int):
        return container[key] if -len(container) <= key < len(container) else None
    if not isinstance(container, Mapping):
        return None
    if key in container:
        return container[key]
    wanted = str(key).casefold()
    return next((v for k, v in container.items() if str(k).casefold() == wanted), None)
