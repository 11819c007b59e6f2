"""The HTTP API (FastAPI). ``create_app(settings)`` builds it; nothing connects at import."""

from ci_pool.api.app import create_app

__all__ = ["create_app"]
