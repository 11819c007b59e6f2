"""``concurrency:`` of a workflow or a job, read and checked when the file is parsed.

The values are evaluated when the pipeline is submitted (``ci_pool.core.concurrency``), so
they may read only what is known then: ``github.*`` facts of the run, ``inputs``, ``vars``
and, at job level, ``matrix`` (substituted here, per matrix cell).
"""

from __future__ import annotations

from typing import Any

from ci_pool.core.concurrency import Concurrency
from ci_pool.core.workflow.contexts import GITHUB_ALIASES
from ci_pool.core.workflow.expressions import (
    FUNCTIONS,
    STATUS_FUNCTIONS,
    Call,
    ExpressionError,
    Part,
    Ref,
    fold,
    parse_template,
    template_text,
    to_text,
    unparse,
    walk,
)
from ci_pool.core.workflow.yaml_source import MarkedMap, Pos, Source

#: ``github.*`` properties known when a pipeline is submitted (``event`` at any depth).
SUBMIT_GITHUB = (
    "base_ref", "event", "event_name", "head_ref", "ref", "ref_name", "ref_type",
    "repository", "repository_owner", "run_id", "sha", "workflow",
)  # fmt: skip
KEYS = ("group", "cancel-in-progress")


class ConcurrencyReader:
    """Reads one ``concurrency:`` value; errors go to ``src`` at the offending part."""

    def __init__(
        self,
        src: Source,
        where: str,
        cell: dict[str, Any] | None = None,
        matrix_keys: frozenset[str] | None = None,
    ):
        self.src, self.where = src, where
        #: None at workflow level: no matrix there.
        self.cell, self.matrix_keys = cell, matrix_keys
        self.ok = True

    def error(self, message: str, pos: Pos | None) -> None:
        self.ok = False
        self.src.error(message, pos)

    def read(self, data: MarkedMap) -> Concurrency | None:
        if data.get("concurrency") is None:
            return None
        value, pos = data["concurrency"], data.value_pos["concurrency"]
        if isinstance(value, MarkedMap):
            return self._mapping(value, pos)
        group = self._template(value, pos, self.where)
        return None if group is None else Concurrency(group)

    def _mapping(self, value: MarkedMap, pos: Pos) -> Concurrency | None:
        w = self.where
        for key in value:
            if key not in KEYS:
                self.error(
                    f"{w}.{key}: unknown key; concurrency has group: and cancel-in-progress:",
                    value.key_pos[key],
                )
        if value.get("group") is None:
            self.error(f"{w}: needs group: (the name of the concurrency group)", pos)
            return None
        group = self._template(value["group"], value.value_pos["group"], f"{w}.group")
        cancel: str | None = "false"
        if "cancel-in-progress" in value:
            raw, cpos = value["cancel-in-progress"], value.value_pos["cancel-in-progress"]
            if isinstance(raw, bool):
                cancel = "true" if raw else "false"
            elif isinstance(raw, str) and "${{" in raw:
                cancel = self._template(raw, cpos, f"{w}.cancel-in-progress")
            elif isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
                cancel = raw.strip().lower()
            else:
                self.error(f"{w}.cancel-in-progress: must be true, false or an expression", cpos)
                cancel = None
        if group is None or cancel is None or not self.ok:
            return None
        return Concurrency(group, cancel)

    def _template(self, value: Any, pos: Pos, where: str) -> str | None:
        if isinstance(value, bool | int | float):
            value = to_text(value)
        if not isinstance(value, str) or not value.strip():
            self.error(f"{where}: must be a non-empty string (the group's name)", pos)
            return None
        try:
            parts = parse_template(value)
        except ExpressionError as exc:
            self.error(f"{where}: {exc}", self.src.locate(pos, value, exc.offset))
            return None
        problems = [
            (problem, node.offset)
            for part in parts
            if not isinstance(part, str)
            for node in walk(part)
            if (problem := self._problem(node)) is not None
        ]
        for problem, offset in problems:
            self.error(f"{where}: {problem}", self.src.locate(pos, value, offset))
        if problems:
            return None
        known = {"matrix": self.cell} if self.cell is not None else {}
        folded: tuple[Part, ...] = tuple(p if isinstance(p, str) else fold(p, known) for p in parts)
        return template_text(folded)

    def _problem(self, node: Any) -> str | None:
        if isinstance(node, Call):
            if node.function not in FUNCTIONS or node.function in STATUS_FUNCTIONS:
                return f"function {node.name}() cannot be used in concurrency"
            return None
        if not isinstance(node, Ref):
            return None
        name, path, shown = node.context, node.path, unparse(node)
        allowed = "github.*, inputs.*, vars.*" + (", matrix.*" if self.cell is not None else "")
        if name in ("inputs", "vars"):
            return None
        if name == "matrix" and self.cell is not None:
            keys = {k.lower() for k in self.matrix_keys or ()}
            if len(path) < 2 or str(path[1]).lower() not in keys:
                listed = ", ".join(sorted(self.matrix_keys or ())) or "none"
                return f"'{shown}': the job's matrix has no such key (its keys: {listed})"
            return None
        if name in ("github", *GITHUB_ALIASES):
            prop = str(path[1]).lower() if len(path) > 1 else ""
            if prop in SUBMIT_GITHUB and (len(path) == 2 or prop == "event"):
                return None
            return (
                f"'{shown}': concurrency is decided when the pipeline is submitted; of github "
                f"it may use {', '.join(SUBMIT_GITHUB)}"
            )
        return (
            f"'{shown}': concurrency is decided when the pipeline is submitted, before any "
            f"job runs; it may use {allowed}"
        )
