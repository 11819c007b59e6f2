"""Runners' Redis ACL users kept in step with the store, the source of truth.

One rule set per runner (``keys.acl_rules``): its queues, its own keys, the control
channels, and the live log streams of the jobs it holds the claim of right now. Every
change of a runner's claims (claimed through the API, attempt closed, taken over, lost
and re-queued by the reaper) calls ``RunnerUsers.refresh``, which recomputes the whole set
and applies it. Redis keeps users in memory only (unless it has an ACL file), so the
reaper and the API at start re-create those of active runners that Redis lost, from the
SHA-256 of the password kept in the identity row. A revoked runner's user is never
re-created: it is deleted wherever it is found.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from ci_pool.broker.acl import apply_runner_rules, delete_runner_user, runner_users
from ci_pool.broker.keys import RunnerReach, broker_db
from ci_pool.settings import Settings
from ci_pool.store import Store, identities
from ci_pool.store.identities import RunnerIdentity

log = logging.getLogger(__name__)


@dataclass
class RunnerUsers:
    """The runners' Redis users of one pool."""

    settings: Settings
    store: Store
    redis: redis.Redis

    def reach(self, row: RunnerIdentity, claims: list[tuple[str, str]]) -> RunnerReach:
        caps = self.settings.capabilities
        return RunnerReach(
            name=row.name,
            queues={str(c): caps[str(c)].queue for c in row.capabilities if str(c) in caps},
            db=broker_db(self.settings.broker_url),
            claims=tuple(claims),
        )

    def refresh(self, name: str) -> None:
        """Apply the runner's full rule set as the store has it now (its current claims
        included). A runner without a recorded password digest (registered before it was
        kept) is left as it is; a revoked one loses its user."""
        row = identities.get_runner(self.store, name)
        if row is None:
            return  # a pool worker on the broker's own credentials, not a registered runner
        if not row.active:
            delete_runner_user(self.redis, name)
            return
        if row.redis_password_sha256 is None:
            return
        claims = identities.running_claims(self.store, [name])[name]
        apply_runner_rules(self.redis, self.reach(row, claims), row.redis_password_sha256)
        # Revoked while the rules went out: applying them may have re-created the user.
        again = identities.get_runner(self.store, name)
        if again is None or not again.active:
            delete_runner_user(self.redis, name)

    def refresh_quietly(self, name: str) -> None:
        """``refresh``, logging a failure instead of raising it: the store already holds
        the change (a claim or an outcome), and the next change or the reaper's sweep
        puts the user right."""
        try:
            self.refresh(name)
        except Exception:
            log.exception("runner %s: its Redis ACL user could not be updated", name)

    def restore_missing(self) -> list[str]:
        """Re-create the users Redis lost (restarted without an ACL file) of every active
        runner, and delete any a revoked runner still has; the names re-created. Costs one
        store query and one ``ACL USERS`` when nothing is missing."""
        rows = identities.list_runners(self.store)
        if not rows:
            return []
        present = runner_users(self.redis)
        for row in rows:
            if not row.active and row.name in present:
                delete_runner_user(self.redis, row.name)
        missing = [
            r
            for r in rows
            if r.active and r.redis_password_sha256 is not None and r.name not in present
        ]
        for row in missing:
            self.refresh(row.name)
            log.warning("runner %s: its Redis ACL user was missing; re-created", row.name)
        return [r.name for r in missing]
