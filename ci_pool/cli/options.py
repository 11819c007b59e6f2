"""Command-line options that several commands take, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
