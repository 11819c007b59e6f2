"""Reads for the web view: pages of pipelines by filter, a runner's recent jobs, and a log
read a window of lines at a time (a 16 MiB log's first screen never reads the rest)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, func, or_, select

from ci_pool.store.engine import Database
from ci_pool.store.models import Job, LogChunk, Pipeline


@dataclass(frozen=True, slots=True)
class PipelineFilter:
    """What the pipelines list is narrowed to (None: anything)."""

    repo: str | None = None
    ref: str | None = None
    state: str | None = None
    capability: str | None = None


@dataclass(frozen=True, slots=True)
class LogLine:
    """One stored log line: its 1-based number, the time its chunk was stored, its text."""

    number: int
    at: datetime
    text: str


@dataclass(frozen=True, slots=True)
class LogWindow:
    """Lines ``[first, first + len(lines))`` of one attempt's log; ``more``: lines follow."""

    attempt: int | None
    lines: list[LogLine]
    more: bool
    #: Where the next window can start reading: (a chunk's seq, the number of the line the
    #: chunk starts with); the next window then skips no chunk before it.
    resume: tuple[int, int] = (0, 1)

    @property
    def next_line(self) -> int:
        return self.lines[-1].number + 1 if self.lines else 1


class BrowsingQueries(Database):
    """Read-only queries behind the web view's pages."""

    def list_pipelines(
        self,
        where: PipelineFilter,
        *,
        limit: int,
        after: tuple[datetime, str] | None = None,
        capabilities: Iterable[str] | None = None,
    ) -> list[Pipeline]:
        """Newest first (ties by id), a keyset page: ``after`` = (created_at, id) of the
        previous page's last row. ``capabilities``: only pipelines with a job on one of
        them (None: any)."""
        q = select(Pipeline).order_by(Pipeline.created_at.desc(), Pipeline.id.desc())
        if where.repo:
            q = q.where(Pipeline.repo == where.repo)
        if where.ref:
            q = q.where(Pipeline.ref == where.ref)
        if where.state:
            q = q.where(Pipeline.state == where.state)
        if where.capability:
            q = q.where(_has_job_on([where.capability]))
        if capabilities is not None:
            q = q.where(_has_job_on(list(capabilities)))
        if after is not None:
            at, pid = after
            q = q.where(
                or_(Pipeline.created_at < at, and_(Pipeline.created_at == at, Pipeline.id < pid))
            )
        with self.session(write=False) as s:
            return list(s.scalars(q.limit(limit)))

    def runner_jobs(self, runner_id: str, limit: int) -> list[Job]:
        """The jobs a runner ran or runs, the latest first."""
        q = (
            select(Job)
            .where(Job.runner_id == runner_id)
            .order_by(Job.started_at.desc(), Job.id.desc())
            .limit(limit)
        )
        with self.session(write=False) as s:
            return list(s.scalars(q))

    def log_attempt(self, job_id: str) -> int | None:
        """The latest attempt that wrote any log."""
        with self.session(write=False) as s:
            found: int | None = s.scalar(
                select(func.max(LogChunk.attempt)).where(LogChunk.job_id == job_id)
            )
            return found

    def log_window(
        self,
        job_id: str,
        attempt: int | None,
        first: int,
        max_lines: int,
        max_bytes: int,
        resume: tuple[int, int] | None = None,
    ) -> LogWindow:
        """Up to ``max_lines`` lines (and about ``max_bytes``) from line ``first`` (1-based)
        of one attempt's log (default: the latest that wrote any). Chunks are read a few at
        a time and the reading stops once the window is full; with ``resume`` (the previous
        window's) it starts at that chunk instead of the first."""
        if attempt is None:
            attempt = self.log_attempt(job_id)
            if attempt is None:
                return LogWindow(None, [], False)
        seq, number = resume if resume and 1 <= resume[1] <= first else (0, 1)
        lines: list[LogLine] = []
        size = 0
        pending = ""
        last_at: datetime | None = None
        mark = (seq, number)
        for chunk_seq, at, data in self._chunks(job_id, attempt, seq):
            if not pending:  # the chunk starts a line: a window can start reading here
                mark = (chunk_seq, number)
            last_at = at
            parts = (pending + data).split("\n")
            pending = parts.pop()
            if number + len(parts) <= first:  # the whole chunk lies before the window
                number += len(parts)
                continue
            for part in parts:
                if number >= first:
                    if len(lines) >= max_lines or size >= max_bytes:
                        return LogWindow(attempt, lines, True, mark)
                    lines.append(LogLine(number, at, part))
                    size += len(part) + 1
                number += 1
        if pending and last_at is not None and number >= first:
            if len(lines) >= max_lines or size >= max_bytes:
                return LogWindow(attempt, lines, True, mark)
            lines.append(LogLine(number, last_at, pending))
        return LogWindow(attempt, lines, False, mark)

    def log_lines_starting(self, job_id: str, attempt: int, prefix: str) -> list[str]:
        """The attempt's log lines that start with ``prefix`` (only the chunks holding it
        are read)."""
        with self.session(write=False) as s:
            # A plain substring search (SQLite's LIKE compares case-insensitively, several
            # times slower over a 16 MiB log).
            found = (
                func.strpos(LogChunk.data, prefix)
                if s.get_bind().dialect.name == "postgresql"
                else func.instr(LogChunk.data, prefix)
            )
            q = (
                select(LogChunk.data)
                .where(LogChunk.job_id == job_id, LogChunk.attempt == attempt, found > 0)
                .order_by(LogChunk.seq)
            )
            chunks = list(s.scalars(q))
        return [line for data in chunks for line in data.split("\n") if line.startswith(prefix)]

    def _chunks(
        self, job_id: str, attempt: int, start: int = 0
    ) -> Iterator[tuple[int, datetime, str]]:
        """The attempt's chunks from seq ``start`` on, in order, read a few at a time."""
        seq = start - 1
        while True:
            with self.session(write=False) as s:
                rows = list(
                    s.execute(
                        select(LogChunk.seq, LogChunk.at, LogChunk.data)
                        .where(
                            LogChunk.job_id == job_id,
                            LogChunk.attempt == attempt,
                            LogChunk.seq > seq,
                        )
                        .order_by(LogChunk.seq)
                        .limit(_CHUNKS_AT_ONCE)
                    )
                )
            for row in rows:
                yield row.seq, row.at, row.data
            if len(rows) < _CHUNKS_AT_ONCE:
                return
            seq = rows[-1].seq


#: Log chunks read per query (a chunk is at most a flush's worth of lines).
_CHUNKS_AT_ONCE = 16


def _has_job_on(capabilities: list[str]) -> ColumnElement[bool]:
    return exists().where(Job.pipeline_id == Pipeline.id, Job.capability.in_(capabilities))
