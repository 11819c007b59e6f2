"""The ``${{ }}`` expression language of workflows: tokenizer, parser, evaluator, folding.

A subset of GitHub Actions expressions: literals (``'str'`` with ``''`` escapes, numbers,
``true``, ``false``, ``null``), context references (``github.ref``, ``matrix['os']``),
``!``, ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``&&``, ``||``, parentheses and the
functions in ``FUNCTIONS``. Which contexts a place may use is the workflow parser's
business; this module only parses, evaluates and partially evaluates.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from ci_pool.defaults import MAX_EXPRESSION_DEPTH

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


class ExpressionError(ValueError):
    """An expression does not parse; ``offset`` is where, in the text given to the parser."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class Literal:
    value: Scalar
    offset: int = 0


@dataclass(frozen=True)
class Ref:
    """A context reference: ``path[0]`` is the context, the rest are property names."""

    path: tuple[str | int, ...]
    offset: int = 0

    @property
    def context(self) -> str:
        return str(self.path[0]).lower()


@dataclass(frozen=True)
class Call:
    name: str  # as written; function names are case-insensitive
    args: tuple[Expr, ...]
    offset: int = 0

    @property
    def function(self) -> str:
        """The lower-case name, as ``FUNCTIONS`` knows it."""
        return self.name.lower()


@dataclass(frozen=True)
class Not:
    operand: Expr
    offset: int = 0


@dataclass(frozen=True)
class Binary:
    op: str
    left: Expr
    right: Expr
    offset: int = 0


Expr: TypeAlias = Literal | Ref | Call | Not | Binary
#: A parsed template: literal text and expressions, in order.
Part: TypeAlias = str | Expr

# -- tokenizer ---------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(?:0x[0-9a-fA-F]+|0o[0-7]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_TOKEN = re.compile(
    rf"""
    (?P<ws>\s+)
  | (?P<num>{_NUMBER.pattern})
  | (?P<str>'(?:[^']|'')*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[()\[\].,!<>])
    """,
    re.VERBOSE,
)
_KEYWORDS: dict[str, Scalar] = {
    "true": True,
    "false": False,
    "null": None,
    "NaN": math.nan,
    "Infinity": math.inf,
}


@dataclass(frozen=True)
class _Token:
    kind: str  # num, str, ident, op, end
    text: str
    offset: int


def _tokenize(text: str, base: int) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            char = text[pos]
            hint = " (strings use single quotes)" if char == '"' else ""
            raise ExpressionError(f"unexpected character {char!r}{hint}", base + pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(_Token(kind, m.group(), base + pos))
        pos = m.end()
    tokens.append(_Token("end", "", base + len(text)))
    return tokens


def _number(text: str) -> int | float:
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body[:2] in ("0x", "0o"):
        return sign * int(body, 0)
    return sign * (int(body) if body.isdigit() else float(body))


# -- parser ------------------------------------------------------------------------------

_PRECEDENCE = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 4, "<=": 4, ">": 4, ">=": 4}


