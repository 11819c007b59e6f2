"""``workflow_dispatch`` inputs: the values a run was given, typed and checked against the
inputs the workflow declares (``on.workflow_dispatch.inputs``), as GitHub does.

Types: ``string`` (the default), ``boolean`` (true/false), ``number``, ``choice`` (one of
``options``) and ``environment`` (a name). ``required`` inputs need a value or a
``default``; an input the workflow does not declare is an error. Every error names the
input (``inputs.NAME``) and says what to give instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ci_pool.defaults import MAX_INPUT_VALUE_BYTES, MAX_INPUTS
from ci_pool.exceptions import InputError

DISPATCH = "workflow_dispatch"
INPUT_TYPES = ("string", "boolean", "number", "choice", "environment")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$")
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


def declared_inputs(on: Any) -> dict[str, dict[str, Any]] | None:
    """The inputs ``on.workflow_dispatch`` declares; None when the workflow has no
    ``workflow_dispatch`` trigger at all."""
    if on == DISPATCH or (isinstance(on, list) and DISPATCH in on):
        return {}
    if not isinstance(on, dict) or DISPATCH not in on:
        return None
    dispatch = on[DISPATCH]
    inputs = dispatch.get("inputs") if isinstance(dispatch, dict) else None
    if inputs is None:
        return {}
    if not isinstance(inputs, dict):
        raise InputError("must be a mapping of input names", field="on.workflow_dispatch.inputs")
    return {str(k): v if isinstance(v, dict) else {} for k, v in inputs.items()}


def _boolean(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise InputError(f"{value!r} is not a boolean; give true or false", field=field)
    return text == "true"


def _number(value: Any, field: str) -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if not _NUMBER.match(text):
        raise InputError(f"{value!r} is not a number", field=field)
    number = float(text)
    if not math.isfinite(number):
        raise InputError(f"{value!r} is not a finite number", field=field)
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def _typed(name: str, spec: Mapping[str, Any], value: Any) -> Any:
    """``value`` as the input's declared type."""
    field = f"inputs.{name}"
    kind = spec.get("type", "string")
    if kind not in INPUT_TYPES:
        raise InputError(
            f"type {kind!r} is not an input type; use {', '.join(INPUT_TYPES)}",
            field=f"on.workflow_dispatch.inputs.{name}.type",
        )
    if kind == "boolean":
        return _boolean(value, field)
    if kind == "number":
        return _number(value, field)
    text = "" if value is None else str(value)
    if kind == "choice":
        options = spec.get("options")
        if not isinstance(options, list) or not options:
            raise InputError(
                "a choice input needs a list of options",
                field=f"on.workflow_dispatch.inputs.{name}.options",
            )
        if text not in [str(o) for o in options]:
            listed = ", ".join(str(o) for o in options)
            raise InputError(f"{text!r} is not one of the options: {listed}", field=field)
    return text


def check_given(given: Mapping[str, str]) -> dict[str, str]:
    """The bounds on inputs as given (API body, ``--input``): count, names and sizes."""
    if len(given) > MAX_INPUTS:
        raise InputError(f"{len(given)} inputs given; at most {MAX_INPUTS}", field="inputs")
    for name, value in given.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise InputError(
                f"{name!r} is not an input name (letters, digits, _ and -)", field="inputs"
            )
        if not isinstance(value, str):
            raise InputError("must be a string", field=f"inputs.{name}")
        if len(value.encode()) > MAX_INPUT_VALUE_BYTES:
            raise InputError(f"is over {MAX_INPUT_VALUE_BYTES} bytes", field=f"inputs.{name}")
    return dict(given)


def dispatch_inputs(on: Any, given: Mapping[str, str], event: str) -> dict[str, Any]:
    """The ``inputs`` context of a run of this workflow for ``event``: given values typed,
    defaults filled in. Inputs exist only for ``workflow_dispatch``."""
    given = check_given(given)
    declared = declared_inputs(on)
    if event != DISPATCH:
        if given:
            raise InputError(
                f"inputs are given only to a workflow_dispatch run, not {event!r}; "
                "drop --event (it becomes workflow_dispatch) or the inputs",
                field="inputs",
            )
        return {}
    if declared is None:
        if given:
            raise InputError(
                "the workflow has no on.workflow_dispatch trigger, so it takes no inputs; "
                "declare them under on.workflow_dispatch.inputs",
                field="inputs",
            )
        return {}
    unknown = [n for n in given if n not in declared]
    if unknown:
        have = ", ".join(declared) or "none"
        raise InputError(
            f"the workflow declares no input {unknown[0]!r}; its inputs: {have}",
            field=f"inputs.{unknown[0]}",
        )
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in given:
            values[name] = _typed(name, spec, given[name])
        elif "default" in spec and spec["default"] is not None:
            values[name] = _typed(name, spec, spec["default"])
        elif spec.get("required") is True:
            raise InputError(
                f"is required; give it with --input {name}=VALUE", field=f"inputs.{name}"
            )
        else:
            values[name] = _typed(name, {**spec, "type": "string"}, "")
            if spec.get("type") == "boolean":
                values[name] = False
    return values
