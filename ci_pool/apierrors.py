"""An error the HTTP API answered, turned into the CIPoolError local mode raises for the
same problem (so a command exits with the same code either way). Standard library only:
the CLI's two API clients (``cli/http_client``, ``cli/loopback``) share it, and a runner
reads the API's refusals with ``error_body`` too."""

from __future__ import annotations

import json
import re

from ci_pool.exceptions import (
    AccessDenied,
    BrokerError,
    CIPoolError,
    InfraError,
    InputError,
    NotFound,
    PolicyDenied,
)

_DENIED = re.compile(
    r"(?:job (?P<job>\S+) rejected, |pipeline (?P<pipeline>\S+) rejected, )?"
    r"denied by rule (?P<rule>.+?): (?P<detail>.*)",
    re.DOTALL,
)


def policy_denied(message: str, field: str | None) -> PolicyDenied:
    """The PolicyDenied the API reported, rebuilt so it reads as it did on the server."""
    m = _DENIED.fullmatch(message)
    if m is None:
        return PolicyDenied(message, rule="unknown", field=field)
    return PolicyDenied(
        m["detail"], rule=m["rule"], field=field, job_id=m["job"], pipeline_id=m["pipeline"]
    )


def error_body(text: str, reason: str) -> tuple[str, str, str | None]:
    """(code, message, field) of an API error body; a proxy's page becomes its first words
    (its status line's ``reason`` when it has none)."""
    try:
        err = json.loads(text)["error"]
        field = err.get("field")
        return str(err["code"]), str(err["message"]), None if field is None else str(field)
    except (ValueError, KeyError, TypeError, AttributeError):
        return "http_error", " ".join(text.split())[:200] or reason, None


def api_error(
    url: str, status: int, body: tuple[str, str, str | None], *, token_hint: str
) -> CIPoolError:
    """The CIPoolError for an API answer ``status`` with ``body`` (see ``error_body``);
    ``token_hint`` names where the token comes from, or is empty when none was sent."""
    code, message, field = body
    if status == 401:
        if not token_hint:
            return AccessDenied(
                f"the API at {url} needs a token: set CI_POOL_API_TOKEN "
                "(an operator makes one with `ci-pool token create`)"
            )
        return AccessDenied(f"the API at {url} refused {token_hint}: {message}")
    if status == 403:
        if code == "rejected":
            return policy_denied(message, field)
        return AccessDenied(message, field=field)
    if status == 404:
        return NotFound(message)
    if status in (409, 413, 422):
        return InputError(message, field=field)
    if status == 503:
        cls = BrokerError if code == "broker_unavailable" else InfraError
        return cls(f"the API at {url} is unavailable: {message}")
    return InfraError(f"the API at {url} answered {status} ({code}): {message}")
