"""Executors run a job's steps: in a fresh Docker container, or on the host."""

from ci_pool.worker.executors.base import Execution, Executor, JobContext

__all__ = ["Execution", "Executor", "JobContext"]
