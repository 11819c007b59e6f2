"""A job's ``strategy.matrix``: read from the workflow, checked, and expanded.

Expansion is exactly as GitHub documents it: product, then exclude, then include.

1. The cartesian product of the matrix keys, in the order the keys and values are written.
2. An ``exclude`` entry removes every combination that has all of its key/value pairs
   (a partial match is enough).
3. Each ``include`` entry, in order, is merged into every combination where none of its
   pairs would overwrite an original matrix value (values added by an earlier include may
   be overwritten); an entry that fits no combination becomes a combination of its own.
   Combinations made this way are not candidates for later entries.

Bounds: a product over ``MAX_PRODUCT`` is refused before any combination is made; each
value is compared through its canonical JSON text, computed once, and exclude entries are
indexed by the keys they name, so each combination is looked up once per set of keys; more
than ``MAX_MATRIX_CELLS`` combinations left after exclude are refused before include runs.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ci_pool.core.workflow.expressions import to_text
from ci_pool.core.workflow.yaml_source import MarkedList, MarkedMap, Pos, Source, plain
from ci_pool.defaults import MAX_MATRIX_CELLS, MAX_MATRIX_ENTRIES

#: GitHub's limit of jobs one matrix may generate.
MAX_COMBINATIONS = MAX_MATRIX_CELLS
#: Combinations of the product looked at, at most, before exclude brings them down.
MAX_PRODUCT = MAX_COMBINATIONS * 16
STRATEGY_KEYS = ("matrix", "fail-fast", "max-parallel")


def same(a: Any, b: Any) -> bool:
    """Matrix values compare strictly: 1, 1.0, true and '1' are four different values."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def product_size(axes: Mapping[str, Sequence[Any]]) -> int:
    """How many combinations the product has, before exclude and include."""
    return math.prod(len(v) for v in axes.values()) if axes else 0


