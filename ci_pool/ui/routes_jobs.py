"""The job page: state, steps, the log (its first screen rendered here, the rest a page at a
time or live over the stream), evidence, artifacts, history; cancel and retry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from ci_pool import defaults
from ci_pool.api import access
from ci_pool.api.deps import PoolDep
from ci_pool.api.routes_jobs import _sse, get_artifact
from ci_pool.api.routes_jobs import public as job_public
from ci_pool.api.schemas import MAX_INT
from ci_pool.core.specs import FINAL_STATES, JobState
from ci_pool.store.models import utcnow
from ci_pool.store.transitions import RETRYABLE_STATES
from ci_pool.ui import render
from ci_pool.ui.session import Session
from ci_pool.ui.web import PREFIX, SessionDep, acting, page

router = APIRouter(prefix=f"{PREFIX}/jobs", include_in_schema=False)

#: How each step's begin and end lines start in the log.
_MARK = "##[step] "


@router.get("/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, pool: PoolDep, session: SessionDep) -> HTMLResponse:
    token = session.token
    view = job_public(job_id, pool, token)
    job = pool.get(job_id)
    window = pool.store.log_window(
        job_id, None, 1, defaults.UI_LOG_PAGE_LINES, defaults.UI_LOG_PAGE_BYTES
    )
    final = JobState(job.state) in FINAL_STATES
    # The whole log is in the first screen: its step lines are too. A longer log's steps
    # come a moment later from their own fragment (a 16 MiB log is not read for them).
    outcomes = (
        None
        if window.more
        else render.step_outcomes(x.text for x in window.lines if x.text.startswith(_MARK))
    )
    now = utcnow()
    return page(
        request,
        "job.html",
        session,
        title=f"Job {job.name or job.id}",
        job=job,
        view=view,
        steps=list(job.steps),
        outcomes=outcomes,
        seconds=render.seconds,
        took=render.duration(job.started_at, job.finished_at, now),
        blocks=render.log_blocks(window.lines),
        window=window,
        live=not final,
        summaries=[(s.name, render.summary_html(s.markdown)) for s in view.summaries or []],
        may_cancel=token.allows("cancel") and not final,
        may_retry=token.allows("submit") and job.state in RETRYABLE_STATES,
    )


@router.get("/{job_id}/steps", response_class=HTMLResponse)
def steps_fragment(
    request: Request, job_id: str, pool: PoolDep, session: SessionDep
) -> HTMLResponse:
    """The steps table's rows with each step's outcome and duration, read from the
    ``##[step]`` lines of the latest attempt's log."""
    job = access.job_for(pool, session.token, job_id)
    attempt = pool.store.log_attempt(job_id)
    marks = [] if attempt is None else pool.store.log_lines_starting(job_id, attempt, _MARK)
    return page(
        request,
        "steps_rows.html",
        session,
        job=job,
        steps=list(job.steps),
        outcomes=render.step_outcomes(marks),
        seconds=render.seconds,
    )


@router.get("/{job_id}/log", response_class=HTMLResponse)
def log_page(
    request: Request,
    job_id: str,
    pool: PoolDep,
    session: SessionDep,
    from_: Annotated[int, Query(alias="from", ge=1, le=MAX_INT)] = 1,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    seq: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    seq_line: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> HTMLResponse:
    """A page of the log from line ``from``, as a fragment the job page appends; ``seq``
    and ``seq_line`` (from the previous page's link) let it skip the chunks before it."""
    access.job_for(pool, session.token, job_id)
    resume = (seq, seq_line) if seq is not None and seq_line is not None else None
    window = pool.store.log_window(
        job_id, attempt, from_, defaults.UI_LOG_PAGE_LINES, defaults.UI_LOG_PAGE_BYTES, resume
    )
    return page(
        request,
        "log_page.html",
        session,
        job_id=job_id,
        blocks=render.log_blocks(window.lines),
        window=window,
    )


@router.get("/{job_id}/log/stream")
def log_stream(
    request: Request, job_id: str, pool: PoolDep, session: SessionDep
) -> StreamingResponse:
    """The live log as Server-Sent Events, the same events as the API's ``?follow=1``."""
    access.job_for(pool, session.token, job_id)
    return StreamingResponse(
        _sse(request, pool, job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/{job_id}/artifacts/{name:path}")
def artifact(
    job_id: str,
    name: str,
    pool: PoolDep,
    session: SessionDep,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> FileResponse:
    """One artifact's bytes, as the API gives them (sha256 in ``Digest`` and ``ETag``)."""
    return get_artifact(job_id, name, pool, session.token, attempt)


@router.post("/{job_id}/cancel")
def cancel(
    job_id: str, pool: PoolDep, session: Annotated[Session, acting("cancel", "cancel jobs")]
) -> Response:
    access.job_for(pool, session.token, job_id)
    pool.cancel(job_id, by=f"web view, token {session.token.name}")
    return RedirectResponse(f"{PREFIX}/jobs/{job_id}", status_code=303)


@router.post("/{job_id}/retry")
def retry(
    job_id: str, pool: PoolDep, session: Annotated[Session, acting("submit", "retry jobs")]
) -> Response:
    job = access.job_for(pool, session.token, job_id)
    access.check_every(session.token, access.touched_by_retry(pool, job), "retry")
    pool.retry_job(job_id)
    return RedirectResponse(f"{PREFIX}/jobs/{job_id}", status_code=303)
