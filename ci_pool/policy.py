"""Policy: which secrets a job may receive (only its capability's, only those it names)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ci_pool.capabilities import Capability
from ci_pool.exceptions import InfraError, InputError


class SecretUnavailable(InfraError):
    reason = "secret_unavailable"


def check_secret_names(cap: Capability, names: Iterable[str]) -> tuple[str, ...]:
    """At submit: every requested secret must belong to the job's capability."""
    names = tuple(names)
    unknown = [n for n in names if n not in cap.secrets]
    if unknown:
        have = ", ".join(sorted(cap.secrets)) or "none"
        raise InputError(
            f"capability {cap.name!r} has no secret(s) {', '.join(unknown)}; it offers: {have}",
            field="secrets",
        )
    return names


def read_secret_source(source: str, what: str) -> str:
    """The value behind an ``env:VAR`` or ``file:/path`` source, read at run time."""
    kind, _, ref = source.partition(":")
    if kind == "env":
        value = os.environ.get(ref)
        if value is None:
            raise SecretUnavailable(f"{what}: environment variable {ref} is not set on this runner")
        return value
    try:
        return Path(ref).read_text().rstrip("\n")
    except OSError as exc:
        raise SecretUnavailable(f"{what}: cannot read {ref}: {exc.strerror}") from None


def resolve_secrets(cap: Capability, names: Iterable[str]) -> dict[str, str]:
    """On the runner: the values of the named secrets of this capability, nothing else."""
    return {
        name: read_secret_source(cap.secrets[name], f"secret {name}")
        for name in check_secret_names(cap, names)
    }
