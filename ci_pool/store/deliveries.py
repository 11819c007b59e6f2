"""Webhook deliveries: each accepted once by its delivery id, and each push accepted once
by its content.

Importing this module registers the ``webhook_deliveries`` table on the store's ``Base``,
so ``Store.init_schema()`` creates it. A delivery is recorded before anything is submitted:
the primary key refuses a second delivery with the same id, and the unique content key (a
SHA-256 of provider, repository, ref, before and after) refuses the same push sent again
under a new delivery id, even when both arrive at the same moment on two API processes. A
content key is kept for ``webhook_replay_window``; after that the same push may run again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import JSON, Index, String, Text, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from ci_pool.exceptions import CIPoolError
from ci_pool.store import Store
from ci_pool.store.models import Base, utcnow


class HookRefused(CIPoolError):
    """A delivery refused before anything ran, with the HTTP status and code to answer."""

    exit_code = 2

    def __init__(self, status: int, code: str, message: str):
        self.status, self.code = status, code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Push:
    """A push of one branch or tag to ``commit``."""

    kind: Literal["branch", "tag"]
    name: str
    commit: str
    repo: str
    #: Files the push touched; None when unknown (path filters then let workflows run).
    changed: frozenset[str] | None = None
    #: The commit the ref pointed at before (empty or zeros for a new ref).
    before: str = field(default="", compare=False)

    @property
    def ref(self) -> str:
        return f"refs/{'heads' if self.kind == 'branch' else 'tags'}/{self.name}"

    def content_key(self, provider: str) -> str:
        """What makes two deliveries the same push, whatever their delivery ids."""
        parts = (provider, self.repo, self.ref, self.before.lower(), self.commit.lower())
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class WebhookDelivery(Base):
    """One accepted delivery: what it was about and the pipelines it started."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_content_key", "content_key", unique=True),)

    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    event: Mapped[str] = mapped_column(String(64))
    repo: Mapped[str | None] = mapped_column(Text, default=None)
    ref: Mapped[str | None] = mapped_column(String(255), default=None)
    commit_sha: Mapped[str | None] = mapped_column(String(64), default=None)
    pipeline_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: ``Push.content_key`` of a push; None for other events and once the window is over.
    content_key: Mapped[str | None] = mapped_column(String(64), default=None)


def record_delivery(
    store: Store,
    provider: str,
    delivery_id: str,
    event: str,
    push: Push | None = None,
    *,
    replay_window: float | None = None,
) -> WebhookDelivery:
    """Record a delivery before acting on it; a 409 HookRefused for a delivery id seen
    before, or for a push whose content was accepted within ``replay_window`` seconds
    (nothing is written then)."""
    key = push.content_key(provider) if push is not None else None
    if key is not None and replay_window is not None:
        forget_content_keys(store, replay_window, key=key)
    row = WebhookDelivery(
        provider=provider,
        delivery_id=delivery_id,
        received_at=utcnow(),
        event=event,
        repo=push.repo if push else None,
        ref=push.name if push else None,
        commit_sha=push.commit if push else None,
        pipeline_ids=[],
        content_key=key,
    )
    try:
        with store.session() as s:
            s.add(row)
    except IntegrityError:
        raise _refusal(store, provider, delivery_id, push, key) from None
    return row


def _refusal(
    store: Store, provider: str, delivery_id: str, push: Push | None, key: str | None
) -> HookRefused:
    with store.session(write=False) as s:
        same_id = s.get(WebhookDelivery, (provider, delivery_id))
        first = s.scalar(select(WebhookDelivery).filter_by(content_key=key)) if key else None
    if same_id is not None or first is None or push is None:
        return HookRefused(
            409, "replayed", f"delivery {delivery_id} was received already; it is not run again"
        )
    return HookRefused(
        409,
        "replayed",
        f"this push ({push.ref} {push.before[:12] or 'new'}..{push.commit[:12]}) was received "
        f"already as delivery {first.delivery_id} at {first.received_at:%Y-%m-%d %H:%M:%S} "
        "UTC; it is not run again",
    )


def set_pipelines(store: Store, provider: str, delivery_id: str, ids: list[str]) -> None:
    with store.session() as s:
        row = s.get(WebhookDelivery, (provider, delivery_id))
        if row is not None:
            row.pipeline_ids = ids


def forget(store: Store, provider: str, delivery_id: str) -> None:
    """Drop a delivery that started nothing because of an infrastructure error, so the
    sender's redelivery (or the same push sent again) can run."""
    with store.session() as s:
        s.execute(
            delete(WebhookDelivery).where(
                WebhookDelivery.provider == provider, WebhookDelivery.delivery_id == delivery_id
            )
        )


def forget_content_keys(store: Store, window: float, *, key: str | None = None) -> int:
    """Clear the content keys older than ``window`` seconds (all, or the one ``key``), so
    the same push may run again; the deliveries themselves stay. How many were cleared."""
    where = [
        WebhookDelivery.content_key.is_not(None),
        WebhookDelivery.received_at < utcnow() - timedelta(seconds=window),
    ]
    if key is not None:
        where.append(WebhookDelivery.content_key == key)
    with store.session() as s:
        res = s.execute(update(WebhookDelivery).where(*where).values(content_key=None))
        return int(res.rowcount)  # type: ignore[attr-defined]