class _Parser:
    """Recursive descent with precedence climbing over the binary operators.

    Bounded: nesting (parentheses, ``!``, calls) and the height of the tree built (long
    operator chains too) stop at ``MAX_EXPRESSION_DEPTH``, so no walker of it recurses deeper.
    """

    def __init__(self, text: str, base: int):
        self.tokens = _tokenize(text, base)
        self.i = 0
        self.depth = 0
        self.heights: dict[int, int] = {}

    def built(self, expr: Expr, *children: Expr) -> Expr:
        """``expr``, whose height is one more than its highest child's, within the bound."""
        height = 1 + max((self.heights.get(id(c), 1) for c in children), default=0)
        if height > MAX_EXPRESSION_DEPTH:
            raise ExpressionError(
                f"the expression is nested deeper than {MAX_EXPRESSION_DEPTH} levels; split it up",
                expr.offset,
            )
        self.heights[id(expr)] = height
        return expr

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> _Token:
        tok = self.take()
        if tok.text != text or tok.kind != "op":
            raise ExpressionError(f"expected {text!r}, found {tok.text or 'the end'!r}", tok.offset)
        return tok

    def parse(self) -> Expr:
        if self.peek().kind == "end":
            raise ExpressionError("empty expression", self.peek().offset)
        expr = self.binary(1)
        tok = self.peek()
        if tok.kind != "end":
            raise ExpressionError(f"unexpected {tok.text!r} after the expression", tok.offset)
        return expr

    def binary(self, min_prec: int) -> Expr:
        left = self.unary()
        while True:
            tok = self.peek()
            prec = _PRECEDENCE.get(tok.text, 0) if tok.kind == "op" else 0
            if prec < min_prec:
                return left
            self.take()
            right = self.binary(prec + 1)
            left = self.built(Binary(tok.text, left, right, tok.offset), left, right)

    def unary(self) -> Expr:
        tok = self.peek()
        self.depth += 1
        if self.depth > MAX_EXPRESSION_DEPTH:
            raise ExpressionError(
                f"the expression is nested deeper than {MAX_EXPRESSION_DEPTH} levels; split it up",
                tok.offset,
            )
        if tok.kind == "op" and tok.text == "!":
            self.take()
            operand = self.unary()
            expr = self.built(Not(operand, tok.offset), operand)
        else:
            expr = self.primary()
        self.depth -= 1
        return expr

    def primary(self) -> Expr:
        tok = self.take()
        if tok.kind == "num":
            return Literal(_number(tok.text), tok.offset)
        if tok.kind == "str":
            return Literal(tok.text[1:-1].replace("''", "'"), tok.offset)
        if tok.kind == "op" and tok.text == "(":
            expr = self.binary(1)
            self.expect(")")
            return expr
        if tok.kind != "ident":
            raise ExpressionError(f"expected a value, found {tok.text or 'the end'!r}", tok.offset)
        if tok.text in _KEYWORDS:
            return Literal(_KEYWORDS[tok.text], tok.offset)
        if self.peek().text == "(":
            return self.call(tok)
        return self.ref(tok)

    def call(self, name: _Token) -> Call:
        self.expect("(")
        args: list[Expr] = []
        if self.peek().text != ")":
            args.append(self.binary(1))
            while self.peek().text == ",":
                self.take()
                args.append(self.binary(1))
        self.expect(")")
        call = self.built(Call(name.text, tuple(args), name.offset), *args)
        assert isinstance(call, Call)
        return call

    def ref(self, root: _Token) -> Ref:
        path: list[str | int] = [root.text]
        while self.peek().text in (".", "["):
            if self.take().text == ".":
                tok = self.take()
                if tok.kind != "ident":
                    raise ExpressionError("expected a property name after '.'", tok.offset)
                path.append(tok.text)
                continue
            tok = self.take()
            # Only literal indexes: every reference can then be checked when parsing.
            if tok.kind == "str":
                path.append(tok.text[1:-1].replace("''", "'"))
            elif tok.kind == "num" and isinstance(_number(tok.text), int):
                path.append(int(_number(tok.text)))
            else:
                raise ExpressionError("an index must be a string or integer literal", tok.offset)
            self.expect("]")
        return Ref(tuple(path), root.offset)


def parse(text: str, base: int = 0) -> Expr:
    """Parse one expression (the inside of ``${{ }}``); offsets count from ``base``."""
    return _Parser(text, base).parse()


def _closing(text: str, start: int) -> int:
    """Index of the ``}}`` that closes an expression starting at ``start``, or -1."""
    i, quoted = start, False
    while i < len(text):
        char = text[i]
        if char == "'":
            quoted = not quoted  # '' inside a string toggles twice: still quoted
        elif not quoted and text.startswith("}}", i):
            return i
        i += 1
    return -1


def parse_template(text: str) -> tuple[Part, ...]:
    """Split a string into text and ``${{ }}`` expressions; node offsets index ``text``."""
    parts: list[Part] = []
    pos = 0
    while (start := text.find("${{", pos)) >= 0:
        end = _closing(text, start + 3)
        if end < 0:
            raise ExpressionError("'${{' is not closed by '}}'", start)
        if start > pos:
            parts.append(text[pos:start])
        inner = text[start + 3 : end]
        if not inner.strip():
            raise ExpressionError("empty expression in '${{ }}'", start)
        parts.append(parse(inner, start + 3))
        pos = end + 2
    if pos < len(text):
        parts.append(text[pos:])
    return tuple(parts)


# -- walking -----------------------------------------------------------------------------


def walk(expr: Expr) -> Iterator[Expr]:
    """Every node of an expression, parents first."""
    yield expr
    if isinstance(expr, Not):
        yield from walk(expr.operand)
    elif isinstance(expr, Binary):
        yield from walk(expr.left)
        yield from walk(expr.right)
    elif isinstance(expr, Call):
        for arg in expr.args:
            yield from walk(arg)


def uses_status_function(expr: Expr) -> bool:
    return any(isinstance(n, Call) and n.function in STATUS_FUNCTIONS for n in walk(expr))


# -- values ------------------------------------------------------------------------------


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
        return float(_number(text)) if _NUMBER.fullmatch(text) else math.nan
    return math.nan


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def loose_equal(a: Any, b: Any) -> bool:
    """GitHub's ``==``: strings ignore case, other mixed types compare as numbers."""
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    if not (_is_scalar(a) and _is_scalar(b)):
        return a is b  # objects and arrays are equal only to themselves
    if type(a) is type(b) and not isinstance(a, float):
        return bool(a == b)
    return _to_number(a) == _to_number(b)


def _compare(op: str, a: Any, b: Any) -> bool:
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


def _call(name: str, args: list[Any], status: str) -> Any:
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


def _lookup(container: Any, key: str | int) -> Any:
    """A property of an object (keys compare case-insensitively, like GitHub's contexts)."""
    if isinstance(container, list) and isinstance(key, int):
        return container[key] if -len(container) <= key < len(container) else None
    if not isinstance(container, Mapping):
        return None
    if key in container:
        return container[key]
    wanted = str(key).casefold()
    return next((v for k, v in container.items() if str(k).casefold() == wanted), None)


