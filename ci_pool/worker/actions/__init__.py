"""Actions on the runner (``uses:`` steps other than the checkout): the built-in ones run in
the runner itself; the others are fetched, read from their ``action.yml`` and run by kind."""

from ci_pool.worker.actions import artifact_actions as artifact_actions
from ci_pool.worker.actions import cache_actions as cache_actions
from ci_pool.worker.actions.call import BUILTINS, ActionCall, PostStep, builtin, run_action_step

__all__ = ["BUILTINS", "ActionCall", "PostStep", "builtin", "run_action_step"]
