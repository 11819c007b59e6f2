"""Runner identities: one-time registration tokens and the per-runner credential they are
exchanged for. Only SHA-256 digests are stored; plaintexts are shown once.

A registration token (``cirt_...``) names the capabilities a runner may serve and expires.
At its first start a runner presents it with the name it wants; the token is used up and the
runner gets its credential (``circ_...``), which it keeps 0600 and presents on every call.
Revoking a runner ends its credential (and, elsewhere, its Redis ACL user); the row stays,
with who revoked it and when, so the name is never reused by another machine.
A token may be bound to one name (provisioning issues them so): only that name registers
with it, and if that runner is registered and active it is re-keyed (a new credential
replaces the old one at once: rotation). A revoked runner is never re-keyed.
Importing this module registers both tables on the store's ``Base``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, String, select
from sqlalchemy.orm import Mapped, mapped_column

from ci_pool.core.specs import JobState
from ci_pool.exceptions import InputError, NotFound
from ci_pool.store import Store
from ci_pool.store.models import Base, Job, utcnow
from ci_pool.store.tokens import digest

REGISTRATION_PREFIX = "cirt_"
CREDENTIAL_PREFIX = "circ_"
#: A runner's name: host-qualified, lower case, usable as a Redis ACL user and a queue name.
RUNNER_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")


class RegistrationToken(Base):
    """A one-time token that lets one runner join, for the capabilities it names."""

    __tablename__ = "runner_registrations"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    capabilities: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    expires_at: Mapped[datetime] = mapped_column()
    #: The runner that used it (None while unused).
    used_by: Mapped[str | None] = mapped_column(String(63), default=None)
    #: The only runner name it registers (None: any new name).
    name: Mapped[str | None] = mapped_column(String(63), default=None)


class RunnerIdentity(Base):
    """A registered runner: its unique name, where it runs, what it may serve, and the
    digest of its credential. ``revoked_at`` set: it is cut off for good."""

    __tablename__ = "runner_identities"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    capabilities: Mapped[list[Any]] = mapped_column(JSON)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_by: Mapped[str | None] = mapped_column(String(100), default=None)
    #: SHA-256 of its Redis password: enough to re-create its ACL user after a Redis
    #: restart (Redis takes ``#<digest>``), never the password itself.
    redis_password_sha256: Mapped[str | None] = mapped_column(String(64), default=None)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def check_name(name: str) -> str:
    if not RUNNER_NAME.match(name):
        raise InputError(
            f"runner name {name!r}: use 1-63 lower-case letters, digits, '.' or '-' "
            "(a letter or digit first), e.g. build1-linux-1",
            field="name",
        )
    return name


def create_registration(
    store: Store,
    capabilities: Iterable[str],
    expires: timedelta,
    *,
    created_by: str = "",
    name: str | None = None,
) -> tuple[str, RegistrationToken]:
    """A one-time registration token; returns (plaintext, row). The caller checks the
    capabilities against the configured ones. With ``name`` only that runner registers
    with it (and, if it is registered and active, gets a new credential)."""
    if name is not None:
        check_name(name)
    caps = sorted(set(capabilities))
    if not caps:
        raise InputError("name at least one capability the runner may serve", field="capability")
    if expires <= timedelta(0):
        raise InputError("the lifetime must be positive", field="expires")
    plaintext = REGISTRATION_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = RegistrationToken(
        sha256=digest(plaintext),
        capabilities=caps,
        created_at=now,
        created_by=created_by,
        expires_at=now + expires,
        used_by=None,
        name=name,
    )
    with store.session() as s:
        s.add(row)
    return plaintext, row


def register(
    store: Store, token: str, name: str, *, host: str = "", capabilities: Iterable[str] = ()
) -> tuple[str, RunnerIdentity]:
    """Exchange a registration token for the runner ``name``'s credential; returns
    (plaintext credential, row). The token is used up in the same transaction; the name
    must be new (a revoked runner's name stays taken), unless the token is bound to it and
    that runner is active: then it gets a new credential. ``capabilities`` (default: all
    the token allows) must be among the token's."""
    check_name(name)
    with store.session() as s:
        reg = s.get(RegistrationToken, digest(token), with_for_update=True) if token else None
        wanted = _check_registration(reg, name, capabilities)
        assert reg is not None
        plaintext = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
        row = s.get(RunnerIdentity, name)
        if row is not None:
            _check_rekey(row, reg)
            row.sha256, row.host, row.capabilities = digest(plaintext), host, wanted
        else:
            row = RunnerIdentity(
                name=name,
                host=host,
                capabilities=wanted,
                sha256=digest(plaintext),
                created_at=utcnow(),
            )
            s.add(row)
        reg.used_by = name
    return plaintext, row


def _check_registration(
    reg: RegistrationToken | None, name: str, capabilities: Iterable[str]
) -> list[str]:
    """The capabilities ``name`` registers for with ``reg``; InputError saying what is wrong."""
    if reg is None or reg.expires_at <= utcnow():
        raise InputError(
            "the registration token is unknown or expired; ask an admin for a new one "
            "(ci-pool runner token create)",
            field="token",
        )
    if reg.used_by is not None:
        raise InputError(
            "the registration token was used already (by another runner); ask for a new one",
            field="token",
        )
    if reg.name is not None and reg.name != name:
        raise InputError(
            f"the registration token is for runner {reg.name!r}, not {name!r}; start the "
            "runner with that name (CI_POOL_RUNNER_ID) or ask for a token for this one",
            field="name",
        )
    wanted = sorted(set(capabilities)) or list(reg.capabilities)
    extra = [c for c in wanted if c not in reg.capabilities]
    if extra:
        raise InputError(
            f"the registration token does not allow capability {', '.join(extra)} "
            f"(it allows {', '.join(reg.capabilities)})",
            field="capability",
        )
    return wanted


def _check_rekey(row: RunnerIdentity, reg: RegistrationToken) -> None:
    """A registered name is only re-keyed by a token bound to it, and never once revoked."""
    if reg.name != row.name:
        raise InputError(
            f"a runner named {row.name!r} is registered already; runner names are unique "
            "pool-wide (qualify it with the host, e.g. <host>-<capability>-<n>)",
            field="name",
        )
    if row.revoked_at is not None:
        raise InputError(
            f"runner {row.name!r} was revoked (by {row.revoked_by}); a revoked runner's name "
            "is never used again: give the machine a new name and a token for it",
            field="name",
        )


def withdraw_registration(store: Store, token: str) -> bool:
    """End an unused registration token now (provisioning that failed part way); True if
    it was unused and is withdrawn."""
    with store.session() as s:
        reg = s.get(RegistrationToken, digest(token), with_for_update=True)
        if reg is None or reg.used_by is not None:
            return False
        reg.expires_at = utcnow()
    return True


def registration_user(store: Store, token: str) -> str | None:
    """The runner that used this registration token (None: unused or unknown)."""
    with store.session(write=False) as s:
        reg = s.get(RegistrationToken, digest(token))
        return reg.used_by if reg is not None else None


def verify_runner(store: Store, credential: str) -> RunnerIdentity | None:
    """The active runner whose credential this is; else None."""
    if not credential.startswith(CREDENTIAL_PREFIX):
        return None
    with store.session(write=False) as s:
        row = s.scalar(select(RunnerIdentity).where(RunnerIdentity.sha256 == digest(credential)))
    return row if row is not None and row.active else None


def revoke_runner(store: Store, name: str, *, by: str) -> RunnerIdentity:
    """Cut the runner off: its credential stops working at once. Revoking twice keeps the
    first record of who did it."""
    with store.session() as s:
        row = s.get(RunnerIdentity, name)
        if row is None:
            raise NotFound(f"no runner named {name!r} is registered (see: ci-pool runner list)")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            row.revoked_by = by
    return row


def get_runner(store: Store, name: str) -> RunnerIdentity | None:
    with store.session(write=False) as s:
        return s.get(RunnerIdentity, name)


def list_runners(store: Store) -> list[RunnerIdentity]:
    with store.session(write=False) as s:
        return list(s.scalars(select(RunnerIdentity).order_by(RunnerIdentity.name)))


def set_redis_password_digest(store: Store, name: str, sha256: str) -> None:
    """Record the SHA-256 of the runner's Redis password (see ``broker.acl``)."""
    with store.session() as s:
        row = s.get(RunnerIdentity, name)
        if row is not None:
            row.redis_password_sha256 = sha256


def running_claims(store: Store, names: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """(capability, job id) of the running jobs each of these runners holds the claim of."""
    wanted = sorted(set(names))
    found: dict[str, list[tuple[str, str]]] = {n: [] for n in wanted}
    if not wanted:
        return found
    with store.session(write=False) as s:
        rows = s.execute(
            select(Job.runner_id, Job.capability, Job.id).where(
                Job.state == JobState.RUNNING.value, Job.runner_id.in_(wanted)
            )
        ).all()
    for runner_id, capability, job_id in rows:
        found[str(runner_id)].append((str(capability), str(job_id)))
    return found
