"""Waiting on a condition in tests: a bounded poll instead of a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(check: Callable[[], T], what: str, timeout: float = 30, interval: float = 0.05) -> T:
    """The first truthy value ``check`` returns; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"never within {timeout:g}s: {what}"
        time.sleep(interval)
    return found
