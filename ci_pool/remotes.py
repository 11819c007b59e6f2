"""Remote git servers: which ones the pool may contact (``git_hosts``, checked on the
addresses a name resolves to), and how many ref look-ups one process runs at once."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from ci_pool.addresses import host_matches, refusal
from ci_pool.exceptions import Busy, CheckoutError, RemoteRefused
from ci_pool.settings import Settings

#: Default port of each remote transport.
PORTS = {"http": 80, "https": 443, "git": 9418, "ssh": 22}
_SCP_LIKE = re.compile(r"^[^/@:]+@(\[[^\]]+\]|[^/:\[]+):")


@dataclass(frozen=True, slots=True)
class Remote:
    """The server a repository URL makes git connect to."""

    scheme: str
    host: str
    port: int

    @property
    def shown(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def effective_url(url: str, rewrites: Mapping[str, str]) -> str:
    """``url`` as git rewrites it with ``url.<internal>.insteadOf`` (longest prefix wins)."""
    matches = [public for public in rewrites if url.startswith(public)]
    if not matches:
        return url
    public = max(matches, key=len)
    return rewrites[public] + url[len(public) :]


def remote_of(url: str) -> Remote | None:
    """The server of a remote URL; None for a local repository (a path or ``file://``)."""
    parts = urlsplit(url)
    if parts.scheme in PORTS:
        try:
            port = parts.port
        except ValueError:
            raise RemoteRefused(f"{url!r} has an invalid port") from None
        return Remote(parts.scheme, (parts.hostname or "").lower(), port or PORTS[parts.scheme])
    found = _SCP_LIKE.match(url) if "://" not in url else None
    if found:  # scp-like: user@host:path
        return Remote("ssh", found.group(1).strip("[]").lower(), PORTS["ssh"])
    return None


def resolve_addresses(remote: Remote) -> list[str]:
    """The IP addresses the server's name resolves to (an IP literal stands for itself)."""
    try:
        infos = socket.getaddrinfo(remote.host, remote.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        # Infra, not input: a runner retries; at submit it is the look-up's fixed message.
        raise CheckoutError(
            f"the git server {remote.shown} has no address (its name does not resolve)"
        ) from None
    return sorted({str(info[4][0]) for info in infos})


def check_remote(url: str, settings: Settings) -> tuple[Remote, list[str]] | None:
    """Refuse (RemoteRefused, before any connection) a repository whose server is not in
    ``git_hosts`` or any of whose addresses is link-local, metadata, or loopback without
    ``allow_loopback_git``. Returns the server and its checked addresses (None: local)."""
    remote = remote_of(effective_url(url, settings.git_url_rewrites))
    if remote is None:
        return None
    if not host_matches(settings.git_hosts, remote.host, remote.port):
        raise RemoteRefused(
            f"the git server {remote.shown} is not in the git_hosts setting; ask the operator "
            "to add it (CI_POOL_GIT_HOSTS)"
        )
    addresses = resolve_addresses(remote)
    for address in addresses:
        why = refusal(address, allow_loopback=settings.allow_loopback_git)
        if why is not None:
            raise RemoteRefused(f"the git server {remote.shown} is refused: {why}")
    return remote, addresses


class LookupLimit:
    """At most ``concurrency`` ref look-ups at once; a caller waits ``wait`` seconds for a
    slot, then gets Busy (503 "busy, retry") instead of piling up behind slow servers."""

    def __init__(self, concurrency: int, wait: float):
        self.concurrency = concurrency
        self.wait = wait
        self._slots = threading.BoundedSemaphore(concurrency)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self.wait):
            raise Busy(
                f"busy: {self.concurrency} ref look-ups are running already; retry in a few seconds"
            )
        try:
            yield
        finally:
            self._slots.release()
