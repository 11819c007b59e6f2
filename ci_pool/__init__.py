"""ci-pool: a self-hosted CI runner pool on Celery and Redis."""

__version__ = "0.1.0"
