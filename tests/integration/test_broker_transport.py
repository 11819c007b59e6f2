"""The pool's broker connection on a real redis-server: one command client per channel,
a forked process never on its parent's socket, ``rediss://`` URLs on a TLS-only Redis
(verified against the CA given in the URL, refused against another), ACL users."""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from ci_pool.broker.app import create_celery, send_run_job
from ci_pool.embedded import RedisServer, _wait_port, free_port, redis_server_binary
from ci_pool.settings import load_settings
from tests.tlscerts import TlsFiles, make_tls

pytestmark = pytest.mark.integration


def _app(url: str, home: Path) -> object:
    return create_celery(load_settings(None, broker_url=url, home=home))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer.start(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, TlsFiles]]:
    """redis-server answering TLS only, with a certificate for 127.0.0.1."""
    files = make_tls(tmp_path / "tls", "127.0.0.1")
    port = free_port()
    cmd = [redis_server_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
           "--tls-cert-file", str(files.cert), "--tls-key-file", str(files.key),
           "--tls-ca-cert-file", str(files.ca), "--tls-auth-clients", "no",
           "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        try:
            _wait_port(port, proc, "redis-server with TLS")
        except Exception as exc:
            pytest.fail(f"redis-server does not run with TLS here: {exc}")
        yield port, files
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_one_command_client_per_channel_and_a_forked_child_on_its_own_socket(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    app = _app(own_redis.url, tmp_path / "home")
    conn = app.connection_for_write()  # type: ignore[attr-defined]
    try:
        channel = conn.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second  # acks and publishes no longer build a client each
            parent = first.client_id()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: the same channel, so the same client object
            try:
                with channel.conn_or_acquire() as client:
                    os.write(write, str(client.client_id()).encode())
            finally:
                os._exit(0)
        os.close(write)
        child = int(os.read(read, 64).decode())
        os.close(read)
        os.waitpid(pid, 0)
        assert child != parent  # its own connection: redis-py's pool saw the new pid
        with channel.conn_or_acquire() as client:
            assert client.client_id() == parent  # the parent's socket was left alone
    finally:
        conn.release()


def test_jobs_are_published_over_tls_checked_against_the_url_ca(
    tls_redis: tuple[int, TlsFiles], tmp_path: Path
) -> None:
    port, files = tls_redis
    # One database per app: kombu shares a connection pool between equal URLs in a
    # process, whatever their TLS options.
    base = f"rediss://127.0.0.1:{port}"
    settings = load_settings(None, broker_url=base, home=tmp_path / "home")
    cap = settings.capabilities["linux"]

    def queued(db: int) -> int:
        reader = redis.Redis(host="127.0.0.1", port=port, db=db, ssl=True,
                             ssl_ca_certs=str(files.ca), socket_timeout=10)  # fmt: skip
        return int(reader.llen(cap.queue))

    app = _app(f"{base}/0?ssl_cert_reqs=required&ssl_ca_certs={files.ca}", tmp_path / "home")
    send_run_job(app, cap, "job-over-tls")  # type: ignore[arg-type]
    assert queued(0) == 1
    with app.connection_for_write() as conn:  # type: ignore[attr-defined]
        uri = urlsplit(conn.as_uri())  # what Flower reads to show the queues
        assert (uri.scheme, uri.hostname, uri.port) == ("rediss", "127.0.0.1", port)

    # A bare rediss:// URL is still TLS (kombu's default for it, unverified): on a TLS-only
    # port a plain connection would get no answer.
    bare = _app(f"{base}/1", tmp_path / "home")
    send_run_job(bare, cap, "job-bare-rediss")  # type: ignore[arg-type]
    assert queued(1) == 1

    other = make_tls(tmp_path / "other", "127.0.0.1", label="another CA")
    wrong = _app(f"{base}/2?ssl_cert_reqs=required&ssl_ca_certs={other.ca}", tmp_path / "home")
    wrong.conf.broker_connection_max_retries = 1  # type: ignore[attr-defined]
    with pytest.raises(Exception) as refused:
        send_run_job(wrong, cap, "never-sent")  # type: ignore[arg-type]
    chain: BaseException | None = refused.value
    causes = []
    while chain is not None and len(causes) < 10:
        causes.append(chain)
        chain = chain.__cause__ or chain.__context__
    assert any(
        isinstance(c, ssl.SSLCertVerificationError) or "certificate verify failed" in str(c)
        for c in causes
    ), causes
    assert queued(2) == 0


def test_an_acl_user_publishes_through_the_shared_client(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    admin = redis.Redis(port=own_redis.port)
    admin.acl_setuser("submitter", enabled=True, passwords=["+s3cret-pw"], keys=["*"],
                      channels=["*"], commands=["+@all"])  # fmt: skip
    settings = load_settings(None, home=tmp_path / "home")
    cap = settings.capabilities["linux"]
    app = _app(f"redis://submitter:s3cret-pw@127.0.0.1:{own_redis.port}/0", tmp_path / "home")
    for n in range(3):
        send_run_job(app, cap, f"job-{n}")  # type: ignore[arg-type]
    assert admin.llen(cap.queue) == 3
    clients = [c for c in admin.client_list() if c.get("user") == "submitter"]
    assert clients, admin.client_list()
