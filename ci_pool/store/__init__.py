"""The durable store of jobs (SQLAlchemy: SQLite by default, PostgreSQL by URL)."""

from ci_pool.store.models import Job, JobEvent, LogChunk, NewJob
from ci_pool.store.repository import Claim, Store, make_engine

__all__ = ["Claim", "Job", "JobEvent", "LogChunk", "NewJob", "Store", "make_engine"]
