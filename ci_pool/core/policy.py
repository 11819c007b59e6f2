"""Policy: who may run what, where.

- Repository and ref allowlists per capability (``repos``, ``refs`` in ci-pool.toml).
- Signed submissions for capabilities with ``require_signature`` (``iso``, ``deploy``): an
  HMAC-SHA256 over the canonical JSON of the submission, with a key id from
  ``signing_keys``, or a token limited to that capability.
- Token limits (capabilities, repositories): refused with nothing written.
- Secrets: a job receives only its capability's secrets, and only those it names.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ci_pool.core.capabilities import Capability
from ci_pool.core.globs import glob_match
from ci_pool.core.specs import EnvironmentSpec
from ci_pool.exceptions import AccessDenied, InfraError, InputError, PolicyDenied

#: ``X-CI-Pool-Signature: keyid=<id>,t=<unix seconds>,nonce=<hex>,sha256=<hex>``
SIGNATURE_HEADER = "X-CI-Pool-Signature"
#: A signature older or newer than this (seconds) is refused, so a captured one expires.
SIGNATURE_MAX_AGE = 300
_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}$")


def repo_name(url: str) -> str:
    """``org/name`` of a repository URL: host, scheme, ``.git`` and slashes dropped."""
    if "://" in url:
        path = urlsplit(url).path
    elif re.match(r"^[^/@:]+@[^/:]+:", url):  # scp-like: git@host:org/name.git
        path = url.split(":", 1)[1]
    else:
        path = url
    return path.strip("/").removesuffix(".git").strip("/")


def repo_allowed(patterns: Iterable[str], url: str) -> bool:
    name = repo_name(url)
    return any(glob_match(p, url if "://" in p else name) for p in patterns)


# -- submitters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitter:
    """Who submits: the local operator, an API token, or a verified webhook."""

    name: str = "local operator"
    #: Token limits; None allows any.
    capabilities: tuple[str, ...] | None = None
    repos: tuple[str, ...] | None = None
    #: Key id of a signature verified over this very submission.
    signed_by: str | None = None
    #: The operator's own CLI on a pool host (it holds the store and the config already).
    operator: bool = True

    def scoped_to(self, capability: str) -> bool:
        return self.capabilities is not None and capability in self.capabilities


def check_access(who: Submitter, capability: str, repo: str, verb: str = "submit") -> None:
    """Token limits: AccessDenied (nothing is recorded) when the token may not ``verb``
    (submit, read, cancel...) a job of this capability and repository."""
    if who.capabilities is not None and capability not in who.capabilities:
        raise AccessDenied(
            f"{who.name} may {verb} only for capabilities "
            f"{', '.join(who.capabilities) or 'none'}, not {capability!r}",
            field="capability",
        )
    if who.repos is not None and not repo_allowed(who.repos, repo):
        raise AccessDenied(
            f"{who.name} may {verb} only for repositories {', '.join(who.repos) or 'none'}, "
            f"not {repo_name(repo)!r}",
            field="repo",
        )


def check_policy(cap: Capability, repo: str, refs: Iterable[str] | None, who: Submitter) -> None:
    """The capability's rules; PolicyDenied names the rule (the job is then ``rejected``).

    ``refs`` are the full refs the submitted ref names (a branch and a tag may share a
    name: every one must be allowed), or None for a commit id or an unresolved name."""
    where = f"capabilities.{cap.name}"
    if cap.repos is not None and not repo_allowed(cap.repos, repo):
        allowed = ", ".join(cap.repos) or "none yet"
        raise PolicyDenied(
            f"capability {cap.name!r} does not build {repo_name(repo)!r} (allowed: {allowed}); "
            f"an operator can add it to [{where}] repos in ci-pool.toml",
            rule=f"{where}.repos",
            field="repo",
        )
    if cap.refs is not None:
        allowed = ", ".join(cap.refs) or "none"
        full = list(refs or ())
        if not full:
            raise PolicyDenied(
                f"capability {cap.name!r} builds only refs matching {allowed}; give a "
                "branch or tag by name (refs/heads/... or refs/tags/...), not a commit id",
                rule=f"{where}.refs",
                field="ref",
            )
        for ref in full:
            if not any(glob_match(p, ref) for p in cap.refs):
                raise PolicyDenied(
                    f"capability {cap.name!r} does not build {ref} (allowed: {allowed})",
                    rule=f"{where}.refs",
                    field="ref",
                )
    if cap.require_signature and not (who.operator or who.signed_by or who.scoped_to(cap.name)):
        raise PolicyDenied(
            f"capability {cap.name!r} takes only signed submissions ({SIGNATURE_HEADER} with "
            f"a key from signing_keys) or those of a token limited to {cap.name!r}; "
            f"{who.name} sent neither",
            rule=f"{where}.require_signature",
            field="signature",
        )


# -- signatures ----------------------------------------------------------------------------


def canonical(body: Any) -> bytes:
    """The bytes a signature covers: the submission as JSON with sorted keys, no spaces."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mac(key: bytes, stamp: int, nonce: str, body: Any) -> str:
    signed = f"{stamp}.{nonce}.".encode() + canonical(body)
    return hmac.new(key, signed, hashlib.sha256).hexdigest()