def matches(combination: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    """Whether a combination has every key/value pair of an exclude entry."""
    return all(k in combination and same(combination[k], v) for k, v in entry.items())


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class TooManyCombinations(ValueError):
    """More than ``MAX_COMBINATIONS`` combinations; ``count`` is how many."""

    def __init__(self, count: int):
        super().__init__(f"{count} combinations; the limit is {MAX_COMBINATIONS}")
        self.count = count


def _excluded(
    axes: Mapping[str, Sequence[Any]], exclude: Sequence[Mapping[str, Any]]
) -> dict[tuple[str, ...], set[tuple[str, ...]]]:
    """Exclude entries by the keys they name: keys -> the canonical values they exclude."""
    index: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for entry in exclude:
        if entry and all(k in axes for k in entry):
            keys = tuple(sorted(entry))
            index.setdefault(keys, set()).add(tuple(_canon(entry[k]) for k in keys))
    return index


def expand(
    axes: Mapping[str, Sequence[Any]],
    include: Sequence[Mapping[str, Any]] = (),
    exclude: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The combinations of a matrix, each a dict of matrix key to value.

    Raises TooManyCombinations when more than ``MAX_COMBINATIONS`` are left after exclude
    (include never removes one) or the product is over ``MAX_PRODUCT``."""
    if product_size(axes) > MAX_PRODUCT:
        raise TooManyCombinations(product_size(axes))
    keys = list(axes)
    canon = {k: [_canon(v) for v in values] for k, values in axes.items()}
    index = _excluded(axes, exclude)
    combos: list[tuple[dict[str, Any], dict[str, str]]] = []
    left = 0
    # a matrix of only include entries has no product: each entry is its own combination
    ranges = [range(len(v)) for v in axes.values()]
    for picks in itertools.product(*ranges) if keys else ():
        texts = {k: canon[k][i] for k, i in zip(keys, picks, strict=True)}
        if any(tuple(texts[k] for k in ks) in gone for ks, gone in index.items()):
            continue
        left += 1
        if left <= MAX_COMBINATIONS:  # past it only counted, for the error
            combos.append(({k: axes[k][i] for k, i in zip(keys, picks, strict=True)}, texts))
    if left > MAX_COMBINATIONS:
        raise TooManyCombinations(left)
    extra: list[dict[str, Any]] = []
    for entry in include:
        wanted = {k: _canon(v) for k, v in entry.items() if k in axes}
        fits = [c for c, texts in combos if all(texts[k] == t for k, t in wanted.items())]
        for combo in fits:
            combo.update(entry)
        if not fits:
            extra.append(dict(entry))
    cells = [c for c, _ in combos] + extra
    if len(cells) > MAX_COMBINATIONS:
        raise TooManyCombinations(len(cells))
    return cells


def label(combination: Mapping[str, Any]) -> str:
    """A combination as GitHub shows it in a job's name: its values, comma-separated."""
    return ", ".join(to_text(v) for v in combination.values())


# -- strategy: as written in a workflow --------------------------------------------------


@dataclass(frozen=True)
class Strategy:
    """A job's ``strategy``: its matrix cells (one empty cell without a matrix)."""

    cells: list[dict[str, Any]]
    #: Every key any cell has; None when the job has no matrix, and also None when the
    #: matrix could not be read at all (``readable`` then says so).
    keys: frozenset[str] | None
    fail_fast: bool = True
    max_parallel: int | None = None
    #: False when ``strategy.matrix`` is not a mapping: references to it go unchecked.
    readable: bool = True
    #: A matrix computed at run time (``dynamic_matrix``), as written in plain form, with
    #: where each of its expressions is: (path, text, position). None for a static matrix.
    dynamic: Any = None
    expressions: tuple[tuple[str, str, Pos], ...] = ()


def _has_expression(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_expression(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_expression(v) for v in value)
    return isinstance(value, str) and "${{" in value


def _entries(src: Source, value: Any, pos: Pos, path: str) -> list[MarkedMap]:
    """The mappings of an include/exclude list."""
    if not isinstance(value, MarkedList):
        src.error(f"{path}: must be a list of mappings of matrix keys to values", pos)
        return []
    if len(value) > MAX_MATRIX_ENTRIES:
        src.error(f"{path}: {len(value)} entries; the limit is {MAX_MATRIX_ENTRIES}", pos)
        return []
    for item, ipos in zip(value, value.pos, strict=True):
        if not isinstance(item, MarkedMap) or not item:
            src.error(f"{path}: each entry must be a mapping of matrix keys to values", ipos)
    return [item for item in value if isinstance(item, MarkedMap)]


def _check_exclude(
    src: Source, exclude: list[MarkedMap], axes: dict[str, list[Any]], path: str
) -> None:
    """GitHub refuses an exclude that names a key the matrix does not have; so do we."""
    for i, entry in enumerate(exclude):
        for key in entry:
            if key not in axes:
                src.error(
                    f"{path}.exclude[{i}].{key}: {key!r} is not a key of the matrix; its "
                    f"keys are: {', '.join(axes) or 'none'}",
                    entry.key_pos[key],
                )


def _matrix(
    src: Source, matrix: Any, pos: Pos, path: str
) -> tuple[list[dict[str, Any]], frozenset[str] | None]:
    """Validate ``strategy.matrix`` and expand it; no cells when it is invalid."""
    if not isinstance(matrix, MarkedMap):
        src.error(
            f"{path}: must be a mapping of keys to lists of values (a matrix from an "
            "expression such as fromJSON is not supported)",
            pos,
        )
        return [], None
    axes: dict[str, list[Any]] = {}
    include: list[MarkedMap] = []
    exclude: list[MarkedMap] = []
    for key, value in matrix.items():
        vpos, kpath = matrix.value_pos[key], f"{path}.{key}"
        if _has_expression(value):
            src.error(f"{kpath}: expressions are not supported in a matrix; list the values", vpos)
        elif key == "include":
            include = _entries(src, value, vpos, kpath)
        elif key == "exclude":
            exclude = _entries(src, value, vpos, kpath)
        elif not isinstance(value, MarkedList) or not value:
            src.error(f"{kpath}: must be a non-empty list of values", vpos)
        else:
            axes[key] = plain(value)
    _check_exclude(src, exclude, axes, path)
    # Keys of invalid axes count too, so that their uses are not reported a second time.
    keys = frozenset(k for k in matrix if k not in ("include", "exclude")).union(*include)
    if not axes and not include:
        if keys:
            return [], keys  # every axis is invalid, and each is already reported
        src.error(f"{path}: needs at least one key with a list of values, or include:", pos)
        return [], keys
    try:
        cells = expand(axes, [plain(e) for e in include], [plain(e) for e in exclude])
    except TooManyCombinations as exc:
        src.error(
            f"{path}: {exc.count} combinations; the limit is {MAX_COMBINATIONS} "
            f"per job (and {MAX_PRODUCT} before exclude)",
            pos,
        )
        return [], keys
    if not cells:
        src.error(f"{path}: every combination is excluded; the matrix is empty", pos)
    return cells, keys


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and "${{" in value


def _is_dynamic(matrix: Any) -> bool:
    if _is_expression(matrix):
        return True
    return isinstance(matrix, MarkedMap) and any(_is_expression(v) for v in matrix.values())


def _dynamic(src: Source, matrix: Any, pos: Pos, path: str) -> tuple[tuple[str, str, Pos], ...]:
    """Check the written parts of a matrix computed at run time; its expressions."""
    if isinstance(matrix, str):
        return ((path, matrix, pos),)
    found: list[tuple[str, str, Pos]] = []
    for key, value in matrix.items():
        vpos, kpath = matrix.value_pos[key], f"{path}.{key}"
        if _is_expression(value):
            found.append((kpath, value, vpos))
        elif _has_expression(value):
            src.error(f"{kpath}: an expression must be the whole value of a matrix key", vpos)
        elif key in ("include", "exclude"):
            _entries(src, value, vpos, kpath)
        elif not isinstance(value, MarkedList) or not value:
            src.error(f"{kpath}: must be a non-empty list of values", vpos)
    return tuple(found)


def read_strategy(src: Source, job: MarkedMap, path: str) -> Strategy:
    """The matrix cells of a job (one empty cell without a matrix) and its strategy."""
    if "strategy" not in job:
        return Strategy([{}], None)
    strategy, spos, path = job["strategy"], job.value_pos["strategy"], f"{path}.strategy"
    if not isinstance(strategy, MarkedMap):
        src.error(f"{path}: must be a mapping with matrix:, fail-fast:, max-parallel:", spos)
        return Strategy([{}], None)
    src.check_keys(strategy, path, "strategy", STRATEGY_KEYS)
    fail_fast = strategy.get("fail-fast", True)
    if not isinstance(fail_fast, bool):
        src.error(f"{path}.fail-fast: must be true or false", strategy.value_pos["fail-fast"])
    max_parallel = strategy.get("max-parallel")
    if max_parallel is not None and (
        not isinstance(max_parallel, int) or isinstance(max_parallel, bool) or max_parallel < 1
    ):
        src.error(
            f"{path}.max-parallel: must be a whole number of at least 1",
            strategy.value_pos["max-parallel"],
        )
        max_parallel = None
    if "matrix" not in strategy:
        src.error(f"{path}: has no matrix:; ci-pool's strategy is a matrix", spos)
        return Strategy([{}], None)
    matrix, mpos = strategy["matrix"], strategy.value_pos["matrix"]
    if _is_dynamic(matrix):
        found = _dynamic(src, matrix, mpos, f"{path}.matrix")
        return Strategy(
            [{}], None, fail_fast is not False, max_parallel, False, plain(matrix), found
        )
    cells, keys = _matrix(src, matrix, mpos, f"{path}.matrix")
    # An invalid matrix still gets one (empty) cell, so its steps are checked too.
    return Strategy(
        cells or [{}], keys or frozenset(), fail_fast is not False, max_parallel, keys is not None
    )


def read_strategies(
    src: Source, jobs: MarkedMap, valid: Mapping[str, MarkedMap], max_jobs: int
) -> dict[str, Strategy] | None:
    """Each job's strategy, read once per job mapping (aliases of a job share it); None,
    with the error, once the jobs and their matrix cells come to more than ``max_jobs``."""
    read: dict[int, Strategy] = {}
    strategies: dict[str, Strategy] = {}
    total = 0
    for job_id, job in valid.items():
        if id(job) not in read:
            read[id(job)] = read_strategy(src, job, f"jobs.{job_id}")
        strategies[job_id] = read[id(job)]
        total += len(strategies[job_id].cells)
        if total > max_jobs:
            src.error(
                f"jobs.{job_id}: the workflow has more than {max_jobs} jobs, matrix cells "
                "counted (max_jobs_per_pipeline); split it into several workflows",
                jobs.key_pos[job_id],
            )
            return None
    return strategies


def cell_keys(job_id: str, cells: list[dict[str, Any]], has_matrix: bool) -> list[str]:
    """GitHub's names for matrix cells, "build (linux, 3.11)", made unique if need be."""
    if not has_matrix:
        return [job_id]
    keys: list[str] = []
    for cell in cells:
        key = f"{job_id} ({label(cell)})"
        n = 2
        while key in keys:
            key, n = f"{job_id} ({label(cell)}) #{n}", n + 1
        keys.append(key)
    return keys
