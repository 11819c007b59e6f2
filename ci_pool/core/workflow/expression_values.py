"""Values in the expression language: GitHub's truthiness, text, loose comparison, functions.

Everything here works on plain Python values (what contexts hold and expressions yield);
the syntax tree lives in ``expression_syntax`` and its evaluation in ``expressions``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, TypeAlias

Scalar: TypeAlias = str | int | float | bool | None

#: Functions that read the status of the job or of the earlier steps; only in ``if:``.
STATUS_FUNCTIONS = frozenset({"success", "failure", "always", "cancelled"})
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


def call(name: str, args: list[Any], status: str) -> Any:
    """Call the function ``name`` (lower case); ``status`` is what the status functions see."""
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
    raise ValueError(f"unknown function {name}()")


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
