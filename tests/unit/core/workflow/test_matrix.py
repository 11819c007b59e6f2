"""Matrix expansion: GitHub's documented examples and properties of product/exclude/include."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ci_pool.core.workflow.matrix import expand, label, matches, product_size, same


def test_product_in_written_order() -> None:
    cells = expand({"os": ["linux", "android"], "v": [1, 2]})
    assert cells == [
        {"os": "linux", "v": 1},
        {"os": "linux", "v": 2},
        {"os": "android", "v": 1},
        {"os": "android", "v": 2},
    ]


def test_exclude_is_a_partial_match() -> None:
    cells = expand(
        {"os": ["macos", "windows"], "version": [12, 14, 16], "env": ["staging", "prod"]},
        exclude=[{"os": "macos", "version": 12, "env": "prod"}, {"os": "windows", "version": 16}],
    )
    assert len(cells) == 12 - 1 - 2  # GitHub's documented example: 9 jobs
    assert {"os": "windows", "version": 16, "env": "staging"} not in cells


def test_githubs_include_example() -> None:
    cells = expand(
        {"fruit": ["apple", "pear"], "animal": ["cat", "dog"]},
        include=[
            {"color": "green"},
            {"color": "pink", "animal": "cat"},
            {"fruit": "apple", "shape": "circle"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"},
        ],
    )
    assert cells == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_githubs_expanding_configurations_example() -> None:
    cells = expand(
        {"os": ["windows-latest", "ubuntu-latest"], "node": [14, 16]},
        include=[{"os": "windows-latest", "node": 16, "npm": 6}],
    )
    assert cells[1] == {"os": "windows-latest", "node": 16, "npm": 6}
    assert all("npm" not in c for i, c in enumerate(cells) if i != 1)


def test_include_only() -> None:
    assert expand({}, include=[{"a": 1}, {"a": 2, "b": 3}]) == [{"a": 1}, {"a": 2, "b": 3}]


def test_values_compare_strictly() -> None:
    assert not same(1, True) and not same(1, 1.0) and not same(1, "1")
    assert same({"a": [1, 2]}, {"a": [1, 2]})
    # An include value 1 does not match the matrix value true: it becomes its own cell.
    assert expand({"x": [True]}, include=[{"x": 1}]) == [{"x": True}, {"x": 1}]


def test_label_and_size() -> None:
    assert label({"os": "linux", "py": 3.1, "ok": False, "cfg": {"a": 1}}) == (
        'linux, 3.1, false, {"a":1}'
    )
    assert product_size({"a": [1, 2], "b": [1, 2, 3]}) == 6
    assert product_size({}) == 0


# -- properties --------------------------------------------------------------------------

_values = st.one_of(st.integers(0, 3), st.sampled_from(["a", "b", "c"]))
_axes = st.dictionaries(
    st.sampled_from(["os", "py", "arch"]), st.lists(_values, min_size=1, max_size=3, unique=True)
)


@st.composite
def _matrices(
    draw: st.DrawFn,
) -> tuple[dict[str, list[Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    axes = draw(_axes)
    keys = sorted(axes)
    exclude: list[dict[str, Any]] = []
    if keys:
        partial = st.lists(st.sampled_from(keys), unique=True, min_size=1)
        for ks in draw(st.lists(partial, max_size=3)):
            exclude.append({k: draw(st.sampled_from(axes[k])) for k in ks})
    include_keys = st.lists(st.sampled_from([*keys, "extra", "flag"]), unique=True, min_size=1)
    include = [{k: draw(_values) for k in ks} for ks in draw(st.lists(include_keys, max_size=4))]
    return axes, include, exclude


@given(_matrices())
def test_without_include_the_size_is_the_product_minus_excluded(
    matrix: tuple[dict[str, list[Any]], list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    axes, _, exclude = matrix
    cells = expand(axes, exclude=exclude)
    product = [dict(zip(axes, v, strict=True)) for v in itertools.product(*axes.values())]
    excluded = [c for c in product if any(matches(c, e) for e in exclude)] if axes else []
    assert len(cells) == (product_size(axes) - len(excluded) if axes else 0)
    assert not any(matches(c, e) for c in cells for e in exclude)


@given(_matrices())
def test_include_never_changes_original_values_and_adds_what_fits_nowhere(
    matrix: tuple[dict[str, list[Any]], list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    axes, include, exclude = matrix
    base = expand(axes, exclude=exclude)
    cells = expand(axes, include, exclude)
    # The original combinations keep their place and their matrix values...
    assert [{k: c[k] for k in axes} for c in cells[: len(base)]] == base
    # ...and no cell matches an exclude on the original keys.
    assert not any(matches({k: c[k] for k in axes}, e) for c in cells[: len(base)] for e in exclude)

    def fits(entry: dict[str, Any], combo: dict[str, Any]) -> bool:
        return all(same(combo[k], v) for k, v in entry.items() if k in axes)

    # An entry that fits no original combination is a cell of its own, as written.
    homeless = [e for e in include if not any(fits(e, b) for b in base)]
    assert cells[len(base) :] == homeless
    # Every added key of a cell holds the value of the last include entry that fitted it.
    for combo, cell in zip(base, cells, strict=False):
        for key in set(cell) - set(axes):
            last = [e[key] for e in include if key in e and fits(e, combo)][-1]
            assert same(cell[key], last)
    # The last entry of all always shows in full somewhere.
    if include:
        assert any(all(same(c.get(k), v) for k, v in include[-1].items()) for c in cells)
