"""Where actions come from passes the same fences as checkout repositories: an action on a
metadata or link-local address, on a host outside ``git_hosts``, on loopback without
``allow_loopback_git``, or on a local path without ``allow_local_repos`` is refused before
any connection; a strict capability runs no unpinned action, nested ones included."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from ci_pool.core.actions import parse_uses
from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.exceptions import ActionError, ConfigError
from ci_pool.settings import Settings, load_settings
from ci_pool.worker.actions.fetch import source


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port that records whether anything connected to it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


@pytest.mark.parametrize(
    ("uses", "actions_url", "why"),
    [
        ("someorg/setup@v1", "http://169.254.169.254", "169.254.169.254 is a link-local, metadata"),
        ("someorg/setup@v1", "https://[fe80::1]", "fe80::1 is a link-local, metadata"),
        ("http://169.254.169.254/someorg/setup@v1", None, "link-local, metadata"),
        ("https://100.100.100.200/a/b@v1", "https://git.internal", "link-local, metadata"),
    ],
)
def test_an_action_on_a_metadata_address_is_refused(
    uses: str, actions_url: str | None, why: str
) -> None:
    settings = Settings(actions_url=actions_url, allow_loopback_git=False)
    with pytest.raises(ActionError) as err:
        source(parse_uses(uses), settings, None)
    assert f"action {uses}: the git server" in str(err.value)
    assert why in str(err.value)


def test_an_action_host_outside_git_hosts_is_never_contacted(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    settings = Settings(
        actions_url=f"http://127.0.0.1:{port}", git_hosts=["git.internal"], allow_loopback_git=True
    )
    with pytest.raises(ActionError) as err:
        source(parse_uses("someorg/setup@v1"), settings, None)
    assert f"the git server 127.0.0.1:{port} is not in the git_hosts setting" in str(err.value)
    # A full URL in uses: is held to the same list.
    with pytest.raises(ActionError):
        source(parse_uses(f"http://127.0.0.1:{port}/someorg/setup@v1"), settings, None)
    # Loopback is refused unless the operator allows it, also for a listed host.
    settings = Settings(actions_url=f"http://127.0.0.1:{port}", allow_loopback_git=False)
    with pytest.raises(ActionError) as err:
        source(parse_uses("someorg/setup@v1"), settings, None)
    assert "127.0.0.1 is a loopback address" in str(err.value)
    assert connections(listener) == 0


def test_local_action_sources_need_allow_local_repos_and_actions_url_is_required() -> None:
    ref = parse_uses("someorg/setup@v1")
    with pytest.raises(ActionError) as err:
        source(ref, Settings(actions_url="file:///srv/actions"), None)
    assert "local repositories are refused" in str(err.value)
    with pytest.raises(ActionError) as err:
        source(ref, Settings(actions_url=None), None)
    assert "this pool has no actions_url; set actions_url (CI_POOL_ACTIONS_URL)" in str(err.value)
    # A value that is no base URL is a configuration error naming the key.
    with pytest.raises(ConfigError) as config:
        load_settings(None, actions_url="--upload-pack=touch /tmp/x")
    assert config.value.key == "actions_url"
    assert "is not a base URL" in str(config.value)


def test_a_strict_capability_runs_only_pinned_actions(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    settings = Settings(actions_url=f"http://127.0.0.1:{port}", allow_loopback_git=True)
    deploy = Capability(**merge_capabilities(None)["deploy"])
    assert deploy.require_pinned_actions
    for uses in ("someorg/setup@v1", "someorg/setup@main", "docker://alpine:3"):
        with pytest.raises(ActionError) as err:
            source(parse_uses(uses), settings, deploy)
        assert f"{uses} is not pinned" in str(err.value)
        assert "(capability 'deploy')" in str(err.value)
    sha = "0123456789abcdef0123456789abcdef01234567"
    url, _git = source(parse_uses(f"someorg/setup/sub@{sha}"), settings, deploy)
    assert url == f"http://127.0.0.1:{port}/someorg/setup"
    linux = Capability(**merge_capabilities(None)["linux"])
    assert source(parse_uses("someorg/setup@v1"), settings, linux)[0] == url
    assert connections(listener) == 0
