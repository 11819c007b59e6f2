"""The pool as its users see it (local mode: straight to the store and the broker).

One object for the CLI, the API and the webhooks, assembled from one module per
responsibility: ``inspection`` (reads), ``submission`` (admission), ``operations`` (levers)."""

from __future__ import annotations

from ci_pool.service.diagnostics import Diagnostics
from ci_pool.service.operations import Operations


class Pool(Operations, Diagnostics):
    """Submit, inspect, wait for and cancel jobs."""
