"""YAML with positions: marks of keys and values, YAML 1.2 scalars, duplicate keys, and
locating a character of a scalar in the file."""

from __future__ import annotations

import pytest

from ci_pool.core.workflow.yaml_source import MarkedList, MarkedMap, Pos, Source, plain


def load(text: str) -> tuple[object, Source]:
    src = Source("f.yml", text)
    return src.load(), src


def test_marks_of_keys_values_and_items() -> None:
    data, src = load("a: 1\nb:\n  - x\n  - 'y'\n")
    assert isinstance(data, MarkedMap) and src.errors == []
    assert data.key_pos["a"] == Pos(1, 1) and data.value_pos["a"] == Pos(1, 4)
    items = data["b"]
    assert isinstance(items, MarkedList)
    assert items.pos == [Pos(3, 5), Pos(4, 5, "'")]
    assert plain(data) == {"a": 1, "b": ["x", "y"]} and type(plain(data)) is dict


@pytest.mark.parametrize(
    ("scalar", "value"),
    [("on", "on"), ("yes", "yes"), ("Off", "Off"), ("true", True), ("FALSE", False),
     ("017", "017"), ("1:30", "1:30"), ("0x1f", 31), ("-12", -12), ("3.10", 3.1),
     ("2024-01-02", "2024-01-02"), ("~", None)],
)  # fmt: skip
def test_yaml_1_2_core_scalars(scalar: str, value: object) -> None:
    data, _ = load(f"k: {scalar}\n")
    assert isinstance(data, dict) and data["k"] == value and type(data["k"]) is type(value)


def test_duplicate_and_non_string_keys() -> None:
    data, src = load("a: 1\nb: 2\na: 3\n1: x\n")
    assert isinstance(data, dict) and data == {"a": 1, "b": 2}  # the first one is kept
    assert [str(e) for e in src.errors] == [
        "f.yml:3:1: a: duplicate key (first given on line 1)",
        "f.yml:4:1: keys must be strings, not 1",
    ]


def test_same_error_twice_is_kept_once_and_errors_are_sorted() -> None:
    src = Source("f.yml", "")
    src.error("b", Pos(2, 1))
    src.error("a", Pos(1, 5))
    src.error("b", Pos(2, 1))
    src.error("nowhere", None)
    assert [(e.line, e.column, str(e)) for e in src.errors] == [
        (0, 0, "f.yml:0:0: nowhere"),
        (1, 5, "f.yml:1:5: a"),
        (2, 1, "f.yml:2:1: b"),
    ]


def test_syntax_errors_have_a_position() -> None:
    data, src = load("a: [1, 2\n")
    assert data is None
    [err] = src.errors
    assert err.line == 2 and "not valid YAML" in str(err)


def test_check_keys() -> None:
    data, src = load("run: x\nbogus: 1\nservices: {}\n")
    assert isinstance(data, MarkedMap)
    src.check_keys(data, "jobs.a", "job", ("run",), {"services": "not supported"})
    assert [str(e) for e in src.errors] == [
        "f.yml:2:1: jobs.a.bogus: unknown key. A job may have: run",
        "f.yml:3:1: jobs.a.services: not supported. A job may have: run",
    ]


def test_locate_in_plain_quoted_and_block_scalars() -> None:
    text = 'a: echo ${{ x }}\nb: "q ${{ y }}"\nc: |\n  one\n    two ${{ z }}\n'
    data, src = load(text)
    assert isinstance(data, MarkedMap)
    assert src.locate(data.value_pos["a"], data["a"], data["a"].index("$")) == Pos(1, 9)
    assert src.locate(data.value_pos["b"], data["b"], data["b"].index("$")) == Pos(2, 7)
    # In a block, the text starts on the next line, after the block's indentation.
    assert src.locate(data.value_pos["c"], data["c"], data["c"].index("$")) == Pos(5, 9)


def test_locate_in_folded_scalars() -> None:
    data, src = load("a: one ${{ x }}\n  two ${{ x }}\nb: >\n  ${{ y }}\n  ${{ y }}\n")
    assert isinstance(data, MarkedMap)
    assert src.locate(data.value_pos["a"], data["a"], data["a"].rindex("$")) == Pos(2, 7)
    assert src.locate(data.value_pos["b"], data["b"], data["b"].rindex("$")) == Pos(5, 3)


def test_locate_falls_back_to_the_value_start() -> None:
    data, src = load('a: "\\u0041 ${{ x }}"\n')  # an escape: the text is not in the file
    assert isinstance(data, MarkedMap)
    assert src.locate(data.value_pos["a"], data["a"], 0) == Pos(1, 4, '"')
