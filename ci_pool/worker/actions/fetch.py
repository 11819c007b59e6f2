"""Fetching repository actions (``owner/repo[/path]@ref``) from ``actions_url`` or the host a
``uses:`` URL names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ci_pool.exceptions import ActionError
from ci_pool.worker.actions.load import LoadedAction

if TYPE_CHECKING:
    from ci_pool.worker.actions.call import ActionCall


def fetch(call: ActionCall) -> LoadedAction:
    """The action ``call.ref`` names, fetched and read."""
    raise ActionError(
        f"action {call.ref} is not built into ci-pool and this runner cannot fetch actions"
    )