def sign(key: bytes, key_id: str, body: Any, now: float | None = None) -> str:
    """The value of the signature header for ``body`` (what a submitter sends): an
    HMAC-SHA256 over ``"<t>.<nonce>." + canonical(body)``. The random nonce makes every
    signing unique, so the server can accept each signature once."""
    stamp = int(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    return f"keyid={key_id},t={stamp},nonce={nonce},sha256={_mac(key, stamp, nonce, body)}"


def _fields(header: str) -> dict[str, str]:
    return dict(p.partition("=")[::2] for p in header.replace(" ", "").split(","))


def signature_mac(header: str) -> str:
    """The MAC of a signature header (what identifies one signing), or ""."""
    return _fields(header).get("sha256", "")


def verify_signature(
    header: str, body: Any, keys: Mapping[str, str], now: float | None = None
) -> str:
    """The key id of a valid signature; AccessDenied otherwise (never naming the MAC).

    The caller also refuses a signature it has accepted before (``signature_mac``)."""
    parts = _fields(header)
    key_id, stamp, mac = parts.get("keyid", ""), parts.get("t", ""), parts.get("sha256", "")
    nonce = parts.get("nonce", "")
    if not (
        _KEY_ID.match(key_id)
        and stamp.isdigit()
        and re.fullmatch(r"[0-9a-f]{16,64}", nonce)
        and re.fullmatch(r"[0-9a-f]{64}", mac)
    ):
        raise AccessDenied(
            f"{SIGNATURE_HEADER} must read keyid=<id>,t=<unix seconds>,nonce=<16-64 hex>,"
            "sha256=<64 hex>",
            field="signature",
        )
    source = keys.get(key_id)
    if source is None:
        raise AccessDenied(f"signing key {key_id!r} is not configured", field="signature")
    age = abs((time.time() if now is None else now) - int(stamp))
    if age > SIGNATURE_MAX_AGE:
        raise AccessDenied(
            f"the signature is {age:.0f}s away from the server's clock (at most "
            f"{SIGNATURE_MAX_AGE}s); sign the submission again",
            field="signature",
        )
    key = read_secret_source(source, f"signing key {key_id}").encode()
    if not hmac.compare_digest(_mac(key, int(stamp), nonce, body), mac):
        raise AccessDenied(
            f"the signature does not match this submission under key {key_id!r}",
            field="signature",
        )
    return key_id


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


# -- pull requests -------------------------------------------------------------------------


def is_strict(cap: Capability) -> bool:
    """A capability that guards something: privileged or on the host, signed submissions
    only, or a repository or ref allowlist (``iso``, ``deploy``)."""
    return (
        cap.privileged
        or cap.mode == "host"
        or cap.require_signature
        or cap.repos is not None
        or cap.refs is not None
    )


def check_pull_request(cap: Capability, allowed: Iterable[str] | None) -> None:
    """The pull request policy: a pull request's job runs only on a capability listed in
    ``pull_request_capabilities``, or, when that setting is unset, on a capability that is
    not strict. PolicyDenied (the job is ``rejected``) otherwise."""
    if allowed is not None:
        names = tuple(allowed)
        if cap.name in names:
            return
        raise PolicyDenied(
            f"pull requests run only on capabilities {', '.join(names) or 'none'} "
            f"(pull_request_capabilities), not {cap.name!r}",
            rule="pull_request_capabilities",
            field="runs-on",
        )
    if is_strict(cap):
        raise PolicyDenied(
            f"capability {cap.name!r} does not run pull requests: it is privileged or guarded "
            "by an allowlist or signatures, and a pull request's code is untrusted; run it "
            "from a push to an allowed branch, or list it in pull_request_capabilities",
            rule="pull_request_capabilities",
            field="runs-on",
        )


def environment_secret_names(
    cap: Capability, environment: EnvironmentSpec | None
) -> tuple[str, ...]:
    """The place where a deployment ``environment:`` binds secrets: the capability secrets a
    job in ``environment`` gets besides the ones it names. None are bound to environments
    yet, so a job's secrets are the same whatever its environment."""
    del cap, environment
    return ()
