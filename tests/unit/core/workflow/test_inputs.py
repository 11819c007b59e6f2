"""workflow_dispatch inputs: typed and checked against the declared inputs, each error
naming the input."""

from __future__ import annotations

from typing import Any

import pytest

from ci_pool.core.workflow.inputs import dispatch_inputs
from ci_pool.exceptions import InputError

ON: dict[str, Any] = {
    "push": None,
    "workflow_dispatch": {
        "inputs": {
            "version": {"type": "string", "required": True},
            "dry": {"type": "boolean", "default": True},
            "count": {"type": "number", "default": "2"},
            "level": {"type": "choice", "options": ["low", "high"], "default": "low"},
            "target": {"type": "environment"},
            "note": {"description": "no type: a string"},
        }
    },
}


def test_given_values_are_typed_and_defaults_filled_in() -> None:
    got = dispatch_inputs(
        ON, {"version": "1.0", "dry": "False", "count": "2.5", "level": "high"}, "workflow_dispatch"
    )
    assert got == {
        "version": "1.0",
        "dry": False,
        "count": 2.5,
        "level": "high",
        "target": "",
        "note": "",
    }


def test_defaults_have_their_type() -> None:
    got = dispatch_inputs(ON, {"version": "1"}, "workflow_dispatch")
    assert (got["dry"], got["count"], got["level"]) == (True, 2, "low")


@pytest.mark.parametrize(
    ("given", "field", "words"),
    [
        ({}, "inputs.version", "is required; give it with --input version=VALUE"),
        ({"version": "1", "colour": "red"}, "inputs.colour", "its inputs: version, dry"),
        ({"version": "1", "dry": "yes"}, "inputs.dry", "give true or false"),
        ({"version": "1", "count": "1e999"}, "inputs.count", "not a finite number"),
        ({"version": "1", "count": "two"}, "inputs.count", "'two' is not a number"),
        ({"version": "1", "level": "max"}, "inputs.level", "one of the options: low, high"),
        ({"version": "x" * (64 * 1024 + 1)}, "inputs.version", "is over"),
        ({"bad name": "1"}, "inputs", "is not an input name"),
        ({f"i{n}": "1" for n in range(26)}, "inputs", "at most 25"),
    ],
)
def test_bad_inputs_name_the_input(given: dict[str, str], field: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        dispatch_inputs(ON, given, "workflow_dispatch")
    assert caught.value.field == field
    assert words in str(caught.value)


def test_inputs_only_for_workflow_dispatch() -> None:
    assert dispatch_inputs(ON, {}, "push") == {}
    with pytest.raises(InputError, match="only to a workflow_dispatch run"):
        dispatch_inputs(ON, {"version": "1"}, "push")
    with pytest.raises(InputError, match=r"no on\.workflow_dispatch trigger"):
        dispatch_inputs({"push": None}, {"version": "1"}, "workflow_dispatch")
    assert dispatch_inputs(["push", "workflow_dispatch"], {}, "workflow_dispatch") == {}


def test_a_bad_declaration_is_named() -> None:
    on = {"workflow_dispatch": {"inputs": {"x": {"type": "float"}}}}
    with pytest.raises(InputError) as caught:
        dispatch_inputs(on, {"x": "1"}, "workflow_dispatch")
    assert caught.value.field == "on.workflow_dispatch.inputs.x.type"
    on = {"workflow_dispatch": {"inputs": {"x": {"type": "choice"}}}}
    with pytest.raises(InputError, match="needs a list of options"):
        dispatch_inputs(on, {"x": "1"}, "workflow_dispatch")
