"""Schedules: ``on.schedule`` crons of registered repositories' workflows, started by
``ci-pool beat``.

Each tick, for each registered repository, the registered ref is resolved; when it has
moved since this process last looked, its workflows are read again and their crons kept
(and shown by ``ci-pool repos list``). For each cron, the latest slot within
``schedule_catchup`` seconds is claimed by inserting its row in the store: the one beat
whose insert succeeds submits the workflow at the ref's commit; the others find the slot
taken. A slot whose workflow could not be read is released for the next tick; a slot
whose pipeline was refused keeps the reason.

Registration is an operator's act (``repos add`` or ``POST /v1/repos`` with ``admin``), so
a scheduled pipeline counts as signed by the schedule, like a verified push webhook; the
capabilities' repository and ref allowlists still apply.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ci_pool.core.cron import parse_cron
from ci_pool.core.names import check_ref, check_repo_url
from ci_pool.core.policy import Submitter
from ci_pool.core.triggers import schedule_crons
from ci_pool.core.workflow.parser import parse_workflow
from ci_pool.core.workflow.run_context import RunFacts
from ci_pool.defaults import MAX_REPOSITORIES
from ci_pool.exceptions import CIPoolError, InfraError, InputError
from ci_pool.git import resolve
from ci_pool.remotes import check_remote
from ci_pool.service.pool import Pool
from ci_pool.service.webhooks import Workflows, fetch_workflows
from ci_pool.store.models import utcnow
from ci_pool.store.schedules import (
    Repository,
    Schedule,
    add_repository,
    claim_slot,
    finish_slot,
    list_repositories,
    record_scan,
    release_slot,
)

log = logging.getLogger(__name__)


@dataclass
class Tick:
    """What one tick did: pipelines started per (repository, file, slot), slots another
    beat had claimed, and problems (repository, why)."""

    started: list[tuple[str, str, str]] = field(default_factory=list)
    taken: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)


def register(pool: Pool, url: str, ref: str, who: str = "local operator") -> Repository:
    """Register a repository whose workflows' schedules ``beat`` runs; its URL and ref are
    checked like a submission's, and its server against ``git_hosts`` (before any
    connection)."""
    try:
        check_repo_url(url, allow_local=pool.settings.allow_local_repos)
    except ValueError as exc:
        raise InputError(str(exc), field="url") from None
    try:
        check_ref(ref)
    except ValueError as exc:
        raise InputError(f"{ref!r} {exc}", field="ref") from None
    check_remote(url, pool.settings)
    if len(list_repositories(pool.store)) >= MAX_REPOSITORIES:
        raise InputError(
            f"{MAX_REPOSITORIES} repositories are registered already; remove one first",
            field="url",
        )
    return add_repository(pool.store, url, ref, who)


class Schedules:
    """The schedule part of ``beat``: one ``tick()`` per sweep."""

    def __init__(self, pool: Pool, beat_id: str):
        self.pool = pool
        self.beat_id = beat_id
        #: repository id -> the commit last read and its workflows (path -> text).
        self._seen: dict[str, tuple[str, dict[str, str], list[Schedule]]] = {}

    def tick(self, now: datetime | None = None) -> Tick:
        now = now or utcnow()
        done = Tick()
        for repo in list_repositories(self.pool.store):
            try:
                commit, texts, schedules = self._scan(repo)
            except CIPoolError as exc:
                done.problems.append((repo.url, str(exc)))
                record_scan(self.pool.store, repo.id, None, [], str(exc))
                continue
            for schedule in schedules:
                self._run_due(repo, commit, texts, schedule, now, done)
        return done

    def _scan(self, repo: Repository) -> tuple[str, dict[str, str], list[Schedule]]:
        """The commit the registered ref names now, its workflows and their crons (read
        again only when the ref moved)."""
        sha, _ = resolve(repo.url, repo.ref, self.pool.settings)
        seen = self._seen.get(repo.id)
        if seen is not None and seen[0] == sha:
            return seen
        workflows = fetch_workflows(self.pool.settings, "forgejo", repo.url, sha)
        texts, schedules, problems = self._crons(workflows)
        self._seen[repo.id] = (workflows.commit, texts, schedules)
        record_scan(
            self.pool.store, repo.id, workflows.commit, schedules, "; ".join(problems) or None
        )
        return self._seen[repo.id]

    def _crons(self, workflows: Workflows) -> tuple[dict[str, str], list[Schedule], list[str]]:
        settings = self.pool.settings
        texts: dict[str, str] = {}
        schedules: list[Schedule] = []
        problems = [f"{path}: {why}" for path, why in workflows.skipped]
        for path, text in workflows.files:
            try:
                on = parse_workflow(
                    text, path, settings.capabilities, settings.max_jobs_per_pipeline
                ).on
                crons = schedule_crons(on)
            except (CIPoolError, ValueError) as exc:
                problems.append(f"{path}: {exc}")
                continue
            if crons:
                texts[path] = text
                schedules += [Schedule(path, cron) for cron in dict.fromkeys(crons)]
        return texts, schedules, problems

    def _run_due(
        self,
        repo: Repository,
        commit: str,
        texts: dict[str, str],
        schedule: Schedule,
        now: datetime,
        done: Tick,
    ) -> None:
        window = timedelta(seconds=self.pool.settings.schedule_catchup)
        slot = parse_cron(schedule.cron).latest(now, window)
        registered = repo.added_at.replace(second=0, microsecond=0)
        if slot is None or slot < registered:
            return
        store = self.pool.store
        if not claim_slot(store, repo.id, schedule.file, schedule.cron, slot, self.beat_id):
            done.taken += 1
            return
        try:
            row = self.pool.submit_pipeline(
                texts[schedule.file],
                file=schedule.file,
                repo=repo.url,
                ref=repo.ref,
                commit=commit,
                who=Submitter(
                    name=f"schedule of {repo.url}", signed_by=f"schedule:{repo.id}", operator=False
                ),
                trigger=self._trigger(repo, commit, schedule, slot),
            )
        except InfraError as exc:
            # Nothing was started: the next tick may try this slot again.
            release_slot(store, repo.id, schedule.file, schedule.cron, slot)
            done.problems.append((repo.url, f"{schedule.file}: {exc}"))
            return
        except CIPoolError as exc:
            finish_slot(store, repo.id, schedule.file, schedule.cron, slot, error=str(exc))
            done.problems.append((repo.url, f"{schedule.file}: {exc}"))
            return
        finish_slot(store, repo.id, schedule.file, schedule.cron, slot, pipeline_id=row.id)
        done.started.append((repo.url, schedule.file, row.id))
        log.info("schedule %r of %s %s: slot %s started pipeline %s", schedule.cron,
                 repo.url, schedule.file, slot.isoformat(), row.id)  # fmt: skip

    @staticmethod
    def _trigger(repo: Repository, commit: str, schedule: Schedule, slot: datetime) -> RunFacts:
        tag = repo.ref.startswith("refs/tags/")
        name = repo.ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
        return RunFacts(
            event_name="schedule",
            ref=repo.ref if repo.ref.startswith("refs/") else f"refs/heads/{repo.ref}",
            ref_type="tag" if tag else "branch",
            ref_name=name,
            sha=commit,
            actor="ci-pool",
            schedule=schedule.cron,
            slot=slot.isoformat(),
            event={"schedule": schedule.cron},
        )
