"""The store: the source of truth for jobs, composed of the queries of each table family.
Every state change is one fenced UPDATE plus one audit row (``transitions``), so two
workers can never both own a job."""

from __future__ import annotations

from ci_pool.store.artifact_sets import ArtifactSets
from ci_pool.store.attempts import AttemptRecords
from ci_pool.store.browsing import BrowsingQueries
from ci_pool.store.concurrency import ConcurrencyQueries
from ci_pool.store.engine import make_engine, seconds_between
from ci_pool.store.jobs import JobQueries
from ci_pool.store.lifecycle import Claim, JobLifecycle
from ci_pool.store.pipelines import PipelineQueries
from ci_pool.store.reports import StepReports
from ci_pool.store.sync import SyncPayloads
from ci_pool.store.transitions import RETRYABLE_STATES

__all__ = ["RETRYABLE_STATES", "Claim", "Store", "make_engine", "seconds_between"]


class Store(
    JobLifecycle,
    JobQueries,
    PipelineQueries,
    AttemptRecords,
    ConcurrencyQueries,
    StepReports,
    SyncPayloads,
    BrowsingQueries,
    ArtifactSets,
):
    """Repository functions over the jobs, events, logs, artifacts, pipelines, concurrency
    groups, step summaries, annotations and sync payloads tables."""

    #: A worker with direct store access queues a retry or a pipeline's next jobs itself.
    settles_outcomes = False
