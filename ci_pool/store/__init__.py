"""The durable store of jobs (SQLAlchemy: SQLite by default, PostgreSQL by URL)."""

from ci_pool.store.engine import make_engine
from ci_pool.store.lifecycle import Claim, FinalChunk, Misrouted
from ci_pool.store.models import Job, JobEvent, LogChunk, NewJob
from ci_pool.store.repository import Store
from ci_pool.store.transitions import Closed

__all__ = [
    "Claim",
    "Closed",
    "FinalChunk",
    "Job",
    "JobEvent",
    "LogChunk",
    "Misrouted",
    "NewJob",
    "Store",
    "make_engine",
]
