"""``ci-pool runner exec NAME -- cmd args...`` and ``ci-pool runner exec-log``: a diagnostic
command on one named live runner, through the pool (on the ``runner`` group of
ci_pool.cli.runners)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from ci_pool.cli.runners import _client, runner_app


@runner_app.command(
    "exec", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True}
)
def exec_(
    name: Annotated[str, typer.Argument(help="Runner id or its host (see ci-pool runners).")],
    command: Annotated[list[str], typer.Argument(help="The program and its arguments, after --.")],
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds it may run (default: runner_exec_timeout, 30)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Run one command on a live runner through the pool (admin; audited; never SSH) and
    print its output. It runs without a shell, as the worker's user, in a temporary
    directory, with a clean environment. Refused on strict lanes (iso, deploy) unless
    runner_exec_strict is set. Exit codes: the command's own exit code; 2 refused, bad
    input, or an unknown or offline runner; 3 no answer, or the command timed out or could
    not start.

    Example: ci-pool runner exec linux@build1-3f2a1c -- df -h /var/lib/ci-pool
    """
    if command and command[0] == "--":
        command = command[1:]
    result = _client().runner_exec(name, command, timeout)
    if as_json:
        print(json.dumps(result.model_dump(mode="json"), indent=2, sort_keys=True))
    else:
        sys.stdout.write(result.output)
        if result.output and not result.output.endswith("\n"):
            sys.stdout.write("\n")
        if result.truncated:
            print(f"[output cut at {len(result.output.encode())} bytes]", file=sys.stderr)
    if result.error:
        print(f"error: {result.error}", file=sys.stderr)
        raise typer.Exit(3)
    raise typer.Exit(min(max(result.exit_code or 0, 0), 255))


@runner_app.command("exec-log")
def exec_log(
    runner: Annotated[str | None, typer.Argument(help="Only this runner.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Rows, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Who ran which diagnostic command on which runner, when, and how it ended."""
    rows = _client().runner_exec_log(runner, limit)
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2, sort_keys=True))
        return
    for r in rows:
        code = "-" if r.exit_code is None else r.exit_code
        print(f"{r.at}  {r.by}  {r.runner_id}  {r.outcome} (exit {code})  " + " ".join(r.argv))
