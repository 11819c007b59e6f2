"""What every outside value passes before it names anything: refs, commit ids, repository
URLs and names, event and environment variable names (pure: no network, no git)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ci_pool import defaults as d

_SHA = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
# git's own ref rules, plus shell metacharacters: a ref is rendered into step scripts
# (``${{ github.ref }}``), so it must not be able to carry shell code.
_REF_BAD = re.compile(r"[\x00-\x20\x7f~^:?*\[\\;$`|&<>'\"(){}!]|\.\.|@\{|//|\.lock$|/$|\.$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$")
REMOTE_SCHEMES = frozenset({"https", "http", "ssh", "git"})
#: One part of a repository's path (``owner``, ``name``): what ``github.repository`` may hold.
_REPO_PART = re.compile(r"^[A-Za-z0-9._-]+$")
#: ``github.event_name`` values (the API's ``event`` field and ``run --event``).
EVENT_PATTERN = r"^[a-z_]{1,64}$"


def is_sha(ref: str) -> bool:
    return bool(_SHA.match(ref))


def check_ref(ref: str) -> str:
    """A branch, tag, full ref or commit SHA that can never be read as a git option."""
    if not ref:
        raise ValueError("must not be empty")
    if ref.startswith("-"):
        raise ValueError("must not start with '-' (it would be read as a git option)")
    if len(ref) > 255 or _REF_BAD.search(ref) or ref.startswith("/"):
        raise ValueError(
            "is not a valid git ref: use a branch, tag, refs/... name or a full commit SHA"
        )
    return ref


def check_env_names(env: dict[str, str]) -> dict[str, str]:
    """Environment variables a job may set (the CI_POOL_ prefix is ci-pool's own), each value
    within its bound."""
    for key, text in env.items():
        if len(text.encode()) > d.MAX_ENV_VALUE_BYTES:
            raise ValueError(f"{key}: the value is over {d.MAX_ENV_VALUE_BYTES} bytes")
        if not _ENV_NAME.match(key):
            raise ValueError(f"{key!r} is not a valid environment variable name")
        if key.startswith("CI_POOL_"):
            raise ValueError(f"{key!r}: the CI_POOL_ prefix is reserved")
    return env


def check_repo_url(url: str, *, allow_local: bool) -> str:
    """A remote repository URL; local paths and file:// only when the operator allows them."""
    if url.startswith("-"):
        raise ValueError("must not start with '-' (it would be read as a git option)")
    if not url or any(c <= " " or c == "\x7f" for c in url):
        raise ValueError("must be a URL without whitespace or control characters")
    if "::" in url.split("/", 1)[0]:
        raise ValueError("git remote helpers (<transport>::<address>) are not allowed")
    parts = urlsplit(url)
    if parts.scheme in REMOTE_SCHEMES:
        if not parts.hostname:
            raise ValueError(f"{parts.scheme}:// URL has no host")
        if parts.hostname.startswith("-") or (parts.username or "").startswith("-"):
            raise ValueError("host and user must not start with '-' (ssh would read an option)")
        _check_no_credentials(parts.scheme, parts.username, parts.password)
        repository_name(url)
        return url
    if parts.scheme == "file" or (not parts.scheme and (url.startswith(("/", ".")))):
        if allow_local:
            return url
        raise ValueError(
            "local repositories are refused; use https://, ssh:// or git:// "
            "(operators can set CI_POOL_ALLOW_LOCAL_REPOS=1)"
        )
    if not parts.scheme and SCP_LIKE.match(url):
        repository_name(url)
        return url
    raise ValueError(
        "is not a repository URL: use https://host/org/repo.git, ssh://, git:// or user@host:path"
    )


def _check_no_credentials(scheme: str, user: str | None, password: str | None) -> None:
    """Credentials live in the ``git_credentials`` setting, never in a URL (which is stored,
    logged and shown to readers). ssh URLs keep their user name (``ssh://git@host``)."""
    if password is not None or (user is not None and scheme != "ssh"):
        raise ValueError(
            "must not carry credentials (user:password@ or token@); the operator sets them "
            "per URL prefix in the git_credentials setting, sent as a header, never stored"
        )


def repository_name(url: str) -> str:
    """``owner/name`` (every part of the path, ``.git`` dropped): ``github.repository``.

    Only letters, digits, '.', '_' and '-' per part, so the value is safe wherever a
    workflow renders it, a shell script included."""
    if "://" in url:
        path = urlsplit(url).path
    elif SCP_LIKE.match(url):
        path = url.split(":", 1)[1]
    else:
        path = url
    name = path.strip("/").removesuffix(".git").strip("/")
    bad = [p for p in name.split("/") if not _REPO_PART.match(p) or p in (".", "..")]
    if not name or bad:
        raise ValueError(
            f"the repository path {name!r} must be owner/name parts of letters, digits, '.', "
            "'_' and '-' (it becomes github.repository)"
        )
    return name


def github_repository(url: str) -> str:
    """``repository_name`` for the runtime: empty for a URL it refuses (a local path)."""
    try:
        return repository_name(url)
    except ValueError:
        return ""


def check_event(event: str) -> str:
    """A ``github.event_name`` value: lower-case letters and '_' (push, workflow_dispatch)."""
    if not re.match(EVENT_PATTERN, event):
        raise ValueError(f"{event!r} is not an event name: use 1-64 of a-z and '_', like push")
    return event
