"""A registered runner's Redis ACL user: created at registration with the rules of
``keys.acl_rules``, deleted at revocation (which also disconnects its clients)."""

from __future__ import annotations

import logging
import secrets

import redis

from ci_pool.broker.keys import RunnerReach, acl_rules, acl_user
from ci_pool.exceptions import BrokerError

log = logging.getLogger(__name__)


def set_runner_user(client: redis.Redis, reach: RunnerReach) -> tuple[str, str]:
    """Create (or reset) the runner's Redis user with a new password; (username, password)."""
    username = acl_user(reach.name)
    password = secrets.token_urlsafe(32)
    try:
        # Raw ACL SETUSER: redis-py's acl_setuser cannot express read-only key patterns.
        client.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", username, "reset", "on", ">" + password, *acl_rules(reach)
        )
    except redis.ResponseError as exc:
        raise BrokerError(
            f"Redis refused to create the runner's ACL user {username!r}: {exc} "
            "(runner identities need Redis 6 or later, and the pool's broker user may run ACL)"
        ) from exc
    _save(client)
    return username, password


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


def _save(client: redis.Redis) -> None:
    """Persist the users when Redis keeps them in an ACL file (else they live in memory:
    a Redis restart forgets them, and runners register again)."""
    try:
        client.acl_save()
    except redis.ResponseError:
        pass  # no aclfile configured
