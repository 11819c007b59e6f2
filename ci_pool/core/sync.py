"""Testing uncommitted work: a job's checkout plus the submitter's local changes.

``patch``: the base commit (on the git server) is checked out and a binary diff of the
tracked changes and the untracked files (not ignored) is applied on it with ``git apply``.
``snapshot``: a gzipped tarball of the worktree (tracked and untracked-not-ignored files)
is unpacked as the workspace, for a base that was never pushed.
The payload is kept in the store under its sha256; the job's checkout names it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SyncMode = Literal["patch", "snapshot"]
#: The modes, as ``--sync`` lists them.
SYNC_MODES: tuple[SyncMode, ...] = ("patch", "snapshot")


class SyncSource(BaseModel):
    """The local changes a job's checkout carries: the mode and the payload's sha256."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: SyncMode
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


def signature_refusal(capability: str) -> str:
    """Why a capability with ``require_signature`` takes no local changes."""
    return (
        f"capability {capability!r} runs only signed submissions of pushed commits; "
        "local changes (--sync) are not accepted there: commit and push them, then submit "
        "without --sync"
    )
