"""``ci-pool runner exec`` in the store: the one-time request a runner takes its command
from (the broker's control message carries only the request's token, so whoever can
publish there cannot make a runner run anything), and the audit of who ran which
diagnostic command on which runner, when, and how it ended (exit code, timed out, refused,
no answer; rows are only added). Importing this module registers the tables on the
store's ``Base``."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, select, update
from sqlalchemy.orm import Mapped, mapped_column

from ci_pool.core.diagnostics import DiagnosticRecord
from ci_pool.store import Store
from ci_pool.store.models import Base, utcnow

#: How a diagnostic command ended: it ran (exit code kept), ran past its timeout, could
#: not start, was refused (strict lane, by the pool or the runner), or got no answer.
OUTCOMES = ("exited", "timed_out", "not_started", "refused", "no_answer")


class RunnerExec(Base):
    """One diagnostic command asked of one runner."""

    __tablename__ = "runner_execs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    #: Who asked: ``api token <name>`` or ``local <user>``.
    by: Mapped[str] = mapped_column(String(200))
    runner_id: Mapped[str] = mapped_column(String(255), index=True)
    capability: Mapped[str] = mapped_column(String(63), default="")
    argv: Mapped[list[Any]] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(20))
    exit_code: Mapped[int | None] = mapped_column(default=None)
    output_bytes: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str] = mapped_column(String(500), default="")

    def public(self) -> DiagnosticRecord:
        return DiagnosticRecord(
            id=self.id,
            at=self.at.isoformat(),
            by=self.by,
            runner_id=self.runner_id,
            capability=self.capability,
            argv=[str(a) for a in self.argv],
            outcome=self.outcome,
            exit_code=self.exit_code,
            output_bytes=self.output_bytes,
            detail=self.detail,
        )


def record_exec(
    store: Store,
    *,
    by: str,
    runner_id: str,
    capability: str,
    argv: list[str],
    outcome: str,
    exit_code: int | None = None,
    output_bytes: int = 0,
    detail: str = "",
) -> RunnerExec:
    assert outcome in OUTCOMES, outcome
    row = RunnerExec(
        at=utcnow(),
        by=by[:200],
        runner_id=runner_id[:255],
        capability=capability[:63],
        argv=list(argv),
        outcome=outcome,
        exit_code=exit_code,
        output_bytes=output_bytes,
        detail=detail[:500],
    )
    with store.session() as s:
        s.add(row)
        s.flush()
        s.expunge(row)
    return row


def list_execs(store: Store, runner_id: str | None = None, limit: int = 100) -> list[RunnerExec]:
    """Newest first."""
    query = select(RunnerExec).order_by(RunnerExec.id.desc()).limit(limit)
    if runner_id:
        query = query.where(RunnerExec.runner_id == runner_id)
    with store.session(write=False) as s:
        rows = list(s.scalars(query))
        for row in rows:
            s.expunge(row)
    return rows


class ExecRequest(Base):
    """A diagnostic command the pool asked one runner to run: taken once, before it expires,
    by that runner only. The token itself is never stored, only its SHA-256."""

    __tablename__ = "runner_exec_requests"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    runner_id: Mapped[str] = mapped_column(String(255))
    argv: Mapped[list[Any]] = mapped_column(JSON)
    timeout: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[datetime] = mapped_column()
    taken_at: Mapped[datetime | None] = mapped_column(default=None)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_exec_request(
    store: Store, runner_id: str, argv: list[str], timeout: float, ttl: float
) -> str:
    """Keep the command for ``runner_id`` for ``ttl`` seconds; the token to send it."""
    token = secrets.token_urlsafe(32)
    row = ExecRequest(
        token_sha256=_digest(token),
        runner_id=runner_id[:255],
        argv=list(argv),
        timeout=timeout,
        expires_at=utcnow() + timedelta(seconds=ttl),
    )
    with store.session() as s:
        s.add(row)
    return token


def take_exec_request(store: Store, token: str, runner_id: str) -> tuple[list[str], float] | None:
    """The command behind ``token`` when it is for ``runner_id``, not taken before and not
    expired, marked taken in the same statement; None otherwise."""
    if not isinstance(token, str) or not 0 < len(token) <= 200:
        return None
    digest, now = _digest(token), utcnow()
    with store.session() as s:
        taken = s.execute(
            update(ExecRequest)
            .where(
                ExecRequest.token_sha256 == digest,
                ExecRequest.runner_id == runner_id,
                ExecRequest.taken_at.is_(None),
                ExecRequest.expires_at > now,
            )
            .values(taken_at=now)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return None
        row = s.get(ExecRequest, digest)
        assert row is not None
        return [str(a) for a in row.argv], float(row.timeout)
