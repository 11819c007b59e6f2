"""``Idempotency-Key`` on submits: the same key and body gives the first result; the same
key with another body is a conflict. Keys are per submitter (token) and kept for a day.

The key row is inserted before the submission runs, so of two concurrent identical
requests exactly one creates anything; the other waits for its result. Importing this
module registers the ``idempotency_keys`` table on the store's ``Base``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import String, delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from ci_pool.core.policy import canonical
from ci_pool.exceptions import CIPoolError, InputError, PolicyDenied
from ci_pool.store import Store
from ci_pool.store.models import Base, utcnow

#: How long a key is remembered.
KEY_TTL = timedelta(hours=24)
#: How long a duplicate waits for the first request to finish.
WAIT_S = 30.0
MAX_KEY_LENGTH = 200


class KeyConflict(CIPoolError):
    """The key was used with another body, or its first request is still running."""

    exit_code = 2

    def __init__(self, message: str):
        self.field = "Idempotency-Key"
        super().__init__(message)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    request_sha256: Mapped[str] = mapped_column(String(64))
    #: Filled when the first request has created its resource.
    resource_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def body_digest(kind: str, body: object) -> str:
    return hashlib.sha256(kind.encode() + b"\0" + canonical(body)).hexdigest()


def run_once(
    store: Store, owner: str, key: str, kind: str, body: object, create: Callable[[], str]
) -> tuple[str, bool]:
    """``(resource id, replayed)``: ``create()`` runs only for the first request of a key."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InputError(
            f"use 1-{MAX_KEY_LENGTH} printable characters, e.g. a UUID", field="Idempotency-Key"
        )
    digest = body_digest(kind, body)
    deadline = time.monotonic() + WAIT_S
    while True:
        if _claim(store, owner, key, kind, digest):
            break
        with store.session(write=False) as s:
            row = s.get(IdempotencyKey, (owner, key))
        if row is None:  # the first request failed and let the key go: try again
            continue
        if row.request_sha256 != digest or row.kind != kind:
            raise KeyConflict(
                f"Idempotency-Key {key!r} was used with a different request; use a new key "
                "for a new submission"
            )
        if row.resource_id is not None:
            return row.resource_id, True
        if time.monotonic() > deadline:
            raise KeyConflict(
                f"the first request with Idempotency-Key {key!r} is still running; "
                "retry in a moment"
            )
        time.sleep(0.05)
    try:
        resource_id = create()
    except PolicyDenied as denied:
        # A rejection is a result too: the key keeps the rejected record, and a replay
        # answers with the same denial.
        rejected = denied.job_id or denied.pipeline_id
        if rejected is None:
            _release(store, owner, key)
        else:
            _settle(store, owner, key, rejected)
        raise
    except BaseException:
        _release(store, owner, key)
        raise
    _settle(store, owner, key, resource_id)
    return resource_id, False


def _release(store: Store, owner: str, key: str) -> None:
    with store.session() as s:
        s.execute(
            delete(IdempotencyKey).where(IdempotencyKey.owner == owner, IdempotencyKey.key == key)
        )


def _settle(store: Store, owner: str, key: str, resource_id: str) -> None:
    with store.session() as s:
        s.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.owner == owner, IdempotencyKey.key == key)
            .values(resource_id=resource_id)
        )


def _claim(store: Store, owner: str, key: str, kind: str, digest: str) -> bool:
    now = utcnow()
    try:
        with store.session() as s:
            # A key past its lifetime is free again.
            s.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.owner == owner,
                    IdempotencyKey.key == key,
                    IdempotencyKey.created_at < now - KEY_TTL,
                )
            )
            s.add(
                IdempotencyKey(
                    owner=owner, key=key, kind=kind, request_sha256=digest, created_at=now
                )
            )
    except IntegrityError:
        return False
    return True


def forget_expired(store: Store) -> int:
    """Drop the keys past their lifetime (the reaper calls this); how many went."""
    with store.session() as s:
        res = s.execute(
            delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - KEY_TTL)
        )
        return int(res.rowcount)  # type: ignore[attr-defined]
