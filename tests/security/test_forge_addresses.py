"""Forge APIs for commit statuses pass the same address fences as git servers: metadata and
link-local addresses are refused before any connection, loopback only when allowed, hosts
only from ``git_hosts``, and the token never sits in the config text."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ci_pool.core.forges import Forge
from ci_pool.embedded import free_port
from ci_pool.exceptions import ConfigError
from ci_pool.service.forge import StatusSender
from ci_pool.settings import Settings, load_settings
from ci_pool.store import Store
from ci_pool.store.outbox import outbox_row

SHA = "3249d9655d98e761ab861a41e22da4076c82bddd"


def forge_config(tmp_path: Path, api_url: str, token: str = "env:FORGE_TOKEN", **top: str) -> Path:
    path = tmp_path / "ci-pool.toml"
    lines = [f"{k} = {v}" for k, v in top.items()]
    lines += ['[forges."git.example.com"]', 'kind = "gitea"', f'api_url = "{api_url}"']
    lines.append(f'token = "{token}"')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("api_url", "why"),
    [
        ("http://169.254.169.254/api/v1", "169.254.169.254 is a link-local, metadata"),
        ("http://[::ffff:169.254.169.254]/api/v1", "169.254.169.254 is a link-local, metadata"),
        ("http://[fe80::1]/api/v1", "fe80::1 is a link-local, metadata"),
        ("http://100.100.100.200/api/v1", "100.100.100.200 is a link-local, metadata"),
        ("http://127.0.0.1:3000/api/v1", "127.0.0.1 is a loopback address"),
    ],
)
def test_a_forge_api_on_a_refused_address_is_a_config_error(
    tmp_path: Path, api_url: str, why: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(forge_config(tmp_path, api_url), allow_loopback_git=False)
    assert "forges.git.example.com.api_url is refused" in str(err.value)
    assert why in str(err.value)


@pytest.mark.parametrize(
    ("api_url", "token", "top", "expected"),
    [
        ("ftp://git.example.com/api", "env:T", {}, "must be an http(s) URL"),
        ("https://user:pw@git.example.com/api/v1", "env:T", {}, "give the API root only"),
        ("https://git.example.com/api/v1", "ghp_literal_token", {}, "'env:VARIABLE' or 'file:"),
        (
            "https://git.example.com/api/v1",
            "env:T",
            {"git_hosts": '["github.com"]'},
            "git.example.com is not in the git_hosts setting",
        ),
    ],
)
def test_a_bad_forge_entry_names_the_key_and_what_to_do(
    tmp_path: Path, api_url: str, token: str, top: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(forge_config(tmp_path, api_url, token, **top))
    text = f"{err.value} {err.value.key}"
    assert expected in text
    assert "forges" in text
    assert "ghp_literal_token" not in text


def test_loopback_is_allowed_with_allow_loopback_git(tmp_path: Path) -> None:
    settings = load_settings(
        forge_config(tmp_path, "http://127.0.0.1:3000/api/v1/"), allow_loopback_git=True
    )
    assert settings.forges["git.example.com"].api_url == "http://127.0.0.1:3000/api/v1"


class Listener:
    """A real loopback HTTP server that counts the connections it accepts."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self.code = 201
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                listener.connections += 1
                super().setup()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(listener.code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def job_with_status(tmp_path: Path) -> tuple[Store, str]:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.init_schema()
    job = store.create_job(
        name="build",
        capability="linux",
        queue="linux",
        repo="https://git.example.com/org/app.git",
        ref="main",
        commit_sha=SHA,
        steps=(),
        timeout_s=60,
        max_attempts=1,
    )
    return store, job.id


def test_a_forge_name_resolving_to_loopback_is_refused_before_connecting(
    tmp_path: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGE_TOKEN", "secret-forge-token-1")
    settings = load_settings(
        forge_config(tmp_path, f"http://localhost:{listener.port}/api/v1"),
        home=tmp_path,
        allow_loopback_git=False,
    )
    store, job_id = job_with_status(tmp_path)
    assert StatusSender(settings, store).deliver(job_id) is False
    assert listener.connections == 0
    row = outbox_row(store, job_id)
    assert row is not None and row.gave_up and row.sent_seq == 0
    assert "is a loopback address" in (row.last_error or "")
    assert "secret-forge-token-1" not in (row.last_error or "")

    allowed = settings.model_copy(update={"allow_loopback_git": True})
    store2, job2 = job_with_status(tmp_path / "allowed")
    assert StatusSender(allowed, store2).deliver(job2) is True
    assert listener.connections == 1


def test_a_metadata_address_is_refused_before_any_socket_connects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGE_TOKEN", "secret-forge-token-2")
    # A config checked earlier whose forge now points at the metadata service (as a name
    # that resolves there would): the sender refuses it at send time as well.
    forge = Forge(kind="github", api_url="http://169.254.169.254", token="env:FORGE_TOKEN")
    settings = Settings(home=tmp_path).model_copy(update={"forges": {"git.example.com": forge}})
    store, job_id = job_with_status(tmp_path)
    connects: list[Any] = []
    real_connect = socket.socket.connect

    def tripwire(sock: socket.socket, address: Any) -> None:
        connects.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", tripwire)
    assert StatusSender(settings, store).deliver(job_id) is False
    assert [a for a in connects if "169.254" in str(a)] == []
    row = outbox_row(store, job_id)
    assert row is not None and row.gave_up
    assert "169.254.169.254 is a link-local, metadata" in (row.last_error or "")


def test_a_refused_token_is_given_up_at_once_and_never_logged(
    tmp_path: Path,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FORGE_TOKEN", "secret-forge-token-3")
    listener.code = 401
    settings = load_settings(
        forge_config(tmp_path, f"http://127.0.0.1:{listener.port}/api/v1"),
        home=tmp_path,
        allow_loopback_git=True,
    )
    store, job_id = job_with_status(tmp_path)
    with caplog.at_level("INFO", logger="ci_pool.service.forge"):
        assert StatusSender(settings, store).deliver(job_id) is False
    assert listener.connections == 1
    row = outbox_row(store, job_id)
    assert row is not None and row.gave_up and row.tries == 1
    assert row.last_error == f"127.0.0.1:{listener.port} answered HTTP 401"
    assert f"job {job_id}: commit status ci-pool/build given up after 1 attempt(s)" in caplog.text
    assert "secret-forge-token-3" not in caplog.text
