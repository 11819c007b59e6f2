"""API bearer tokens. Only the SHA-256 of a token is stored; the plaintext is shown once.

Scopes: ``submit`` (POST jobs), ``read`` (GET anything), ``cancel`` (cancel jobs) and
``admin`` (all of them). Importing this module registers the ``api_tokens`` table on the
store's ``Base``, so ``Store.init_schema()`` creates it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Boolean, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from ci_pool.core.globs import check_glob
from ci_pool.exceptions import InputError, NotFound
from ci_pool.store import Store
from ci_pool.store.models import Base, utcnow

SCOPES = ("submit", "read", "cancel", "admin")
#: Every token starts with this, so a leaked one is easy to grep for.
PREFIX = "cip_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


class ApiToken(Base):
    """One API token: its name, the SHA-256 of its plaintext, scopes and lifetime."""

    __tablename__ = "api_tokens"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Limits: capabilities and repository globs this token may submit to (None: any).
    capabilities: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    repos: Mapped[list[Any] | None] = mapped_column(JSON, default=None)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def is_active(self, now: datetime | None = None) -> bool:
        now = now or utcnow()
        return not self.revoked and (self.expires_at is None or self.expires_at > now)


def digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> list[str]:
    wanted = sorted(set(scopes))
    if not wanted:
        raise InputError("give at least one scope: " + ", ".join(SCOPES), field="scopes")
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise InputError(
            f"unknown scope(s) {', '.join(unknown)}; scopes that exist: " + ", ".join(SCOPES),
            field="scopes",
        )
    return wanted


def create_token(
    store: Store,
    name: str,
    scopes: Iterable[str],
    expires: timedelta | datetime | None = None,
    *,
    capabilities: Iterable[str] | None = None,
    repos: Iterable[str] | None = None,
) -> tuple[str, ApiToken]:
    """Make a token; returns (plaintext, row). The plaintext is not kept anywhere.

    ``capabilities`` and ``repos`` limit where it may submit (checked by the caller
    against the configured capabilities)."""
    if not _NAME.match(name):
        raise InputError(
            "use 1-100 letters, digits, '.', '_', '@' or '-' (not first)", field="name"
        )
    wanted = check_scopes(scopes)
    for pattern in repos or ():
        check_glob(pattern, "repos")
    now = utcnow()
    if isinstance(expires, timedelta):
        if expires <= timedelta(0):
            raise InputError("the lifetime must be positive", field="expires")
        expires_at: datetime | None = now + expires
    else:
        expires_at = expires
    if expires_at is not None and expires_at <= now:
        raise InputError("the expiry is in the past", field="expires")
    plaintext = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        sha256=digest(plaintext),
        scopes=wanted,
        created_at=now,
        expires_at=expires_at,
        revoked=False,
        capabilities=None if capabilities is None else sorted(set(capabilities)),
        repos=None if repos is None else list(dict.fromkeys(repos)),
    )
    try:
        with store.session() as s:
            s.add(row)
    except IntegrityError:
        raise InputError(f"a token named {name!r} exists already", field="name") from None
    return plaintext, row


def verify(store: Store, plaintext: str) -> ApiToken | None:
    """The active token whose digest matches; else None.

    Looked up by its SHA-256 through the unique index: timing can reveal at most how a
    digest compares, never the token, since a token is 32 random bytes."""
    if not plaintext:
        return None
    with store.session(write=False) as s:
        row = s.scalar(select(ApiToken).where(ApiToken.sha256 == digest(plaintext)))
    return row if row is not None and row.is_active(utcnow()) else None


def revoke(store: Store, name: str) -> ApiToken:
    with store.session() as s:
        row = s.get(ApiToken, name)
        if row is None:
            raise NotFound(f"no token named {name!r}")
        row.revoked = True
    return row


def list_tokens(store: Store) -> list[ApiToken]:
    with store.session(write=False) as s:
        return list(s.scalars(select(ApiToken).order_by(ApiToken.created_at)))


def any_active(store: Store) -> bool:
    return any(t.is_active() for t in list_tokens(store))
