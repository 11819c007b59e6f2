"""Every command's help is clean: each option and argument says what it is for, and the
rendered help shows no reStructuredText markup (````wait````), no ``<bool>`` type for a flag
and no line broken in the middle of a sentence."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ci_pool.cli.main import app


def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """Every command under ``command`` (typer's click group), by its full name."""
    yield " ".join(path), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, (*path, name))


COMMANDS = dict(walk(typer.main.get_command(app), ("ci-pool",)))


def rendered_help(path: str) -> str:
    res = CliRunner().invoke(app, [*path.split()[1:], "--help"], prog_name="ci-pool")
    assert res.exit_code == 0, res.output
    return res.output


def test_every_command_is_walked() -> None:
    for expected in ("ci-pool submit", "ci-pool api", "ci-pool token create", "ci-pool worker"):
        assert expected in COMMANDS
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_parameter_has_a_description(path: str) -> None:
    missing = [
        p.name
        for p in COMMANDS[path].params
        if not (getattr(p, "help", None) or "").strip() and p.name != "help"
    ]
    assert missing == [], f"{path}: no help text for {missing}"
    assert (COMMANDS[path].help or "").strip(), f"{path} has no description"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_rendered_help_is_clean(path: str) -> None:
    text = rendered_help(path)
    assert "``" not in text
    assert "<bool>" not in text
    # The description is wrapped to the terminal: inside a paragraph only the last line
    # may be short (a short line followed by more words is a docstring's own line break).
    description = text.split("\nOptions:")[0].split("\nArguments:")[0]
    for paragraph in description.split("\n\n")[1:]:
        lines = paragraph.strip("\n").splitlines()
        short = [line for line in lines[:-1] if len(line) < 50]
        assert short == [], f"{path}: a line broken early in {paragraph!r}"
