"""``plain_command`` reads command-line values as typer does, without pydantic for the
plain ones: the same values reach the command, the same errors reach the user."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
import typer.main

from ci_pool.cli.coercion import plain_command

app = typer.Typer()
seen: list[dict[str, Any]] = []


@app.command()
def probe(
    job: Annotated[str, typer.Argument()],
    run: Annotated[list[str] | None, typer.Option()] = None,
    depth: Annotated[int, typer.Option(min=0, max=50)] = 1,
    attempt: Annotated[int | None, typer.Option()] = None,
    where: Annotated[Path, typer.Option()] = Path(),
    flag: Annotated[bool, typer.Option()] = False,
    name: Annotated[str | None, typer.Option()] = None,
) -> None:
    seen.append(dict(job=job, run=run, depth=depth, attempt=attempt, where=where, flag=flag,
                     name=name))  # fmt: skip


@app.command()
def other() -> None:
    """A second command, so that the app is a group as the CLI's is."""


def outcome(command: Any, argv: list[str]) -> object:
    """What the command received, or the error typer gave."""
    seen.clear()
    try:
        command.main(args=argv, prog_name="probe", standalone_mode=False)
    except typer.Exit as exc:
        return ("exit", exc.exit_code)
    except Exception as exc:
        format_message = getattr(exc, "format_message", None)
        return (type(exc).__name__, format_message() if format_message else str(exc))
    return seen[0] if seen else "not run"


@pytest.mark.parametrize(
    "argv",
    [
        ["probe", "j1"],
        ["probe", "j1", "--run", "a b", "--run", "-c", "--depth", "7", "--attempt", "-3"],
        ["probe", "j1", "--depth", "+4", "--where", "/nonexistent/dir", "--flag", "--name", ""],
        ["probe", "j1", "--where", "."],
        ["probe", "j1", "--depth", "51"],
        ["probe", "j1", "--depth", "-1"],
        ["probe", "j1", "--depth", "x"],
        ["probe", "j1", "--attempt", "1.5"],
        ["probe", "j1", "--attempt", " 2 "],
        ["probe"],
        ["probe", "--help"],
    ],
)
def test_values_and_errors_are_typers(argv: list[str]) -> None:
    ours = outcome(plain_command(app), argv)
    theirs = outcome(typer.main.get_command(app), argv)
    assert ours == theirs


def test_plain_values_load_no_pydantic() -> None:
    probe = (
        "import sys\nfrom tests.unit.cli.test_coercion import app, outcome\n"
        "from ci_pool.cli.coercion import plain_command\nimport typer.main\n"
        "make = plain_command if sys.argv[1] == 'plain' else typer.main.get_command\n"
        "print(outcome(make(app), ['probe', 'j1', '--run', 'x', '--depth', '3']))\n"
        "print('pydantic' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    for how, loads in (("plain", "False"), ("typer", "True")):
        res = subprocess.run([sys.executable, "-c", probe, how], capture_output=True, text=True,
                             timeout=60, env=env, check=False)  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[-1] == loads, (how, res.stdout)
        assert "'depth': 3" in res.stdout
