"""A matrix computed by an earlier job: ``strategy.matrix: ${{ fromJSON(needs.plan.outputs.m) }}``
or one axis of it (``target: ${{ fromJSON(needs.plan.outputs.list) }}``), as Actions runs it.

When parsing, such a job is one template job: its matrix stays as written (the plain form:
a template string, or a mapping whose values are lists or template strings), and its
``matrix.*`` references stay in its templates. Once its needs have ended, the scheduler
evaluates the written matrix (``resolve``), expands it with the static matrix's rules and
bounds (``matrix.expand``) and turns the template into one job per cell (``cells_of``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ci_pool.core.specs import CheckoutSpec, EnvironmentSpec, StepSpec
from ci_pool.core.workflow.contexts import GITHUB_ALIASES
from ci_pool.core.workflow.expression_syntax import (
    ExpressionError,
    parse,
    parse_template,
    template_text,
    unparse,
)
from ci_pool.core.workflow.expressions import evaluate, fold
from ci_pool.core.workflow.matrix import TooManyCombinations, expand, label
from ci_pool.defaults import MAX_MATRIX_CELLS, MAX_MATRIX_ENTRIES

#: The contexts a matrix computed at run time may read.
DYNAMIC_MATRIX_LEVEL = frozenset({"github", *GITHUB_ALIASES, "needs", "vars", "inputs"})


class MatrixProblem(ValueError):
    """The value a dynamic matrix evaluated to is not a matrix; the text says why."""


def is_expression(value: Any) -> bool:
    """Whether a written matrix (or axis) value is a ``${{ }}`` expression."""
    return isinstance(value, str) and "${{" in value


def is_dynamic(written: Any) -> bool:
    """Whether a ``strategy.matrix`` as written is computed at run time."""
    if is_expression(written):
        return True
    return isinstance(written, Mapping) and any(is_expression(v) for v in written.values())


def _value(text: str, ctx: Mapping[str, Any], where: str) -> Any:
    """A template's value: a lone ``${{ }}`` keeps the type (fromJSON gives a list)."""
    try:
        parts = parse_template(text)
        if len(parts) == 1 and not isinstance(parts[0], str):
            return evaluate(parts[0], ctx)
        return "".join(p if isinstance(p, str) else str(evaluate(p, ctx)) for p in parts)
    except (ExpressionError, ValueError, TypeError) as exc:
        raise MatrixProblem(f"{where}: {text.strip()} could not be evaluated: {exc}") from exc


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _entries(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(e, dict) and e for e in value):
        raise MatrixProblem(f"{where}: must be a list of mappings, got {_shown(value)}")
    if len(value) > MAX_MATRIX_ENTRIES:
        raise MatrixProblem(f"{where}: {len(value)} entries; the limit is {MAX_MATRIX_ENTRIES}")
    return [dict(e) for e in value]


def resolve(written: Any, ctx: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The cells of a dynamic matrix in ``ctx`` (needs, github, vars, inputs); an empty list
    means the job is skipped. Raises MatrixProblem naming the expression and what is wrong."""
    matrix = _value(written, ctx, "strategy.matrix") if is_expression(written) else written
    if not isinstance(matrix, Mapping):
        raise MatrixProblem(
            f"strategy.matrix: {str(written).strip()} gave {_shown(matrix)}, not a mapping "
            "of keys to lists of values"
        )
    axes: dict[str, list[Any]] = {}
    include: list[dict[str, Any]] = []
    exclude: list[dict[str, Any]] = []
    for key, raw in matrix.items():
        where = f"strategy.matrix.{key}"
        value = _value(raw, ctx, where) if is_expression(raw) else raw
        if key == "include":
            include = _entries(value, where)
        elif key == "exclude":
            exclude = _entries(value, where)
        elif not isinstance(value, list):
            shown = f"{str(raw).strip()} gave " if is_expression(raw) else ""
            raise MatrixProblem(f"{where}: {shown}{_shown(value)}, not a list of values")
        else:
            axes[str(key)] = value
    for i, entry in enumerate(exclude):
        unknown = [k for k in entry if k not in axes]
        if unknown:
            raise MatrixProblem(
                f"strategy.matrix.exclude[{i}]: {unknown[0]!r} is not a key of the matrix"
            )
    try:
        return expand(axes, include, exclude)
    except TooManyCombinations as exc:
        raise MatrixProblem(
            f"strategy.matrix: {exc.count} combinations; the limit is {MAX_MATRIX_CELLS}"
        ) from exc


@dataclass(frozen=True)
class MatrixTemplate:
    """What a dynamic matrix job holds before it is expanded (the parts with templates)."""

    key: str
    name: str
    env: Mapping[str, str]
    steps: Sequence[StepSpec]
    if_expr: str | None
    outputs: Mapping[str, str]
    checkout: CheckoutSpec
    environment: EnvironmentSpec | None
    fail_fast: bool = True
    max_parallel: int | None = None


@dataclass(frozen=True)
class MatrixCell:
    """One cell of an expanded dynamic matrix: the template with the cell substituted."""

    key: str
    matrix: dict[str, Any]
    name: str
    env: dict[str, str]
    steps: tuple[StepSpec, ...]
    if_expr: str | None
    outputs: dict[str, str]
    checkout: CheckoutSpec
    environment: EnvironmentSpec | None


def _fold_text(text: str, known: Mapping[str, Any]) -> str:
    if "${{" not in text:
        return text
    parts = parse_template(text)
    return template_text(tuple(p if isinstance(p, str) else fold(p, known) for p in parts))


def _fold_expr(text: str | None, known: Mapping[str, Any]) -> str | None:
    return None if text is None else unparse(fold(parse(text), known))


def _fold_model(model: Any, known: Mapping[str, Any]) -> Any:
    """A frozen spec with every string field folded (nested specs and mappings too)."""
    update: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name == "if_expr":
            update[name] = _fold_expr(value, known)
        elif isinstance(value, str):
            update[name] = _fold_text(value, known)
        elif isinstance(value, dict):
            update[name] = {
                k: _fold_text(v, known) if isinstance(v, str) else v for k, v in value.items()
            }
        elif hasattr(type(value), "model_fields"):
            update[name] = _fold_model(value, known)
    return model.model_copy(update=update)


def cells_of(template: MatrixTemplate, cells: Sequence[dict[str, Any]]) -> list[MatrixCell]:
    """One job per cell, keyed ``job (a, b)`` like a static matrix's cells."""
    out: list[MatrixCell] = []
    keys: list[str] = []
    for index, cell in enumerate(cells):
        key = f"{template.key} ({label(cell)})"
        n = 2
        while key in keys:
            key, n = f"{template.key} ({label(cell)}) #{n}", n + 1
        keys.append(key)
        known = {
            "matrix": cell,
            "strategy": {
                "fail-fast": template.fail_fast,
                "job-index": index,
                "job-total": len(cells),
                "max-parallel": template.max_parallel or len(cells),
            },
        }
        if template.name == template.key:
            name = key
        else:
            name = _fold_text(template.name, known)
            if "matrix" not in template.name:
                name = f"{name} ({label(cell)})"
        out.append(
            MatrixCell(
                key=key,
                matrix=dict(cell),
                name=name[:200],
                env={k: _fold_text(v, known) for k, v in template.env.items()},
                steps=tuple(_fold_model(s, known) for s in template.steps),
                if_expr=_fold_expr(template.if_expr, known),
                outputs={k: _fold_text(v, known) for k, v in template.outputs.items()},
                checkout=_fold_model(template.checkout, known),
                environment=(
                    _fold_model(template.environment, known) if template.environment else None
                ),
            )
        )
    return out