def evaluate(expr: Expr | str, ctx: Mapping[str, Any], status: str = "success") -> Any:
    """The value of an expression; ``ctx`` maps context names (``github``, ``env``...) to data.

    ``status`` is what the status functions see: "success", "failure" or "cancelled".
    """
    node = parse(expr) if isinstance(expr, str) else expr
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Ref):
        value: Any = ctx
        for key in node.path:
            value = _lookup(value, key)
        return value
    if isinstance(node, Not):
        return not truthy(evaluate(node.operand, ctx, status))
    if isinstance(node, Binary):
        left = evaluate(node.left, ctx, status)
        if node.op == "&&":
            return evaluate(node.right, ctx, status) if truthy(left) else left
        if node.op == "||":
            return left if truthy(left) else evaluate(node.right, ctx, status)
        return _compare(node.op, left, evaluate(node.right, ctx, status))
    return _call(node.function, [evaluate(a, ctx, status) for a in node.args], status)


def condition(expr: Expr | str, ctx: Mapping[str, Any], status: str = "success") -> bool:
    """Whether an ``if:`` holds."""
    return truthy(evaluate(expr, ctx, status))


def render(
    template: str | tuple[Part, ...], ctx: Mapping[str, Any], status: str = "success"
) -> str:
    """A string with every ``${{ }}`` replaced by its value."""
    parts = parse_template(template) if isinstance(template, str) else template
    return "".join(p if isinstance(p, str) else to_text(evaluate(p, ctx, status)) for p in parts)


# -- partial evaluation ------------------------------------------------------------------


def fold(expr: Expr, known: Mapping[str, Any]) -> Expr:
    """Substitute the contexts in ``known`` and evaluate what no longer depends on the run."""
    if isinstance(expr, Ref):
        if expr.context not in known:
            return expr
        value = evaluate(expr, known)
        # Objects and arrays have no literal syntax: they stay references for the runtime.
        return Literal(value, expr.offset) if _is_scalar(value) else expr
    if isinstance(expr, Not):
        operand = fold(expr.operand, known)
        if isinstance(operand, Literal):
            return Literal(not truthy(operand.value), expr.offset)
        return Not(operand, expr.offset)
    if isinstance(expr, Binary):
        left, right = fold(expr.left, known), fold(expr.right, known)
        if isinstance(left, Literal) and expr.op in ("&&", "||"):
            # Short-circuit exactly as evaluate() does, whatever ``right`` turns out to be.
            return right if truthy(left.value) == (expr.op == "&&") else left
        if isinstance(left, Literal) and isinstance(right, Literal):
            return Literal(_compare(expr.op, left.value, right.value), expr.offset)
        return Binary(expr.op, left, right, expr.offset)
    if isinstance(expr, Call):
        args = tuple(fold(a, known) for a in expr.args)
        if expr.function not in STATUS_FUNCTIONS and all(isinstance(a, Literal) for a in args):
            try:
                return Literal(evaluate(Call(expr.name, args), {}), expr.offset)
            except ValueError:
                pass  # left for the runtime to report, as it would without folding
        return Call(expr.name, args, expr.offset)
    return expr


def _literal_text(value: Scalar) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if value == -math.inf:
        return "-1e999"  # "-Infinity" is no literal: '-' only starts numbers
    return "null" if value is None else to_text(value)


def _precedence(expr: Expr) -> int:
    if isinstance(expr, Binary):
        return _PRECEDENCE[expr.op]
    return 5 if isinstance(expr, Not) else 6


def unparse(expr: Expr) -> str:
    """Expression text that parses back to the same tree."""
    if isinstance(expr, Literal):
        return _literal_text(expr.value)
    if isinstance(expr, Ref):
        text = str(expr.path[0])
        for key in expr.path[1:]:
            plain = isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key)
            text += f".{key}" if plain else f"[{_literal_text(key)}]"
        return text
    if isinstance(expr, Call):
        return f"{expr.name}({', '.join(unparse(a) for a in expr.args)})"
    if isinstance(expr, Not):
        inner = unparse(expr.operand)
        return f"!{inner}" if _precedence(expr.operand) >= 5 else f"!({inner})"
    prec = _PRECEDENCE[expr.op]
    left, right = unparse(expr.left), unparse(expr.right)
    if _precedence(expr.left) < prec:
        left = f"({left})"
    if _precedence(expr.right) <= prec:  # left-associative: an equal right side needs ()
        right = f"({right})"
    return f"{left} {expr.op} {right}"


def template_text(parts: tuple[Part, ...]) -> str:
    """Write parts back as a template; literal values are inlined as plain text."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, Literal) and "${{" not in to_text(part.value):
            out.append(to_text(part.value))
        else:
            # A value that contains '${{' stays quoted so the runtime never re-reads it.
            out.append("${{ " + unparse(part) + " }}")
    return "".join(out)
