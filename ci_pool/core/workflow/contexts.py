"""Expressions in workflow values: which contexts each place may use, checked and folded.

A ValueReader reads the values of one job (one matrix cell): it parses ``${{ }}``, checks
every context reference and function against what that place may use (ReferenceRules,
naming the line and column of the offending part), substitutes the cell's matrix values
and evaluates what no longer depends on the run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ci_pool.core.workflow.expressions import (
    FUNCTIONS,
    RUNNER_FUNCTIONS,
    STATUS_FUNCTIONS,
    Call,
    Expr,
    ExpressionError,
    Literal,
    Part,
    Ref,
    Wildcard,
    evaluate,
    fold,
    format_problem,
    parse,
    parse_template,
    render,
    template_text,
    to_text,
    truthy,
    unparse,
    walk,
)
from ci_pool.core.workflow.yaml_source import MarkedMap, Pos, Source
from ci_pool.defaults import FORGE_TOKEN_SECRET

#: What ``github.*`` offers (the runtime fills them from the job and pipeline rows);
#: ``github.event`` is the event's payload, read to any depth.
GITHUB_PROPERTIES = (
    "action",
    # Inside an action (empty elsewhere): its directory, repository and ref.
    "action_path",
    "action_ref",
    "action_repository",
    "actor",
    "base_ref",
    "event",
    "event_name",
    "event_path",
    "head_ref",
    "job",
    "ref",
    "ref_name",
    "ref_type",
    "repository",
    "repository_owner",
    "run_attempt",
    "run_id",
    "run_number",
    "server_url",
    "sha",
    "token",
    "workflow",
    "workspace",
)
#: ``gitea.*`` and ``forgejo.*`` are the same context as ``github.*``.
GITHUB_ALIASES = ("gitea", "forgejo")
RUNNER_PROPERTIES = ("arch", "name", "os", "temp", "tool_cache")
JOB_PROPERTIES = ("container", "services", "status")
STRATEGY_PROPERTIES = ("fail-fast", "job-index", "job-total", "max-parallel")
CONTEXTS = (
    "github",
    *GITHUB_ALIASES,
    "env",
    "vars",
    "inputs",
    "secrets",
    "matrix",
    "strategy",
    "needs",
    "steps",
    "runner",
    "job",
)
_GITHUB = frozenset({"github", *GITHUB_ALIASES})
# Which contexts each place may use (GitHub's table of context availability). "matrix"
# alone means: known when the file is parsed.
PARSE_TIME = frozenset({"matrix"})
#: A job's ``if:`` and name; the pool evaluates these before any runner has the job.
JOB_LEVEL = _GITHUB | {"needs", "matrix", "strategy", "vars", "inputs"}
#: A job's ``env:`` (rendered on the runner, before its steps).
JOB_ENV = JOB_LEVEL | {"secrets"}
STEP_LEVEL = JOB_ENV | {"env", "steps", "runner", "job"}
WORKFLOW_LEVEL = _GITHUB | {"vars", "inputs", "secrets"}
#: Returned for a value that could not be read (its error is already reported).
MISSING: Any = object()

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FUNCTION_NAMES = {
    n.lower(): n
    for n in (
        "contains",
        "startsWith",
        "endsWith",
        "format",
        "join",
        "toJSON",
        "fromJSON",
        "hashFiles",
    )
}


def referenced_secrets(templates: Iterable[str], conditions: Iterable[str]) -> tuple[str, ...]:
    """The capability secrets a job's values name (``secrets.X``; ``github.token`` is
    ``GITHUB_TOKEN``), in first-use order: the only secrets its runner resolves."""
    exprs: list[Expr] = []
    for text in templates:
        try:  # a value that does not parse is reported where it is read
            if "${{" in text:
                exprs += [p for p in parse_template(text) if not isinstance(p, str)]
        except ExpressionError:
            continue
    for cond in conditions:
        try:
            exprs += [parse(cond)] if cond else []
        except ExpressionError:
            continue
    names: dict[str, None] = {}
    for expr in exprs:
        for node in walk(expr):
            if not isinstance(node, Ref) or len(node.path) < 2:
                continue
            if isinstance(node.path[1], Wildcard):
                continue  # refused where it is checked: a secret is read by its name
            prop = str(node.path[1])
            if node.context == "secrets":
                names[prop] = None
            elif node.context in _GITHUB and prop.lower() == "token":
                names[FORGE_TOKEN_SECRET] = None
    return tuple(names)


class ReferenceRules:
    """What an expression at one place may reference: contexts and their properties, the
    matrix keys, the needs and their outputs, earlier steps, and functions. Each check
    returns the problem to report, or None."""

    matrix_keys: frozenset[str] | None
    matrix_readable: bool
    needs: Mapping[str, frozenset[str]]
    job_id: str
    #: Step ids visible to the value being read; None when the steps could not be read.
    step_ids: frozenset[str] | None

    def _check(
        self, expr: Expr, where: str, contexts: frozenset[str], status: bool
    ) -> list[tuple[str, int]]:
        problems: list[tuple[str, int]] = []
        for node in walk(expr):
            problem = None
            if isinstance(node, Ref):
                problem = self._ref_problem(node, contexts)
            elif isinstance(node, Call):
                problem = self._call_problem(node, status, contexts)
            if problem:
                problems.append((f"{where}: {problem}", node.offset))
        return problems

    def _ref_problem(self, ref: Ref, contexts: frozenset[str]) -> str | None:
        name, path, shown = ref.context, ref.path, unparse(ref)
        if name not in CONTEXTS:
            return f"unknown context '{path[0]}'; ci-pool supports {', '.join(CONTEXTS)}"
        if name not in contexts:
            when = (
                " (the value must be known when the workflow is parsed)"
                if contexts == PARSE_TIME
                else ""
            )
            return (
                f"'{shown}': {name} is not available here{when}; use "
                f"{', '.join(sorted(contexts - set(GITHUB_ALIASES)))}"
            )
        prop = str(path[1]).lower() if len(path) > 1 else ""
        filtered = any(isinstance(key, Wildcard) for key in path)
        if filtered and name not in ("needs", "steps", "matrix") and prop != "event":
            return (
                f"'{shown}': a '*' filter reads needs, steps, matrix or {name}.event "
                f"(needs.*.result, {name}.event.commits.*.id)"
            )
        if name in _GITHUB and len(path) > 1:
            deep = prop == "event" or (prop == "event_path" and len(path) == 2)
            if prop not in GITHUB_PROPERTIES or (len(path) > 2 and not deep):
                return f"'{shown}': {name} has {name}.{f', {name}.'.join(GITHUB_PROPERTIES)}"
        if name in ("env", "vars", "inputs", "secrets") and len(path) != 2:
            return f"'{shown}': use {name}.NAME"
        fixed = {"runner": RUNNER_PROPERTIES, "strategy": STRATEGY_PROPERTIES}
        if name in fixed and (len(path) != 2 or prop not in fixed[name]):
            return f"'{shown}': {name} has {name}.{f', {name}.'.join(fixed[name])}"
        if name == "job" and len(path) > 1 and prop not in JOB_PROPERTIES:
            return f"'{shown}': job has job.{', job.'.join(JOB_PROPERTIES)}"
        if name == "matrix":
            return self._matrix_problem(shown, path)
        if name == "needs":
            return self._needs_problem(shown, path)
        if name == "steps":
            return self._steps_problem(shown, path)
        return None

    def _matrix_problem(self, shown: str, path: tuple[str | int, ...]) -> str | None:
        if not self.matrix_readable:
            return None  # the matrix itself is reported; its keys are unknown
        if self.matrix_keys is None:
            return f"'{shown}': job {self.job_id!r} has no strategy.matrix"
        if len(path) < 2 or isinstance(path[1], Wildcard):
            return None  # the whole matrix (toJSON(matrix)) or its values: for the runtime
        if str(path[1]).lower() not in {k.lower() for k in self.matrix_keys}:
            keys = ", ".join(sorted(self.matrix_keys)) or "none"
            return f"'{shown}': the matrix has no key {path[1]!r}; its keys are: {keys}"
        return None

    def _needs_problem(self, shown: str, path: tuple[str | int, ...]) -> str | None:
        if len(path) > 1 and isinstance(path[1], Wildcard):  # every need: needs.*.result
            if len(path) == 2 or (path[2] in ("result", "outputs") and len(path) <= 4):
                return None
            return f"'{shown}': use needs.*.result or needs.*.outputs.NAME"
        need = str(path[1]) if len(path) > 1 else ""
        if need not in self.needs:
            listed = ", ".join(self.needs) or "none"
            return f"'{shown}': {need!r} is not in this job's needs (it needs: {listed})"
        if len(path) < 3 or path[2] not in ("result", "outputs"):
            return f"'{shown}': use needs.{need}.result or needs.{need}.outputs.NAME"
        if path[2] == "outputs" and (len(path) != 4 or str(path[3]) not in self.needs[need]):
            declared = ", ".join(sorted(self.needs[need])) or "none"
            return f"'{shown}': job {need!r} declares no such output (its outputs: {declared})"
        return None

    def _steps_problem(self, shown: str, path: tuple[str | int, ...]) -> str | None:
        step = str(path[1]) if len(path) > 1 else ""
        if self.step_ids is None:
            return None
        every = len(path) > 1 and isinstance(path[1], Wildcard)  # steps.*.outcome
        if not every and step not in self.step_ids:
            seen = ", ".join(sorted(self.step_ids)) or "none"
            return f"'{shown}': no earlier step has id {step!r} (ids before this point: {seen})"
        if len(path) == 3 and path[2] in ("outcome", "conclusion"):
            return None
        if len(path) == 4 and path[2] == "outputs":
            return None
        return f"'{shown}': use steps.{step}.outputs.NAME, .outcome or .conclusion"

    def _call_problem(self, call: Call, status: bool, contexts: frozenset[str]) -> str | None:
        name = call.function
        if name not in FUNCTIONS:
            known = ", ".join([*_FUNCTION_NAMES.values(), *sorted(STATUS_FUNCTIONS)])
            return f"function {call.name}() is not supported; ci-pool supports: {known}"
        if name in STATUS_FUNCTIONS and not status:
            return f"{call.name}() may be used only in if:"
        if name in RUNNER_FUNCTIONS and "runner" not in contexts:
            return (
                f"{call.name}() reads the runner's workspace, so it may be used only in a "
                "step (run, env, with, if) or a job's outputs"
            )
        low, high = FUNCTIONS[name]
        if not low <= len(call.args) <= high:
            count = str(low) if low == high else f"{low} to {high}"
            return f"{_FUNCTION_NAMES.get(name, call.name)}() takes {count} arguments"
        fmt = call.args[0] if name == "format" else None
        if isinstance(fmt, Literal) and isinstance(fmt.value, str):
            return format_problem(fmt.value, len(call.args) - 1)
        return None


class ValueReader(ReferenceRules):
    """Reads the values of one job cell: templates, conditions, known values, env."""

    def __init__(
        self,
        src: Source,
        cell: dict[str, Any],
        matrix_keys: frozenset[str] | None = None,
        matrix_readable: bool = True,
        needs: Mapping[str, frozenset[str]] | None = None,
        job_id: str = "",
    ):
        self.src, self.cell, self.matrix_keys = src, cell, matrix_keys
        self.matrix_readable = matrix_readable
        self.needs = needs or {}
        self.job_id = job_id
        self.ok = True
        self.step_ids = frozenset()
        #: The matrix cell being read ("linux, 3.12"), None outside a matrix: errors say
        #: which cells they are found in.
        self.cell_label: str | None = None
        #: ``strategy.*`` of this cell, substituted like the matrix where it is known.
        self.strategy_values: dict[str, Any] | None = None
        #: True when the matrix is computed at run time: ``matrix.*`` stays in templates.
        self.matrix_later = False

    @property
    def folded(self) -> dict[str, Any]:
        """The contexts known when parsing: the cell's matrix (and strategy)."""
        if self.matrix_later:
            return {}
        known: dict[str, Any] = {"matrix": self.cell}
        if self.strategy_values is not None:
            known["strategy"] = self.strategy_values
        return known

    def error(self, message: str, pos: Pos | None) -> None:
        self.ok = False
        self.src.error(message, pos, self.cell_label)

    def _report(self, problems: list[tuple[str, int]], value: str, pos: Pos) -> bool:
        for message, offset in problems:
            self.error(message, self.src.locate(pos, value, offset))
        return not problems

    def template(
        self, value: Any, pos: Pos, where: str, contexts: frozenset[str]
    ) -> tuple[Part, ...] | None:
        """A string's parts with the matrix substituted; None (and errors) if it is invalid."""
        if isinstance(value, bool | int | float) or value is None:
            value = to_text(value)
        if not isinstance(value, str):
            self.error(f"{where}: must be a string", pos)
            return None
        try:
            parts = parse_template(value)
        except ExpressionError as exc:
            self.error(f"{where}: {exc}", self.src.locate(pos, value, exc.offset))
            return None
        problems = [
            p
            for e in parts
            if not isinstance(e, str)
            for p in self._check(e, where, contexts, False)
        ]
        if not self._report(problems, value, pos):
            return None
        return tuple(p if isinstance(p, str) else fold(p, self.folded) for p in parts)

    def text(self, value: Any, pos: Pos, where: str, contexts: frozenset[str]) -> str:
        """A template string for the runtime, with the matrix substituted."""
        parts = self.template(value, pos, where, contexts)
        return "" if parts is None else template_text(parts)

    def known(self, value: Any, pos: Pos, where: str) -> Any:
        """A value that must be known when parsing: literal, or from the matrix."""
        if not isinstance(value, str):
            return value
        parts = self.template(value, pos, where, PARSE_TIME)
        if parts is None:
            return MISSING
        if self.matrix_later and any(
            isinstance(n, Ref) and n.context == "matrix"
            for p in parts
            if not isinstance(p, str)
            for n in walk(p)
        ):
            self.error(
                f"{where}: must be known when the workflow is parsed; this job's matrix is "
                "computed at run time, so it cannot use matrix.* here",
                pos,
            )
            return MISSING
        known = {"matrix": self.cell}
        try:
            if len(parts) == 1 and not isinstance(parts[0], str):
                return evaluate(parts[0], known)  # keeps the value's type: a bool stays a bool
            return render(parts, known)
        except ValueError as exc:  # format() with a bad format string from the matrix
            self.error(f"{where}: {exc}", pos)
            return MISSING

    def condition(
        self, data: MarkedMap, key: str, where: str, contexts: frozenset[str]
    ) -> str | None:
        """An ``if:`` as expression text (``${{ }}`` removed, matrix substituted)."""
        if key not in data:
            return None
        value, pos = data[key], data.value_pos[key]
        if isinstance(value, bool | int | float) or value is None:
            expr: Expr = Literal(value)
            text = ""
        elif isinstance(value, str):
            text = value
            try:
                parts = parse_template(value) if "${{" in value else (parse(value),)
            except ExpressionError as exc:
                self.error(f"{where}: {exc}", self.src.locate(pos, value, exc.offset))
                return None
            exprs = [p for p in parts if not isinstance(p, str)]
            if len(exprs) != 1 or any(isinstance(p, str) and p.strip() for p in parts):
                self.error(
                    f"{where}: write the whole condition inside one ${{{{ }}}}, or leave "
                    "${{ }} out",
                    pos,
                )
                return None
            expr = exprs[0]
        else:
            self.error(f"{where}: must be an expression", pos)
            return None
        if not self._report(self._check(expr, where, contexts, True), text, pos):
            return None
        # GitHub's implicit ``success() &&`` (no status function called) is the runtime's:
        # it also skips a job whose needs were skipped, which success() alone cannot see.
        folded = fold(expr, self.folded)
        if isinstance(folded, Literal):
            return "true" if truthy(folded.value) else "false"
        return unparse(folded)

    def env(
        self, parent: MarkedMap, key: str, where: str, contexts: frozenset[str]
    ) -> dict[str, str]:
        """An ``env:`` mapping as NAME -> template."""
        data = parent.get(key)
        if data is None:
            return {}
        if not isinstance(data, MarkedMap):
            self.error(f"{where}: must be a mapping of NAME: value", parent.value_pos[key])
            return {}
        out: dict[str, str] = {}
        for name, value in data.items():
            kpos, vpos, kwhere = data.key_pos[name], data.value_pos[name], f"{where}.{name}"
            if not _ENV_NAME.match(name):
                self.error(
                    f"{kwhere}: not a valid variable name (letters, digits and _, "
                    "not starting with a digit)",
                    kpos,
                )
            elif name.startswith("CI_POOL_"):
                self.error(
                    f"{kwhere}: the CI_POOL_ prefix is reserved for ci-pool's own variables", kpos
                )
            if isinstance(value, dict | list):
                self.error(f"{kwhere}: must be a string, number or boolean", vpos)
                continue
            out[name] = self.text(value, vpos, kwhere, contexts)
        return out

    def minutes(self, data: MarkedMap, key: str, where: str) -> int | None:
        """``timeout-minutes`` in seconds."""
        if key not in data:
            return None
        value = self.known(data[key], data.value_pos[key], where)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if value is MISSING:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value < math.inf
        ):
            self.error(f"{where}: must be a positive number of minutes", data.value_pos[key])
            return None
        return max(1, round(value * 60))

    def flag(self, data: MarkedMap, key: str, where: str) -> bool:
        """A true/false that may come from the matrix (``${{ matrix.experimental }}``)."""
        if key not in data:
            return False
        value = self.known(data[key], data.value_pos[key], where)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if value is not MISSING and not isinstance(value, bool):
            self.error(f"{where}: must be true or false", data.value_pos[key])
        return value is True
