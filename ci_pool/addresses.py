"""Network addresses: which ones stay on this machine, which ones the pool never contacts,
and the ``host[:port]`` patterns of the ``git_hosts`` setting."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from ci_pool.exceptions import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Never contacted, whatever ``git_hosts`` says: link-local (where cloud metadata services
#: answer), the metadata addresses clouds put elsewhere, and "this host" / unspecified.
NEVER = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # link-local; AWS/GCP/Azure/OpenStack metadata at 169.254.169.254
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "168.63.129.16/32",  # Azure wire server
        "0.0.0.0/8",  # "this network": 0.0.0.0 reaches the local host
        "::/128",
    )
)

_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP (127.0.0.0/8, ::1); names other than localhost are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refusal(address: str, *, allow_loopback: bool) -> str | None:
    """Why the pool must not connect to ``address`` (an IP literal), or None if it may."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in NEVER) or ip.is_link_local:
        return f"{ip} is a link-local, metadata or unspecified address"
    if ip.is_multicast or (ip.is_reserved and not ip.is_loopback):
        return f"{ip} is a multicast or reserved address"
    if ip.is_loopback and not allow_loopback:
        return f"{ip} is a loopback address (operators can set CI_POOL_ALLOW_LOOPBACK_GIT=1)"
    return None


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def split_host_port(text: str) -> tuple[str, str | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port or None)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: an IPv6 address goes in brackets: [::1]:9418")
        return host, rest[1:] if rest else None
    if text.count(":") > 1:
        raise ValueError(f"{text!r}: put an IPv6 address in brackets: [{text}]")
    host, sep, port = text.partition(":")
    return host, port if sep else None


def check_host_pattern(pattern: str) -> str:
    """One ``git_hosts`` entry: ``*``, ``name``, ``*.domain``, an IP, each with an optional
    ``:port`` (or ``:*``); lower-cased."""
    host, port = split_host_port(pattern.strip().lower())
    if port is not None and port != "*" and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{pattern!r}: the port must be a number from 1 to 65535 or *")
    if host != "*":
        name = host.removeprefix("*.")
        if is_ip(name):
            if name != host:
                raise ValueError(f"{pattern!r}: '*.' goes before a domain name, not an address")
        elif not name or not all(_HOST_LABEL.match(label) for label in name.split(".")):
            raise ValueError(
                f"{pattern!r} is not a host pattern: use *, name, *.domain or an address, "
                "each optionally with :port"
            )
    return f"[{host}]:{port}" if ":" in host and port else (f"{host}:{port}" if port else host)


def host_matches(patterns: list[str], host: str, port: int) -> bool:
    """Whether ``host:port`` is one of ``patterns`` (checked by ``check_host_pattern``)."""
    host = host.lower().strip("[]")
    for pattern in patterns:
        want, want_port = split_host_port(pattern)
        if want_port not in (None, "*") and int(want_port) != port:
            continue
        if want == "*" or want == host:
            return True
        if want.startswith("*.") and host.endswith(want[1:]):
            return True
    return False


def check_api_url(url: str) -> str:
    """``url`` without a trailing slash, if a token may be sent to it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{url!r} is not the http(s):// address of a ci-pool API", key="CI_POOL_API_URL"
        )
    if parts.username or parts.password:
        raise ConfigError(
            "the URL must not carry credentials; put the token in CI_POOL_API_TOKEN",
            key="CI_POOL_API_URL",
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"refusing plain http:// to {parts.hostname}: the API token would cross the network "
            "in clear; use https:// (plain http is allowed to a loopback address only)",
            key="CI_POOL_API_URL",
        )
    return url.rstrip("/")
