"""Expressions: tokenizer and parser, GitHub's loose evaluation, templates, folding."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ci_pool.core.workflow.expressions import (
    Binary,
    Call,
    Expr,
    ExpressionError,
    Literal,
    Not,
    Ref,
    condition,
    evaluate,
    fold,
    format_problem,
    loose_equal,
    parse,
    parse_template,
    render,
    template_text,
    to_text,
    truthy,
    unparse,
    uses_status_function,
)

CTX: dict[str, Any] = {
    "github": {"ref": "refs/heads/main", "sha": "abc123", "event_name": "push"},
    "env": {"MODE": "Release", "EMPTY": ""},
    "matrix": {"os": "linux", "py": 3.12, "cfg": {"arch": "arm64"}, "tags": ["a", "b"]},
    "needs": {"build": {"result": "success", "outputs": {"version": "1.2.3"}}},
    "steps": {"ver": {"outputs": {"v": "7"}, "outcome": "failure"}},
}


def ev(text: str, status: str = "success") -> Any:
    return evaluate(text, CTX, status)


# -- parsing -----------------------------------------------------------------------------


def test_literals() -> None:
    assert parse("'it''s'") == Literal("it's", 0)
    assert parse("42") == Literal(42, 0)
    assert parse("-1.5") == Literal(-1.5, 0)
    assert parse("0xff").value == 255  # type: ignore[union-attr]
    assert parse("1e3").value == 1000.0  # type: ignore[union-attr]
    assert parse("true") == Literal(True, 0)
    assert parse("null") == Literal(None, 0)
    assert math.isnan(parse("NaN").value)  # type: ignore[arg-type, union-attr]


def test_references_with_dots_indexes_and_hyphens() -> None:
    assert parse("needs.build-linux.outputs['my-out']").path == (  # type: ignore[union-attr]
        "needs",
        "build-linux",
        "outputs",
        "my-out",
    )
    assert parse("matrix.tags[1]").path == ("matrix", "tags", 1)  # type: ignore[union-attr]


def test_precedence() -> None:
    # ! binds tighter than ==, which binds tighter than &&, which binds tighter than ||.
    tree = parse("!a == b && c || d")
    assert isinstance(tree, Binary) and tree.op == "||"
    assert isinstance(tree.left, Binary) and tree.left.op == "&&"
    eq = tree.left.left
    assert isinstance(eq, Binary) and eq.op == "==" and isinstance(eq.left, Not)


def test_calls_keep_their_spelling_and_compare_case_insensitively() -> None:
    call = parse("StartsWith(github.ref, 'refs/')")
    assert isinstance(call, Call) and call.name == "StartsWith" and call.function == "startswith"
    assert ev("StartsWith(github.ref, 'REFS/')") is True


@pytest.mark.parametrize(
    ("text", "offset", "words"),
    [
        ('github.ref == "main"', 14, "single quotes"),
        ("a ==", 4, "expected a value"),
        ("(a", 2, "expected ')'"),
        ("a b", 2, "unexpected 'b'"),
        ("", 0, "empty"),
        ("a.", 2, "property name"),
        ("a[b]", 2, "literal"),
        ("a # b", 2, "unexpected character"),
    ],
)
def test_parse_errors_say_where(text: str, offset: int, words: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert info.value.offset == offset
    assert words in str(info.value)


def test_offsets_count_from_base() -> None:
    ref = parse("x.y", base=10)
    assert ref.offset == 10
    with pytest.raises(ExpressionError) as info:
        parse("x ==", base=10)
    assert info.value.offset == 14


# -- evaluation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("github.ref == 'REFS/HEADS/MAIN'", True),  # strings compare ignoring case
        ("github.ref != 'refs/heads/main'", False),
        ("matrix.py == '3.12'", True),  # mixed types compare as numbers
        ("null == 0", True),
        ("true == 1", True),
        ("'' == 0", True),
        ("'abc' == 0", False),  # NaN equals nothing
        ("matrix.cfg == matrix.cfg", True),  # same object
        ("matrix.tags == 'a'", False),
        ("1 < 2", True),
        ("'b' > 'A'", True),
        ("'x' < 1", False),  # NaN: every comparison is false
        ("'x' >= 1", False),
        ("2 <= 2", True),
        ("!env.EMPTY", True),
        ("!matrix.cfg", False),  # objects are truthy
        ("env.MODE && 'yes'", "yes"),  # && and || return operands, like JavaScript
        ("env.EMPTY || 'fallback'", "fallback"),
        ("env.EMPTY && 'never'", ""),
        ("needs.build.outputs.version", "1.2.3"),
        ("NEEDS.Build.Result", "success"),  # context and property names ignore case
        ("steps.ver.outputs.v == 7", True),
        ("matrix.cfg.arch", "arm64"),
        ("matrix.tags[0]", "a"),
        ("matrix.tags[5]", None),
        ("matrix.missing.deeper", None),
        ("contains(matrix.tags, 'B')", True),  # arrays: loose equality, which ignores case
        ("contains(matrix.tags, 'c')", False),
        ("contains('Hello World', 'WORLD')", True),
        ("startsWith(github.ref, 'refs/heads/')", True),
        ("endsWith(github.sha, '123')", True),
        ("format('{0}-{1}-{0}', 'a', 1)", "a-1-a"),
        ("format('{{{0}}}', 'x')", "{x}"),
    ],
)
def test_evaluate(text: str, expected: Any) -> None:
    assert ev(text) == expected


@pytest.mark.parametrize(
    ("status", "success", "failure", "cancelled"),
    [
        ("success", True, False, False),
        ("failure", False, True, False),
        ("cancelled", False, False, True),
    ],
)
def test_status_functions(status: str, success: bool, failure: bool, cancelled: bool) -> None:
    assert ev("success()", status) is success
    assert ev("failure()", status) is failure
    assert ev("cancelled()", status) is cancelled
    assert ev("always()", status) is True


def test_condition_is_truthiness() -> None:
    assert condition("env.MODE", CTX) is True
    assert condition("env.EMPTY", CTX) is False
    assert condition("0", CTX) is False
    assert condition("NaN", CTX) is False


def test_uses_status_function() -> None:
    assert uses_status_function(parse("always() && x"))
    assert uses_status_function(parse("!(Failure())"))
    assert not uses_status_function(parse("contains(a, 'b')"))


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, ""), (True, "true"), (False, "false"), (3, "3"), (3.0, "3"), (2.5, "2.5"),
     (math.inf, "Infinity"), (math.nan, "NaN"), ("s", "s"), ({"a": [1]}, '{"a":[1]}')],
)  # fmt: skip
def test_to_text(value: Any, text: str) -> None:
    assert to_text(value) == text


def test_truthy() -> None:
    assert [truthy(v) for v in (None, False, 0, 0.0, "", math.nan)] == [False] * 6
    assert [truthy(v) for v in (True, 1, -1, "0", "false", {}, [])] == [True] * 7


def test_loose_equal_numbers_from_strings() -> None:
    assert loose_equal("0x10", 16)
    assert loose_equal(" 1.5e1 ", 15)
    assert not loose_equal("1_0", 10)  # not a JSON number


def test_format_problems() -> None:
    assert format_problem("{0} {1}", 2) is None
    assert "lone" in (format_problem("a } b", 0) or "")
    assert "{2}" in (format_problem("{2}", 1) or "")
    with pytest.raises(ValueError, match="lone"):
        evaluate("format('{', 1)", {})


# -- templates ---------------------------------------------------------------------------


def test_parse_template_splits_text_and_expressions() -> None:
    parts = parse_template("a ${{ x.y }} b ${{'}}'}}")
    assert parts[0] == "a " and parts[2] == " b "
    assert isinstance(parts[1], Ref) and parts[1].offset == 6
    assert parts[3] == Literal("}}", 18)  # '}}' inside a string does not close


def test_parse_template_errors() -> None:
    with pytest.raises(ExpressionError, match="not closed") as info:
        parse_template("echo ${{ github.ref")
    assert info.value.offset == 5
    with pytest.raises(ExpressionError, match="empty"):
        parse_template("${{   }}")


def test_render() -> None:
    text = "ref=${{ github.ref }} v=${{ needs.build.outputs.version }} none=${{ env.NOPE }}"
    assert render(text, CTX) == "ref=refs/heads/main v=1.2.3 none="
    assert render("no expressions", {}) == "no expressions"


# -- folding and unparsing ---------------------------------------------------------------


def test_fold_substitutes_known_contexts_and_keeps_the_rest() -> None:
    known = {"matrix": {"os": "linux"}}
    assert fold(parse("matrix.os == 'linux'"), known) == Literal(True, 10)
    folded = fold(parse("matrix.os == 'linux' && github.ref == 'x'"), known)
    assert unparse(folded) == "github.ref == 'x'"
    assert unparse(fold(parse("matrix.os == 'mac' && github.ref == 'x'"), known)) == "false"
    assert unparse(fold(parse("success() || matrix.os"), known)) == "success() || 'linux'"


def test_fold_keeps_objects_as_references() -> None:
    known = {"matrix": {"cfg": {"arch": "arm64"}}}
    assert unparse(fold(parse("matrix.cfg"), known)) == "matrix.cfg"
    assert fold(parse("matrix.cfg.arch"), known) == Literal("arm64", 0)


def test_fold_leaves_failing_calls_for_the_runtime() -> None:
    assert isinstance(fold(parse("format('{3}', 1)"), {}), Call)


def test_template_text_inlines_literals_but_quotes_dollar_braces() -> None:
    parts = parse_template("a ${{ matrix.x }} b ${{ github.sha }}")
    folded = tuple(p if isinstance(p, str) else fold(p, {"matrix": {"x": 1}}) for p in parts)
    assert template_text(folded) == "a 1 b ${{ github.sha }}"
    sneaky = tuple(
        p if isinstance(p, str) else fold(p, {"matrix": {"x": "${{ github.sha }}"}}) for p in parts
    )
    text = template_text(sneaky)
    # The value is written as a string literal: rendering shows it, never evaluates it.
    assert render(text, CTX) == "a ${{ github.sha }} b abc123"


def test_unparse_parenthesizes_only_where_needed() -> None:
    assert unparse(parse("(a || b) && !(c == d)")) == "(a || b) && !(c == d)"
    assert unparse(parse("a || b && c")) == "a || b && c"
    assert unparse(parse("a == (b == c)")) == "a == (b == c)"
    assert unparse(parse("x['with space'][0]")) == "x['with space'][0]"
    assert unparse(parse("'it''s'")) == "'it''s'"


# -- object filters ----------------------------------------------------------------------

FILTER_CTX: dict[str, Any] = {
    "needs": {
        "build": {"result": "success", "outputs": {"v": "1"}},
        "test": {"result": "failure", "outputs": {}},
    },
    "github": {
        "event": {
            "commits": [
                {"id": "a1", "author": {"name": "ann"}},
                {"id": "b2", "author": {"name": "bob"}},
                {"id": "c3"},
            ]
        }
    },
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("needs.*.result", ["success", "failure"]),
        ("contains(needs.*.result, 'failure')", True),
        ("contains(needs.*.result, 'cancelled')", False),
        ("join(needs.*.result, '+')", "success+failure"),
        ("needs.*.outputs.v", ["1"]),  # items without the key are left out
        ("github.event.commits.*.author.name", ["ann", "bob"]),
        ("github.event.commits[*].id", ["a1", "b2", "c3"]),
        ("github.event.commits.*.author.*", ["ann", "bob"]),
        ("fromJSON('[[1, 2], [3]]').*.*", [1, 2, 3]),
        ("fromJSON('[[1, 2], [3]]').*[0]", [1, 3]),
        ("github.event.nothing.*.id", []),
        ("github.event.commits.*.id == 'a1'", False),  # an array is no string
    ],
)
def test_object_filters_select_every_item(text: str, expected: Any) -> None:
    assert evaluate(text, FILTER_CTX) == expected


def test_object_filters_write_back_as_they_parse() -> None:
    for text in ("needs.*.result", "x[*].y", "fromJSON('[1]').*"):
        assert unparse(parse(unparse(parse(text)))) == unparse(parse(text))
    assert unparse(parse("x[*].y")) == "x.*.y"
    # A quoted '*' is a property named '*', not a filter.
    assert evaluate("x['*']", {"x": {"*": 1, "a": 2}}) == 1


@pytest.mark.parametrize("text", ["needs.**", "needs.*x", "*", "a * b"])
def test_a_misplaced_star_is_a_parse_error(text: str) -> None:
    with pytest.raises(ExpressionError):
        parse(text)


# -- properties --------------------------------------------------------------------------

_names = st.sampled_from(["github.ref", "env.MODE", "env.EMPTY", "matrix.os", "matrix.py"])
_literals = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from([0.5, 3.12]),
    st.text(alphabet="ab'{} ", max_size=4),
)


def _exprs() -> st.SearchStrategy[Expr]:
    leaves = st.one_of(
        _literals.map(Literal),
        _names.map(lambda n: Ref(tuple(n.split(".")))),
    )

    def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "&&", "||"])
        return st.one_of(
            st.builds(Binary, ops, children, children),
            st.builds(Not, children),
            st.builds(lambda a, b: Call("contains", (a, b)), children, children),
            st.builds(lambda a: Call("startsWith", (a, Literal("a"))), children),
        )

    return st.recursive(leaves, extend, max_leaves=8)


def _same(a: Any, b: Any) -> bool:
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or (
        type(a) is type(b) and a == b
    )


@given(_exprs())
def test_unparse_parses_back_to_an_equivalent_expression(expr: Expr) -> None:
    text = unparse(expr)
    assert unparse(parse(text)) == text
    assert _same(evaluate(parse(text), CTX), evaluate(expr, CTX))


@given(_exprs())
def test_folding_the_matrix_does_not_change_the_value(expr: Expr) -> None:
    folded = fold(expr, {"matrix": CTX["matrix"]})
    assert _same(evaluate(folded, CTX), evaluate(expr, CTX))
    assert _same(evaluate(parse(unparse(folded)), CTX), evaluate(expr, CTX))
