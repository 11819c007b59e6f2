"""The pool page (capabilities and runners, refreshed live) and the runner page with its
drain and undrain levers (``admin`` tokens)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ci_pool import defaults
from ci_pool.api import access
from ci_pool.api.deps import PoolDep
from ci_pool.exceptions import NotFound
from ci_pool.service.pool import Pool
from ci_pool.service.views import QueueStatus, RunnerStatus
from ci_pool.store.tokens import ApiToken
from ci_pool.ui.session import Session
from ci_pool.ui.web import PREFIX, SessionDep, acting, page

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _runners(pool: Pool, token: ApiToken) -> list[RunnerStatus]:
    rows = pool.runner_statuses()
    mine = token.capabilities
    return [r for r in rows if mine is None or r.capability in mine]


def _queues(pool: Pool, token: ApiToken) -> list[QueueStatus]:
    mine = token.capabilities
    return [q for q in pool.status() if mine is None or q.capability in mine]


def _pool_context(pool: Pool, token: ApiToken) -> dict[str, Any]:
    runners = _runners(pool, token)
    by_state: dict[str, Counter[str]] = {}
    for r in runners:
        by_state.setdefault(r.capability, Counter())[r.state] += 1
    return {
        "queues": _queues(pool, token),
        "runners": runners,
        "by_state": by_state,
        "refresh": defaults.UI_POOL_REFRESH_S,
    }


@router.get("/", response_class=HTMLResponse)
def pool_page(request: Request, pool: PoolDep, session: SessionDep) -> HTMLResponse:
    return page(request, "pool.html", session, title="Pool", **_pool_context(pool, session.token))


@router.get("/pool/live", response_class=HTMLResponse)
def pool_fragment(request: Request, pool: PoolDep, session: SessionDep) -> HTMLResponse:
    """The pool page's live part, which the page polls."""
    return page(request, "pool_live.html", session, **_pool_context(pool, session.token))


def _runner(pool: Pool, token: ApiToken, runner_id: str) -> RunnerStatus:
    for r in _runners(pool, token):
        if r.runner_id == runner_id:
            return r
    raise NotFound(f"no runner named {runner_id!r}")


@router.get("/runners/{runner_id}", response_class=HTMLResponse)
def runner_page(
    request: Request, runner_id: str, pool: PoolDep, session: SessionDep
) -> HTMLResponse:
    token = session.token
    runner = _runner(pool, token, runner_id)
    recent = [
        j
        for j in pool.store.runner_jobs(runner_id, defaults.UI_RUNNER_JOBS)
        if access.may_touch(token, j)
    ]
    current = [j for j in recent if j.id in runner.jobs]
    return page(
        request,
        "runner.html",
        session,
        title=f"Runner {runner_id}",
        runner=runner,
        current=current,
        recent=recent,
        heartbeat=f"{max(0.0, time.time() - runner.last_seen):.0f} s ago",
        may_drain=token.allows("admin"),
    )


#: The session of a drain or undrain form.
Lever = Annotated[Session, acting("admin", "drain or undrain runners")]


def _lever(pool: Pool, session: Session, runner_id: str, undrain: bool) -> Response:
    _runner(pool, session.token, runner_id)
    if undrain:
        pool.undrain(runner_id)
    else:
        pool.drain(runner_id)
    return RedirectResponse(f"{PREFIX}/runners/{runner_id}", status_code=303)


@router.post("/runners/{runner_id}/drain")
def drain(runner_id: str, pool: PoolDep, session: Lever) -> Response:
    return _lever(pool, session, runner_id, undrain=False)


@router.post("/runners/{runner_id}/undrain")
def undrain(runner_id: str, pool: PoolDep, session: Lever) -> Response:
    return _lever(pool, session, runner_id, undrain=True)
