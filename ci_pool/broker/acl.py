"""A registered runner's Redis ACL user: created at registration with the rules of
``keys.acl_rules``, its rules re-applied whenever its claims change, re-created from its
password's SHA-256 after a Redis restart, and deleted at revocation (which also
disconnects its clients)."""

from __future__ import annotations

import hashlib
import logging
import secrets

import redis

from ci_pool.broker.keys import ACL_USER_PREFIX, RunnerReach, acl_rules, acl_user
from ci_pool.exceptions import BrokerError

log = logging.getLogger(__name__)


def password_digest(password: str) -> str:
    """The SHA-256 hex digest Redis accepts as ``#<digest>`` in place of the password."""
    return hashlib.sha256(password.encode()).hexdigest()


def set_runner_user(client: redis.Redis, reach: RunnerReach) -> tuple[str, str]:
    """Create (or reset) the runner's Redis user with a new password; (username, password)."""
    username = acl_user(reach.name)
    password = secrets.token_urlsafe(32)
    _setuser(client, username, "reset", "on", ">" + password, *acl_rules(reach))
    _save(client)
    return username, password


def apply_runner_rules(client: redis.Redis, reach: RunnerReach, password_sha256: str) -> None:
    """Make the runner's user carry exactly the rules of ``reach``, keeping its password.
    ``acl_rules`` starts with ``resetkeys``/``resetchannels``, so a grant left out is
    withdrawn; the user is never ``reset``, so its password and open connections stay. A
    user Redis lost (restarted without an ACL file) comes back from the password's digest."""
    username = acl_user(reach.name)
    # One round trip: this runs at every claim and outcome of a registered runner.
    pipe = client.pipeline(transaction=False)
    rules = acl_rules(reach)
    pipe.execute_command("ACL", "SETUSER", username, "on", "#" + password_sha256, *rules)  # type: ignore[no-untyped-call]
    pipe.execute_command("ACL", "SAVE")  # type: ignore[no-untyped-call]  # no aclfile: refused
    applied = pipe.execute(raise_on_error=False)[0]
    if isinstance(applied, Exception):
        raise BrokerError(
            f"Redis refused to set the runner's ACL user {username!r}: {applied} "
            "(runner identities need Redis 7 or later, and the pool's broker user may run ACL)"
        )


def runner_users(client: redis.Redis) -> set[str]:
    """The names of the runners Redis has a user for."""
    try:
        users = client.acl_users()
    except redis.ResponseError as exc:
        raise BrokerError(f"Redis refused ACL USERS: {exc}") from exc
    names = (u.decode() if isinstance(u, bytes) else str(u) for u in users)
    return {n.removeprefix(ACL_USER_PREFIX) for n in names if n.startswith(ACL_USER_PREFIX)}


def delete_runner_user(client: redis.Redis, name: str) -> bool:
    """Delete the runner's Redis user; its open connections are closed by Redis. True if
    there was one."""
    try:
        deleted = int(client.acl_deluser(acl_user(name)))
    except redis.ResponseError as exc:
        raise BrokerError(
            f"Redis refused to delete the ACL user of runner {name!r}: {exc}"
        ) from exc
    _save(client)
    return deleted > 0


def _setuser(client: redis.Redis, username: str, *rules: str) -> None:
    try:
        # Raw ACL SETUSER: redis-py's acl_setuser cannot express read-only key patterns.
        client.execute_command("ACL", "SETUSER", username, *rules)  # type: ignore[no-untyped-call]
    except redis.ResponseError as exc:
        raise BrokerError(
            f"Redis refused to set the runner's ACL user {username!r}: {exc} "
            "(runner identities need Redis 7 or later, and the pool's broker user may run ACL)"
        ) from exc


def _save(client: redis.Redis) -> None:
    """Persist the users when Redis keeps them in an ACL file (else they live in memory,
    and the reaper re-creates them from the store after a restart)."""
    try:
        client.acl_save()
    except redis.ResponseError:
        pass  # no aclfile configured
