"""An error the HTTP API answered, turned into the CIPoolError local mode raises for the
same problem (so a command exits with the same code either way), and an answer read into
its typed view. The standard library (and pydantic, when an answer is read) only:
the CLI's two API clients (``cli/http_client``, ``cli/loopback``) share it, and a runner
reads the API's refusals with ``error_body`` too."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from ci_pool import __version__
from ci_pool.exceptions import (
    AccessDenied,
    BrokerError,
    CIPoolError,
    InfraError,
    InputError,
    NotFound,
    PolicyDenied,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

Model = TypeVar("Model", bound="BaseModel")

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


def read_answer(cls: type[Model], data: object, url: str, path: str) -> Model:
    """What the API at ``url`` answered ``path``, read as ``cls``: an answer of another shape
    (another version, a proxy's page) is an InfraError naming the field, never a traceback."""
    from pydantic import ValidationError

    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise malformed(url, path, cls.__name__, err["loc"], err["msg"]) from None


def malformed(url: str, path: str, model: str, loc: Sequence[object], msg: str) -> InfraError:
    """The error of an answer that does not fit ``model``, naming the field at ``loc``."""
    where = ".".join(str(p) for p in loc) or "the body"
    return InfraError(
        f"the API at {url} answered {path} with a malformed {model} "
        f"({where}: {msg}); check that it is a ci-pool API of version {__version__}"
    )


def answer_rows(data: object, url: str, path: str) -> list[object]:
    """The ``data`` rows of a list answer, unread."""
    rows = data.get("data") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise InfraError(f"the API at {url} answered {path} without a list of rows (data)")
    return rows


def read_rows(cls: type[Model], data: object, url: str, path: str) -> list[Model]:
    """The ``data`` rows of a list answer, each read as ``cls``."""
    return [read_answer(cls, row, url, path) for row in answer_rows(data, url, path)]
