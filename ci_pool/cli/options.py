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
#: ``--runner``: send the job(s) only to live runners whose names match a glob.
RunnerOption = Annotated[
    str | None,
    typer.Option(
        help="Run only on live runners whose names match this glob (like 'client-acme-*'); "
        "the capability still applies. With none live, the job waits queued."
    ),
]
