"""Command-line options that several commands take, declared once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

#: ``--sync``: run on the local worktree's uncommitted changes.
SyncOption = Annotated[
    str | None,
    typer.Option(
        help="Run on the local worktree's uncommitted changes: patch (HEAD must be "
        "pushed) or snapshot (the whole worktree)."
    ),
]
#: ``--worktree``: the git worktree ``--sync`` reads.
WorktreeOption = Annotated[
    Path, typer.Option(help="The git worktree --sync reads (default: here).")
]
#: ``--runner``: send the job(s) only to live runners whose names match a glob.
RunnerOption = Annotated[
    str | None,
    typer.Option(
        help="Run only on live runners whose names match this glob (like 'client-acme-*'); "
        "the capability still applies. With none live, the job waits queued."
    ),
]


def table_console() -> Console:
    """stdout for the commands' tables and text: whole table rows for scripts and pipes (not
    a squeeze to 80 columns), and text from files, jobs and servers printed as is: no rich
    markup, no :emoji: codes (``file.yml:100:21`` is not "file.yml💯21")."""
    return Console(
        highlight=False, markup=False, emoji=False, width=None if sys.stdout.isatty() else 160
    )
