"""Fuzzing of the parsers of outside input: the YAML loader, the workflow parser and the
expression parser. Any input either parses or is refused with the project's own error
(WorkflowError, WorkflowErrors, ExpressionError), never another exception, within a time
and memory bound per example.

``CI_POOL_FUZZ_EXAMPLES`` sets the examples per test (200 by default, for CI); raise it
to fuzz longer. A crash hypothesis finds becomes a regression test below.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ci_pool.core.workflow.expressions import ExpressionError, parse, parse_template, unparse
from ci_pool.core.workflow.parser import parse_workflow, validate_workflow
from ci_pool.core.workflow.yaml_source import Source
from ci_pool.exceptions import CIPoolError
from ci_pool.settings import Settings

EXAMPLES = int(os.environ.get("CI_POOL_FUZZ_EXAMPLES", "200"))
#: Per example: wall time (generous: the bounds make each a few ms) and peak RSS growth.
SECONDS = 2.0
MEGABYTES = 50

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,  # timed by ``bounded`` instead, which also bounds memory
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
CAPABILITIES = Settings(home=Path("/nonexistent")).capabilities


@contextmanager
def bounded() -> Iterator[None]:
    before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
    yield
    elapsed = time.monotonic() - started
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert elapsed < SECONDS, f"took {elapsed:.2f}s"
    assert grown < MEGABYTES, f"peak RSS grew {grown:.0f} MB"


# -- inputs -----------------------------------------------------------------------------

#: Pieces of YAML syntax, anchors and aliases included, and characters that must be refused.
YAML_PIECES = [
    "on: ", "jobs:", "\n", "  ", "- ", "[", "]", "{", "}", ", ", ": ", "&a ", "&b ", "*a",
    "*b", "!!str ", "!!python/object ", "? ", "'", '"', "|\n", ">\n", "#", "---\n", "...\n",
    "<<: ", "run: ", "runs-on: linux", "steps:", "${{ ", " }}", "x", "1", "true", "null",
    "\x00", "\x07", "\x1b", "\ufeff", "\x85", "\t", "\r\n", "\ud800",
]  # fmt: skip
yaml_texts = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(YAML_PIECES), max_size=80).map("".join),
)

WORKFLOW_KEYS = [
    "name", "on", "env", "defaults", "jobs", "runs-on", "needs", "if", "steps", "run",
    "strategy", "matrix", "include", "exclude", "outputs", "uses", "with", "container",
    "timeout-minutes", "continue-on-error", "shell", "id", "working-directory", "push",
    "branches", "build", "test", "image", "fail-fast", "max-parallel", "a", "b",
]  # fmt: skip
SCALARS = st.one_of(
    st.sampled_from(
        [
            "linux",
            "echo hi",
            "${{ matrix.a }}",
            "${{ needs.build.outputs.x }}",
            "push",
            "${{ github.ref == 'refs/heads/main' }}",
            "actions/checkout@v4",
            "bash",
            "main",
            "${{ (((",
            "${{ }}",
            "a\x00b",
            "${{ format('{0}', matrix.b) }}",
            "",
        ]
    ),
    st.integers(-3, 300),
    st.booleans(),
    st.none(),
    st.text(max_size=20),
)
structures: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.sampled_from(WORKFLOW_KEYS), inner, max_size=6),
    ),
    max_leaves=40,
)


def workflow_shaped(jobs: dict[str, Any], on: Any) -> str:
    return yaml.safe_dump({"on": on, "jobs": jobs}, sort_keys=False, allow_unicode=True)


job = st.fixed_dictionaries(
    {"runs-on": st.sampled_from(["linux", "android", ["linux"], "nope"])},
    optional={
        "steps": st.lists(
            st.fixed_dictionaries({}, optional={"run": SCALARS, "if": SCALARS, "id": SCALARS}),
            max_size=4,
        ),
        "needs": st.one_of(st.sampled_from(["a", "b", "c"]), st.lists(st.sampled_from("abc"))),
        "strategy": st.fixed_dictionaries(
            {
                "matrix": st.dictionaries(
                    st.sampled_from(["x", "y", "include", "exclude"]),
                    st.lists(st.one_of(SCALARS, st.dictionaries(st.sampled_from("xyz"), SCALARS))),
                    max_size=3,
                )
            }
        ),
        "if": SCALARS,
        "env": st.dictionaries(st.sampled_from(["A", "B", "bad key"]), SCALARS, max_size=2),
        "outputs": st.dictionaries(st.sampled_from(["o", "p"]), SCALARS, max_size=2),
    },
)
workflows = st.one_of(
    st.builds(
        workflow_shaped,
        st.dictionaries(st.sampled_from(["a", "b", "c", "1bad"]), job, max_size=3),
        st.one_of(st.just("push"), structures),
    ),
    structures.map(lambda data: yaml.safe_dump(data, allow_unicode=True)),
    yaml_texts,
)

EXPRESSION_PIECES = [
    "(", ")", "!", "==", "!=", "<", "<=", ">", ">=", "&&", "||", ",", ".", "[", "]", "'",
    "''", "'a'", "1", "0x1f", "-2.5e3", "1e999", "true", "null", "NaN", "github", "ref",
    "matrix", "os", "needs", "contains", "format", "success", "fromJSON", "*", " ", "\x00",
    "${{", "}}", '"',
]  # fmt: skip
expression_texts = st.one_of(
    st.text(max_size=100),
    st.lists(st.sampled_from(EXPRESSION_PIECES), max_size=60).map("".join),
)


def refused_only(call: Callable[[], object], *errors: type[Exception]) -> None:
    """``call`` returns, or raises one of ``errors``; nothing else, within the bounds."""
    with bounded():
        try:
            call()
        except errors:
            pass


# -- properties ---------------------------------------------------------------------------


@fuzz
@given(yaml_texts)
def test_yaml_loader_records_problems_and_never_raises(text: str) -> None:
    source = Source("f.yml", text)
    with bounded():
        source.load()
    for error in source.errors:
        assert error.file == "f.yml" and error.line >= 0


@fuzz
@given(workflows)
def test_workflow_parser_parses_or_reports_positioned_errors(text: str) -> None:
    refused_only(lambda: parse_workflow(text, "f.yml", CAPABILITIES), CIPoolError)
    with bounded():
        errors = validate_workflow(text, "f.yml", CAPABILITIES)
    for error in errors:
        assert str(error).startswith(f"f.yml:{error.line}:{error.column}: ")


@fuzz
@given(expression_texts)
def test_expression_parser_parses_or_raises_expression_error(text: str) -> None:
    refused_only(lambda: parse_template(text), ExpressionError)
    try:
        with bounded():
            expr = parse(text)
    except ExpressionError as exc:
        assert 0 <= exc.offset <= len(text)
        return
    # what parses, unparsed, parses to the same tree
    assert parse(unparse(expr)) == parse(unparse(parse(unparse(expr))))


# -- regressions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "on: &a [*a]\njobs: {}\n",  # an alias inside its own anchor
        "a: " + "[" * 200 + "]" * 200,  # deeper than the composer's recursion
        "x: &a [1,1,1,1,1,1,1,1,1,1]\n"
        + "".join(
            f"x{i}: &{c} [{','.join([f'*{p}'] * 10)}]\n"
            for i, (p, c) in enumerate(zip("abcdefg", "bcdefgh", strict=True))
        ),
        "on: push\x00\n",
        "\ud800",
    ],
)
def test_yaml_regressions(text: str) -> None:
    source = Source("f.yml", text)
    with bounded():
        assert source.load() is None
    assert source.errors


@pytest.mark.parametrize(
    "text", ["(" * 1000 + "a" + ")" * 1000, "!" * 5000 + "a", "||".join(["a"] * 5000)]
)
def test_expression_regressions(text: str) -> None:
    with bounded(), pytest.raises(ExpressionError, match="nested deeper than 32 levels"):
        parse(text)


def test_negative_infinity_unparses_to_an_expression_that_parses() -> None:
    expr = parse("-1E310 == x")
    assert unparse(expr) == "-1e999 == x"
    assert parse(unparse(expr)) == parse("-1e999 == x")
