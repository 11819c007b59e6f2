"""The pipelines list (filters, cursor pages) and the pipeline page: its jobs in ``needs``
order, a Gantt chart of the run, outputs, annotations, step summaries; cancel and retry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ci_pool import defaults
from ci_pool.api import access
from ci_pool.api.deps import PoolDep
from ci_pool.core.specs import FINAL_STATES, JobState, PipelineState
from ci_pool.service.browsing import needs_order, pipelines_page
from ci_pool.store.browsing import PipelineFilter
from ci_pool.store.models import utcnow
from ci_pool.ui import render
from ci_pool.ui.session import Session
from ci_pool.ui.web import PREFIX, SessionDep, acting, page

router = APIRouter(prefix=f"{PREFIX}/pipelines", include_in_schema=False)

Filter = Annotated[str | None, Query(max_length=2000)]


@router.get("", response_class=HTMLResponse)
def pipelines(
    request: Request,
    pool: PoolDep,
    session: SessionDep,
    repo: Filter = None,
    ref: Filter = None,
    state: Filter = None,
    capability: Filter = None,
    cursor: Annotated[str | None, Query(max_length=300)] = None,
) -> HTMLResponse:
    token = session.token
    where = PipelineFilter(repo or None, ref or None, state or None, capability or None)
    rows, next_cursor = pipelines_page(
        pool.store,
        where,
        limit=defaults.UI_PAGE_ROWS,
        cursor=cursor or None,
        capabilities=token.capabilities,
        repos=token.repos,
    )
    capabilities = sorted(
        name
        for name in pool.settings.capabilities
        if token.capabilities is None or name in token.capabilities
    )
    return page(
        request,
        "pipelines.html",
        session,
        title="Pipelines",
        rows=rows,
        where=where,
        next_cursor=next_cursor,
        states=[s.value for s in PipelineState],
        capabilities=capabilities,
        now=utcnow(),
        duration=render.duration,
    )


@router.get("/{pipeline_id}", response_class=HTMLResponse)
def pipeline_page(
    request: Request, pipeline_id: str, pool: PoolDep, session: SessionDep
) -> HTMLResponse:
    token = session.token
    row, jobs = access.pipeline_for(pool, token, pipeline_id)
    ordered = needs_order(jobs)
    now = utcnow()
    details = {
        j.id: {
            "annotations": pool.store.annotations(j.id, j.attempt),
            "summaries": [
                (s.name, render.summary_html(s.markdown))
                for s in pool.store.summaries(j.id, j.attempt)
            ],
        }
        for j in jobs
    }
    bars = render.gantt(
        [(j.key or j.name or j.id, j.state, j.started_at, j.finished_at) for _, j in ordered], now
    )
    running = any(JobState(j.state) not in FINAL_STATES for j in jobs)
    return page(
        request,
        "pipeline.html",
        session,
        title=f"Pipeline {row.name or row.id}",
        pipeline=row,
        ordered=ordered,
        details=details,
        bars=bars,
        chart_height=max(24, 24 * len(bars)),
        now=now,
        duration=render.duration,
        may_cancel=token.allows("cancel") and running,
        may_retry=token.allows("submit") and not running and bool(access.retryable(jobs)),
    )


@router.post("/{pipeline_id}/cancel")
def cancel(
    pipeline_id: str,
    pool: PoolDep,
    session: Annotated[Session, acting("cancel", "cancel pipelines")],
) -> Response:
    jobs = access.jobs_of_pipeline(pool, session.token, pipeline_id)
    access.check_every(session.token, access.touched_by_cancel(jobs), "cancel")
    pool.cancel_pipeline(pipeline_id, by=f"web view, token {session.token.name}")
    return RedirectResponse(f"{PREFIX}/pipelines/{pipeline_id}", status_code=303)


@router.post("/{pipeline_id}/retry")
def retry(
    pipeline_id: str,
    pool: PoolDep,
    session: Annotated[Session, acting("submit", "retry pipelines")],
) -> Response:
    jobs = access.jobs_of_pipeline(pool, session.token, pipeline_id)
    access.check_every(session.token, access.retryable(jobs), "retry")
    pool.retry_pipeline(pipeline_id)
    return RedirectResponse(f"{PREFIX}/pipelines/{pipeline_id}", status_code=303)
