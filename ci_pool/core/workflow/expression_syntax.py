"""The syntax of ``${{ }}`` expressions: the tree, its tokenizer and parser, and unparsing."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeAlias

from ci_pool.core.workflow.expression_values import (
    NUMBER,
    STAR,
    STATUS_FUNCTIONS,
    Scalar,
    Wildcard,
    number,
    to_text,
)
from ci_pool.defaults import MAX_EXPRESSION_DEPTH


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
    #: Properties read from the result: ``fromJSON(x).a[0]``.
    path: tuple[str | int, ...] = ()

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

_TOKEN = re.compile(
    rf"""
    (?P<ws>\s+)
  | (?P<num>{NUMBER.pattern})
  | (?P<str>'(?:[^']|'')*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[()\[\].,!<>*])
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
            return Literal(number(tok.text), tok.offset)
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
        path = self.path([])
        call = self.built(Call(name.text, tuple(args), name.offset, tuple(path)), *args)
        assert isinstance(call, Call)
        return call

    def ref(self, root: _Token) -> Ref:
        return Ref(tuple(self.path([root.text])), root.offset)

    def path(self, path: list[str | int]) -> list[str | int]:
        """``.name``, ``[index]`` and ``.*`` / ``[*]`` (object filter) parts after a reference
        or a call, added to ``path``."""
        while self.peek().text in (".", "["):
            if self.take().text == ".":
                tok = self.take()
                if tok.kind == "op" and tok.text == "*":
                    path.append(STAR)
                    continue
                if tok.kind != "ident":
                    raise ExpressionError("expected a property name after '.'", tok.offset)
                path.append(tok.text)
                continue
            tok = self.take()
            # Only literal indexes: every reference can then be checked when parsing.
            if tok.kind == "op" and tok.text == "*":
                path.append(STAR)
            elif tok.kind == "str":
                path.append(tok.text[1:-1].replace("''", "'"))
            elif tok.kind == "num" and isinstance(number(tok.text), int):
                path.append(int(number(tok.text)))
            else:
                raise ExpressionError("an index must be a string or integer literal", tok.offset)
            self.expect("]")
        return path


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


# -- writing back ------------------------------------------------------------------------


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


def _path_text(path: tuple[str | int, ...]) -> str:
    text = ""
    for key in path:
        if isinstance(key, Wildcard):
            text += ".*"
            continue
        plain = isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key)
        text += f".{key}" if plain else f"[{_literal_text(key)}]"
    return text


def unparse(expr: Expr) -> str:
    """Expression text that parses back to the same tree."""
    if isinstance(expr, Literal):
        return _literal_text(expr.value)
    if isinstance(expr, Ref):
        return str(expr.path[0]) + _path_text(expr.path[1:])
    if isinstance(expr, Call):
        return f"{expr.name}({', '.join(unparse(a) for a in expr.args)})" + _path_text(expr.path)
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
