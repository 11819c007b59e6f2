"""Backends of the pool cache (``actions/cache``): ``base`` is the contract, one module
per kind."""

from __future__ import annotations

import hashlib

from ci_pool import defaults
from ci_pool.cachestore.base import CacheBackend, CacheEntry
from ci_pool.core.policy import read_secret_source
from ci_pool.exceptions import ConfigError
from ci_pool.settings import Settings

__all__ = ["CacheBackend", "CacheEntry", "cache_repo_prefix", "open_backend"]


def cache_repo_prefix(repo: str) -> str:
    """Where the entries of one repository's jobs are named (``actions/cache`` names them
    ``<layout>/<repo digest>/<scope>/<version>/<key>``)."""
    return f"{defaults.CACHE_LAYOUT}/{hashlib.sha256(repo.encode()).hexdigest()[:20]}/"


def open_backend(settings: Settings) -> CacheBackend:
    """The pool cache the settings name: ``cache_url`` (``s3://bucket/prefix``) or else
    the directory ``cache_dir``."""
    url = settings.cache_url
    if not url:
        from ci_pool.cachestore.directory import DirectoryCache

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
    from ci_pool.cachestore.s3 import S3Cache

    return S3Cache(
        bucket, prefix, settings.cache_s3_endpoint, settings.cache_s3_region, credentials
    )
