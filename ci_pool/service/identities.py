"""Runner identities as the operator and the runners see them: registration tokens,
registration (the credential and the runner's own Redis ACL user), revocation.

Revocation has no audit table of its own: the identity row keeps who revoked the runner
and when (``ci-pool runner list`` shows it) and the ``ci_pool.audit`` logger writes a line.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from ci_pool.broker.acl import delete_runner_user, password_digest, set_runner_user
from ci_pool.broker.keys import RunnerReach, broker_db
from ci_pool.broker.runners import RunnerRegistry
from ci_pool.exceptions import InputError
from ci_pool.service.base import PoolBase
from ci_pool.store import identities

audit = logging.getLogger("ci_pool.audit")


class RunnerTokenPublic(BaseModel):
    """A new registration token: shown once."""

    token: str
    capabilities: list[str]
    expires_at: datetime
    #: The one runner name it registers (None: any new name).
    name: str | None = None


class Registration(BaseModel):
    """What a runner gets for its registration token: everything it will hold."""

    name: str
    capabilities: list[str]
    credential: str
    redis_username: str
    redis_password: str


class RunnerIdentityView(BaseModel):
    name: str
    host: str
    capabilities: list[str]
    created_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = None


class RunnerIdentitiesPublic(BaseModel):
    data: list[RunnerIdentityView] = Field(default_factory=list)


def _view(row: identities.RunnerIdentity) -> RunnerIdentityView:
    return RunnerIdentityView(
        name=row.name,
        host=row.host,
        capabilities=[str(c) for c in row.capabilities],
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
    )


def lifetime(text: str) -> timedelta:
    """``30m``, ``1h``, ``7d`` as a timedelta."""
    m = re.fullmatch(r"\s*(\d+)\s*([mhd])\s*", text)
    if not m or int(m.group(1)) == 0:
        raise InputError("use a positive number with m/h/d, e.g. 1h, 30m", field="expires")
    unit = {"m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
    return timedelta(**{unit: int(m.group(1))})


def create_token(
    pool: PoolBase,
    capabilities: list[str],
    expires: timedelta,
    *,
    by: str,
    name: str | None = None,
) -> RunnerTokenPublic:
    """A one-time registration token for runners of ``capabilities`` (which must exist);
    with ``name``, for that runner only (which re-keys it if it is registered)."""
    unknown = sorted(set(capabilities) - set(pool.settings.capabilities))
    if unknown:
        raise InputError(
            f"unknown capability {', '.join(unknown)} (configured: "
            f"{', '.join(sorted(pool.settings.capabilities))})",
            field="capability",
        )
    plaintext, row = identities.create_registration(
        pool.store, capabilities, expires, created_by=by, name=name
    )
    audit.info(
        "runner token created by %s for %s%s",
        by,
        ",".join(row.capabilities),
        f" (runner {name})" if name else "",
    )
    return RunnerTokenPublic(
        token=plaintext,
        capabilities=list(row.capabilities),
        expires_at=row.expires_at,
        name=row.name,
    )


def register(
    pool: PoolBase, token: str, name: str, *, host: str = "", capabilities: list[str] | None = None
) -> Registration:
    """Use up ``token`` for runner ``name``: its credential and its Redis user. Re-keying
    a registered runner (a token bound to its name) drops its old Redis connections."""
    rekey = identities.get_runner(pool.store, name) is not None
    credential, row = identities.register(
        pool.store, token, name, host=host, capabilities=capabilities or ()
    )
    caps = [str(c) for c in row.capabilities]
    queues = {
        c: pool.settings.capabilities[c].queue for c in caps if c in pool.settings.capabilities
    }
    reach = RunnerReach(name=row.name, queues=queues, db=broker_db(pool.settings.broker_url))
    try:
        username, password = set_runner_user(pool.redis, reach)
        identities.set_redis_password_digest(pool.store, row.name, password_digest(password))
    except Exception:
        # The identity must not outlive a failed registration half-made.
        identities.revoke_runner(pool.store, row.name, by="registration failed")
        raise
    if rekey:
        # The old process's connections keep their login; the new credential replaces it.
        pool.redis.client_kill_filter(user=username)
    audit.info(
        "runner %s %s from host %r for %s",
        row.name,
        "re-keyed" if rekey else "registered",
        host,
        ",".join(caps),
    )
    return Registration(
        name=row.name,
        capabilities=caps,
        credential=credential,
        redis_username=username,
        redis_password=password,
    )


def revoke(pool: PoolBase, name: str, *, by: str) -> RunnerIdentityView:
    """Cut the runner off: its credential ends, its Redis user is deleted (which drops its
    connections), its heartbeat goes so it shows as gone. The reaper re-queues its job
    when the lease runs out."""
    row = identities.revoke_runner(pool.store, name, by=by)
    delete_runner_user(pool.redis, name)
    RunnerRegistry(pool.redis, pool.settings.runner_ttl).forget(name)
    audit.warning("runner %s revoked by %s", name, row.revoked_by)
    return _view(row)


def identities_view(pool: PoolBase) -> list[RunnerIdentityView]:
    return [_view(r) for r in identities.list_runners(pool.store)]
