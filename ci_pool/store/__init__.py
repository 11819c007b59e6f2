"""The durable store of jobs (SQLAlchemy: SQLite by default, PostgreSQL by URL)."""

from ci_pool.store.engine import make_engine
from ci_pool.store.lifecycle import Claim
from ci_pool.store.models import Job, JobEvent, LogChunk, NewJob
from ci_pool.store.repository import Store

__all__ = ["Claim", "Job", "JobEvent", "LogChunk", "NewJob", "Store", "make_engine"]
