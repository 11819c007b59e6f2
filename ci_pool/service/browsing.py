"""What the web view lists: pages of pipelines a token may see, newest first, with an
opaque cursor, and the order a pipeline's jobs are shown in."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime

from ci_pool.core.policy import repo_allowed
from ci_pool.core.specs import PipelineState
from ci_pool.exceptions import InputError
from ci_pool.store import Job, Store
from ci_pool.store.browsing import PipelineFilter
from ci_pool.store.models import Pipeline

#: Rows read at a time while a token limited to some repositories fills its page.
_SCAN_BATCH = 200


def encode_cursor(row: Pipeline) -> str:
    raw = json.dumps([row.created_at.isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, pipeline_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(at), str(pipeline_id)
    except (ValueError, TypeError, binascii.Error):
        raise InputError(
            "not a cursor of this list; follow the page's own 'next' link", field="cursor"
        ) from None


def check_filter(where: PipelineFilter) -> PipelineFilter:
    """InputError naming the field when a filter cannot match anything by its form."""
    states = [s.value for s in PipelineState]
    if where.state and where.state not in states:
        raise InputError(
            f"unknown pipeline state {where.state!r}; states: {', '.join(states)}", field="state"
        )
    return where


def pipelines_page(
    store: Store,
    where: PipelineFilter,
    *,
    limit: int,
    cursor: str | None = None,
    capabilities: Sequence[str] | None = None,
    repos: Sequence[str] | None = None,
) -> tuple[list[Pipeline], str | None]:
    """A page of pipelines, newest first, and the cursor of the next page (None: the last).
    ``capabilities`` and ``repos``: a limited token's limits (None: no limit)."""
    check_filter(where)
    after = decode_cursor(cursor) if cursor else None
    page: list[Pipeline] = []
    size = limit + 1 if repos is None else max(limit + 1, _SCAN_BATCH)
    while len(page) <= limit:
        batch = store.list_pipelines(where, limit=size, after=after, capabilities=capabilities)
        page += [p for p in batch if repos is None or repo_allowed(repos, p.repo)]
        if len(batch) < size:
            break
        after = (batch[-1].created_at, batch[-1].id)
    more = len(page) > limit
    return page[:limit], encode_cursor(page[limit - 1]) if more else None


def needs_order(jobs: Sequence[Job]) -> list[tuple[int, Job]]:
    """The jobs by depth in the ``needs`` graph (roots first), then as created; each with
    its depth."""
    by_name: dict[str, list[Job]] = {}
    for job in jobs:
        for name in {job.job_ref, job.key}:
            if name:
                by_name.setdefault(name, []).append(job)
    depth: dict[str, int] = {}

    def level(job: Job, seen: frozenset[str]) -> int:
        if job.id in depth:
            return depth[job.id]
        parents = [
            p for need in job.needs or [] for p in by_name.get(str(need), []) if p.id not in seen
        ]
        found = 1 + max((level(p, seen | {job.id}) for p in parents), default=-1)
        depth[job.id] = found
        return found

    ranked = [(level(job, frozenset({job.id})), index, job) for index, job in enumerate(jobs)]
    return [(d, job) for d, _, job in sorted(ranked, key=lambda t: (t[0], t[1]))]
