"""The ``${{ }}`` expression language of workflows: evaluation, conditions, templates, folding.

A subset of GitHub Actions expressions: literals (``'str'`` with ``''`` escapes, numbers,
``true``, ``false``, ``null``), context references (``github.ref``, ``matrix['os']``),
``!``, ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``&&``, ``||``, parentheses and the
functions in ``FUNCTIONS``. Which contexts a place may use is the workflow parser's
business; this module only parses, evaluates and partially evaluates. The tree, tokenizer
and parser are in ``expression_syntax``, GitHub's value semantics and the functions in
``expression_values``; their public names are importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ci_pool.core.workflow.expression_syntax import (
    Binary,
    Call,
    Expr,
    ExpressionError,
    Literal,
    Not,
    Part,
    Ref,
    parse,
    parse_template,
    template_text,
    unparse,
    uses_status_function,
    walk,
)
from ci_pool.core.workflow.expression_values import (
    FUNCTIONS,
    RUNNER_FUNCTIONS,
    STATUS_FUNCTIONS,
    STATUSES,
    Scalar,
    Wildcard,
    call,
    compare,
    follow,
    format_problem,
    is_scalar,
    loose_equal,
    to_text,
    truthy,
)

__all__ = [
    "FUNCTIONS",
    "RUNNER_FUNCTIONS",
    "STATUSES",
    "STATUS_FUNCTIONS",
    "Binary",
    "Call",
    "Contexts",
    "Expr",
    "ExpressionError",
    "Literal",
    "Not",
    "Part",
    "Ref",
    "Scalar",
    "Wildcard",
    "condition",
    "evaluate",
    "fold",
    "format_problem",
    "loose_equal",
    "parse",
    "parse_template",
    "render",
    "template_text",
    "to_text",
    "truthy",
    "unparse",
    "uses_status_function",
    "walk",
]


class Contexts(dict[str, Any]):
    """The contexts of a running job, with the runner's ``hashFiles`` over its workspace."""

    hash_files: Callable[[list[str]], str] | None = None


def evaluate(expr: Expr | str, ctx: Mapping[str, Any], status: str = "success") -> Any:
    """The value of an expression; ``ctx`` maps context names (``github``, ``env``...) to data.

    ``status`` is what the status functions see: "success", "failure" or "cancelled".
    """
    node = parse(expr) if isinstance(expr, str) else expr
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Ref):
        return follow(ctx, node.path)
    if isinstance(node, Not):
        return not truthy(evaluate(node.operand, ctx, status))
    if isinstance(node, Binary):
        left = evaluate(node.left, ctx, status)
        if node.op == "&&":
            return evaluate(node.right, ctx, status) if truthy(left) else left
        if node.op == "||":
            return left if truthy(left) else evaluate(node.right, ctx, status)
        return compare(node.op, left, evaluate(node.right, ctx, status))
    args = [evaluate(a, ctx, status) for a in node.args]
    value = call(node.function, args, status, getattr(ctx, "hash_files", None))
    return follow(value, node.path)


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
        return Literal(value, expr.offset) if is_scalar(value) else expr
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
            return Literal(compare(expr.op, left.value, right.value), expr.offset)
        return Binary(expr.op, left, right, expr.offset)
    if isinstance(expr, Call):
        args = tuple(fold(a, known) for a in expr.args)
        runtime = STATUS_FUNCTIONS | RUNNER_FUNCTIONS
        if expr.function not in runtime and all(isinstance(a, Literal) for a in args):
            try:
                value = evaluate(Call(expr.name, args, path=expr.path), {})
            except ValueError:
                pass  # left for the runtime to report, as it would without folding
            else:
                # Objects and arrays have no literal syntax: the call stays for the runtime.
                if is_scalar(value):
                    return Literal(value, expr.offset)
        return Call(expr.name, args, expr.offset, expr.path)
    return expr
