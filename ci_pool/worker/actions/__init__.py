"""Actions on the runner (``uses:`` steps other than the checkout): the built-in ones run in
the runner itself; the others are fetched, read from their ``action.yml`` and run by kind."""

from ci_pool.worker.actions import artifact_actions as artifact_actions  # registers
from ci_pool.worker.actions import cache_actions as cache_actions  # registers
from ci_pool.worker.actions.call import (
    BUILTINS,
    KINDS,
    ActionCall,
    PostStep,
    builtin,
    kind,
    run_action_step,
)
from ci_pool.worker.actions.composite import run_composite
from ci_pool.worker.actions.load import LoadedAction

# The runners of each ``runs.using`` kind register themselves on import.
from ci_pool.worker.actions import container, node  # noqa: F401  # isort: skip
from ci_pool.worker.actions.setup import run_pre_steps  # isort: skip

__all__ = [
    "BUILTINS",
    "KINDS",
    "ActionCall",
    "LoadedAction",
    "PostStep",
    "builtin",
    "kind",
    "run_action_step",
    "run_composite",
    "run_pre_steps",
]
