"""Address classes, ``git_hosts`` patterns and what a repository URL makes git contact."""

from __future__ import annotations

import pytest

from ci_pool.addresses import check_host_pattern, host_matches, refusal
from ci_pool.exceptions import ConfigError
from ci_pool.remotes import LookupLimit, Remote, effective_url, remote_of
from ci_pool.settings import load_settings


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.0.1",
        "::ffff:169.254.169.254",
        "fe80::1",
        "fd00:ec2::254",
        "100.100.100.200",
        "168.63.129.16",
        "0.0.0.0",
        "::",
        "224.0.0.1",
    ],
)
def test_never_contacted_even_with_loopback_allowed(address: str) -> None:
    assert refusal(address, allow_loopback=True) is not None


@pytest.mark.parametrize("address", ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"])
def test_loopback_only_when_allowed(address: str) -> None:
    why = refusal(address, allow_loopback=False)
    assert why is not None and "CI_POOL_ALLOW_LOOPBACK_GIT" in why
    assert refusal(address, allow_loopback=True) is None


@pytest.mark.parametrize("address", ["10.1.2.3", "192.168.1.10", "140.82.121.4", "2001:db8::1"])
def test_ordinary_addresses_pass(address: str) -> None:
    assert refusal(address, allow_loopback=False) is None


@pytest.mark.parametrize(
    ("pattern", "host", "port", "hit"),
    [
        ("*", "git.example.com", 443, True),
        ("git.example.com", "GIT.example.com", 22, True),
        ("git.example.com:443", "git.example.com", 80, False),
        ("*.example.com", "a.b.example.com", 443, True),
        ("*.example.com", "example.com", 443, False),
        ("*.example.com", "evilexample.com", 443, False),
        ("[::1]:9418", "::1", 9418, True),
        ("127.0.0.1:*", "127.0.0.1", 1234, True),
        ("git.internal", "git.internal.evil.com", 443, False),
    ],
)
def test_host_patterns(pattern: str, host: str, port: int, hit: bool) -> None:
    assert host_matches([check_host_pattern(pattern)], host, port) is hit


@pytest.mark.parametrize("pattern", ["", "a b", "x:0", "x:70000", "::1", "*.10.0.0.1", "h:p"])
def test_bad_host_patterns_name_the_key(pattern: str) -> None:
    with pytest.raises(ValueError):
        check_host_pattern(pattern)
    with pytest.raises(ConfigError) as err:
        load_settings(None, git_hosts=[pattern])
    assert "git_hosts" in str(err.value)


@pytest.mark.parametrize(
    ("url", "remote"),
    [
        ("https://GitHub.com/org/app.git", Remote("https", "github.com", 443)),
        ("http://host:8080/app", Remote("http", "host", 8080)),
        ("git://[::1]:9418/app.git", Remote("git", "::1", 9418)),
        ("ssh://git@host:2222/org/app.git", Remote("ssh", "host", 2222)),
        ("git@github.com:org/app.git", Remote("ssh", "github.com", 22)),
        ("/srv/git/app.git", None),
        ("file:///srv/git/app.git", None),
    ],
)
def test_the_server_a_url_reaches(url: str, remote: Remote | None) -> None:
    assert remote_of(url) == remote


def test_rewrites_apply_longest_prefix_first() -> None:
    rewrites = {"https://github.com/": "git://mirror/", "https://github.com/org/": "git://org/"}
    assert effective_url("https://github.com/org/app", rewrites) == "git://org/app"
    assert effective_url("https://github.com/x/app", rewrites) == "git://mirror/x/app"
    assert effective_url("https://gitlab.com/x/app", rewrites) == "https://gitlab.com/x/app"


def test_lookup_limit_answers_busy_past_its_slots() -> None:
    from ci_pool.exceptions import Busy

    limit = LookupLimit(1, wait=0.05)
    with limit.slot():
        with pytest.raises(Busy, match=r"busy.*retry"):
            with limit.slot():
                pass
    with limit.slot():  # released again
        pass
