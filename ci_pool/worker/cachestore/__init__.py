"""Backends of the pool cache (``actions/cache``): ``base`` is the contract, one module
per kind."""

from __future__ import annotations

from ci_pool.core.policy import read_secret_source
from ci_pool.exceptions import ConfigError
from ci_pool.settings import Settings
from ci_pool.worker.cachestore.base import CacheBackend, CacheEntry

__all__ = ["CacheBackend", "CacheEntry", "open_backend"]


def open_backend(settings: Settings) -> CacheBackend:
    """The pool cache the settings name: ``cache_url`` (``s3://bucket/prefix``) or else
    the directory ``cache_dir``."""
    url = settings.cache_url
    if not url:
        from ci_pool.worker.cachestore.directory import DirectoryCache

        return DirectoryCache(settings.resolved_cache_dir)
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise ConfigError("must be s3://bucket or s3://bucket/prefix", key="cache_url")
    bucket, _, prefix = url[5:].partition("/")
    credentials = None
    if settings.cache_s3_credentials:
        value = read_secret_source(settings.cache_s3_credentials, "cache_s3_credentials")
        access, sep, secret = value.partition(":")
        if not sep:
            raise ConfigError("must hold ACCESS_KEY:SECRET_KEY", key="cache_s3_credentials")
        credentials = (access, secret)
    from ci_pool.worker.cachestore.s3 import S3Cache

    return S3Cache(
        bucket, prefix, settings.cache_s3_endpoint, settings.cache_s3_region, credentials
    )
