"""Which ``uses:`` steps the built-in actions run: those whose inputs they all implement;
a step with any other input runs the real action from ``actions_url`` (said in the log),
or fails naming the input when there is no ``actions_url``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from ci_pool.core.actions import parse_uses
from ci_pool.exceptions import ActionError
from ci_pool.settings import Settings
from ci_pool.worker.actions import BUILTINS
from ci_pool.worker.actions.call import ActionCall, builtin_for

FORGE = "http://127.0.0.1:9/forge"


def call(uses: str, inputs: dict[str, str], actions_url: str | None = FORGE) -> ActionCall:
    lines: list[str] = []
    att: Any = SimpleNamespace(
        settings=Settings(actions_url=actions_url), logw=SimpleNamespace(line=lines.append)
    )
    no: Any = None
    c = ActionCall(att, no, 1, no, parse_uses(uses), inputs, {}, {}, "success", no)
    c.lines = lines  # type: ignore[attr-defined]
    return c


@pytest.mark.parametrize(
    ("uses", "inputs"),
    [
        (
            "actions/upload-artifact@v4",
            {"name": "d", "path": "x", "if-no-files-found": "error", "Retention-Days": "3"},
        ),
        ("actions/download-artifact@v4", {"pattern": "d-*", "merge-multiple": "true"}),
        ("actions/cache@v4", {"path": "x", "key": "k", "restore-keys": "k-"}),
        ("actions/cache/restore@v4", {"path": "x", "key": "k", "fail-on-cache-miss": "true"}),
        ("Actions/Cache/save@v3", {"path": "x", "key": "k"}),
    ],
)
def test_steps_within_a_builtins_inputs_run_the_builtin(uses: str, inputs: dict[str, str]) -> None:
    c = call(uses, inputs)
    assert builtin_for(c) is BUILTINS[c.ref.name].run
    assert c.lines == []  # type: ignore[attr-defined]


def test_an_uncovered_input_runs_the_real_action_and_says_why() -> None:
    c = call("actions/upload-artifact@v4", {"name": "cov", "include-hidden-files": "true"})
    assert builtin_for(c) is None
    assert c.lines == [  # type: ignore[attr-defined]
        "actions/upload-artifact@v4: the built-in does not cover input "
        "'include-hidden-files'; running the action from actions_url"
    ]


def test_a_full_url_action_with_an_uncovered_input_comes_from_its_host() -> None:
    c = call(
        "https://forge.example.invalid/actions/download-artifact@v4",
        {"run-id": "7", "github-token": "t"},
        actions_url=None,
    )
    assert builtin_for(c) is None
    assert c.lines == [  # type: ignore[attr-defined]
        "https://forge.example.invalid/actions/download-artifact@v4: the built-in does not "
        "cover inputs 'run-id', 'github-token'; running the action from "
        "https://forge.example.invalid"
    ]


def test_an_uncovered_input_without_actions_url_is_an_error_naming_it() -> None:
    c = call("actions/cache@v4", {"path": "x", "key": "k", "save-always": "true"}, None)
    with pytest.raises(ActionError) as err:
        builtin_for(c)
    text = str(err.value)
    assert text.startswith("actions/cache@v4: the built-in does not cover input 'save-always'")
    assert "fail-on-cache-miss, key, lookup-only, path, restore-keys" in text
    assert "set actions_url to a forge that mirrors actions/cache" in text


def test_other_actions_are_not_built_in() -> None:
    assert builtin_for(call("someorg/setup-thing@v1", {"x": "1"})) is None
    assert builtin_for(call("./.github/actions/upload-artifact", {"x": "1"})) is None
