"""Git credentials against a real authenticated git HTTP server on loopback: a small
ThreadingHTTPServer that demands ``Authorization: Basic`` and runs ``git http-backend`` as a
CGI. The token is sent as a header from git's environment and never lands in argv, a URL,
the workspace's config or an error message."""

from __future__ import annotations

import base64
import gzip
import os
import secrets
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ci_pool.embedded import free_port, make_repo
from ci_pool.exceptions import CheckoutError, InputError
from ci_pool.git import CheckoutRequest, checkout, resolve_ref
from ci_pool.settings import Settings, load_settings

pytestmark = pytest.mark.integration

REAL_GIT = shutil.which("git") or "/usr/bin/git"


def git(*args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    return subprocess.run(
        [REAL_GIT, *args], check=True, capture_output=True, text=True, env=env
    ).stdout


def basic(userpass: str) -> str:
    return "Basic " + base64.b64encode(userpass.encode()).decode()


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str | None
    status: int
    protocol: str = ""
    encoding: str = ""


class _GitHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, root: Path, accepted: set[str], env: dict[str, str]):
        super().__init__(("127.0.0.1", port), _GitCGIHandler)
        self.root = root
        #: "user:token" pairs the server lets in.
        self.accepted = accepted
        self.base_env = env
        #: When set, every request is answered 302 to this origin + the same path.
        self.redirect_to: str | None = None
        #: When set, the server lets anyone in (an origin the credential is not meant for).
        self.open = False
        self.seen: list[Seen] = []
        self.backend_errors: list[str] = []
        self.lock = threading.Lock()

    def user_for(self, authorization: str | None) -> str | None:
        if self.open:
            return "anonymous"
        for userpass in self.accepted:
            if authorization == basic(userpass):
                return userpass.partition(":")[0]
        return None

    def record(self, seen: Seen) -> None:
        with self.lock:
            self.seen.append(seen)


class _GitCGIHandler(BaseHTTPRequestHandler):
    server: _GitHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        body = self._read_body()  # drained before any answer, 401 included
        auth = self.headers.get("Authorization")
        if self.server.redirect_to:
            self.server.record(Seen(self.command, self.path, auth, 302))
            self._reply(302, [("Location", self.server.redirect_to + self.path)], b"")
            return
        user = self.server.user_for(auth)
        if user is None:
            self.server.record(Seen(self.command, self.path, auth, 401))
            self._reply(401, [("WWW-Authenticate", 'Basic realm="git"')], b"")
            return
        if self.headers.get("Content-Encoding", "").lower() in ("gzip", "x-gzip"):
            body = gzip.decompress(body)
        url = urlsplit(self.path)
        env = {
            **self.server.base_env,
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": url.path,
            "QUERY_STRING": url.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user,
            "REMOTE_ADDR": self.client_address[0],
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        proc = subprocess.run(
            [REAL_GIT, "http-backend"],
            input=body,
            env=env,
            capture_output=True,
            check=False,
            timeout=60,
        )
        head, sep, rest = proc.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, sep, rest = proc.stdout.partition(b"\n\n")
        if not sep:
            self.server.backend_errors.append(proc.stderr.decode(errors="replace"))
            self.server.record(Seen(self.command, self.path, auth, 500))
            self._reply(500, [], b"")
            return
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() == "status":
                status = int(value.split()[0])
            elif name.strip().lower() != "content-length":
                headers.append((name.strip(), value.strip()))
        self.server.record(
            Seen(
                self.command,
                self.path,
                auth,
                status,
                self.headers.get("Git-Protocol", ""),
                self.headers.get("Content-Encoding", ""),
            )
        )
        self._reply(status, headers, rest)


@dataclass
class GitHTTP:
    port: int
    base: Path
    token: str
    shas: list[str]
    server: _GitHTTPServer
    home: Path

    @property
    def prefix(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def url(self) -> str:
        return self.prefix + "app.git"

    @property
    def seen(self) -> list[Seen]:
        with self.server.lock:
            return list(self.server.seen)

    def settings(self, **overrides: object) -> Settings:
        return load_settings(None, home=self.home, **overrides)


@pytest.fixture
def git_http(tmp_path: Path) -> Iterator[GitHTTP]:
    base = tmp_path / "srv"
    base.mkdir()
    shas = [
        make_repo(
            base / "app.git",
            {"README.md": f"app v{i}\n", f"big{i}.bin": "x" * 50_000},
            message=f"c{i}",
        )
        for i in range(3)
    ]
    git("-C", str(base / "app.git"), "config", "http.receivepack", "false")
    token = secrets.token_urlsafe()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LC_ALL": "C",
    }
    server = _GitHTTPServer(free_port(), base, {f"ci:{token}", f"x-access-token:{token}"}, env)
    with serving(server):
        yield GitHTTP(server.server_address[1], base, token, shas, server, tmp_path / "home")


@contextmanager
def serving(server: _GitHTTPServer) -> Iterator[_GitHTTPServer]:
    thread = threading.Thread(target=server.serve_forever, name="git-http", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert server.backend_errors == []


def token_file(tmp_path: Path, content: str) -> str:
    path = tmp_path / "token"
    path.write_text(content + "\n")
    path.chmod(0o600)
    return f"file:{path}"


def assert_shallow_partial(dest: Path, sha: str, readme: str) -> None:
    assert git("-C", str(dest), "rev-parse", "HEAD").strip() == sha
    assert (dest / "README.md").read_text() == readme
    assert (dest / ".git" / "shallow").exists()
    assert git("-C", str(dest), "rev-list", "--count", "HEAD").strip() == "1"
    config = git("-C", str(dest), "config", "--list")
    assert "remote.origin.partialclonefilter=blob:none" in config
    assert "remote.origin.promisor=true" in config


def test_file_credential_user_and_token(git_http: GitHTTP, tmp_path: Path) -> None:
    creds = {git_http.prefix: token_file(tmp_path, f"ci:{git_http.token}")}
    settings = git_http.settings(git_credentials=creds)
    dest = tmp_path / "w"
    lines: list[str] = []
    res = checkout(
        CheckoutRequest(git_http.url, git_http.shas[1], dest), settings, log=lines.append
    )
    assert (res.sha, res.via) == (git_http.shas[1], "network")
    assert_shallow_partial(dest, git_http.shas[1], "app v1\n")
    seen = git_http.seen
    assert seen and all(s.authorization == basic(f"ci:{git_http.token}") for s in seen)
    assert all(s.status == 200 for s in seen)
    # Protocol v2 over smart HTTP: the ref advertisement, the shallow fetch, and the lazy
    # fetch of the blobs the partial checkout needs all carried the header.
    assert any(s.path.endswith("/info/refs?service=git-upload-pack") for s in seen)
    posts = [s for s in seen if s.method == "POST" and s.path.endswith("/git-upload-pack")]
    assert len(posts) >= 2
    assert all(s.protocol == "version=2" for s in seen)
    assert not any(git_http.token in line for line in lines)


def test_env_credential_with_a_bare_token(
    git_http: GitHTTP, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI_POOL_TEST_GIT_TOKEN", git_http.token)
    settings = git_http.settings(git_credentials={git_http.prefix: "env:CI_POOL_TEST_GIT_TOKEN"})
    dest = tmp_path / "w"
    res = checkout(CheckoutRequest(git_http.url, git_http.shas[2], dest), settings)
    assert res.sha == git_http.shas[2]
    assert_shallow_partial(dest, git_http.shas[2], "app v2\n")
    seen = git_http.seen
    assert seen and all(s.authorization == basic(f"x-access-token:{git_http.token}") for s in seen)


def test_missing_wrong_or_misscoped_credentials_fail(git_http: GitHTTP, tmp_path: Path) -> None:
    sha = git_http.shas[0]
    # No credentials: the server answers 401 and git, which must not prompt, gives up.
    with pytest.raises(CheckoutError, match="git fetch failed"):
        checkout(CheckoutRequest(git_http.url, sha, tmp_path / "w0"), git_http.settings())
    assert git_http.seen and all(s.authorization is None for s in git_http.seen)
    with pytest.raises(InputError):
        resolve_ref(git_http.url, "main", git_http.settings())

    # A wrong token: refused, and its value is not in the error.
    wrong = secrets.token_urlsafe()
    creds = {git_http.prefix: token_file(tmp_path, f"ci:{wrong}")}
    with pytest.raises(CheckoutError) as err:
        checkout(
            CheckoutRequest(git_http.url, sha, tmp_path / "w1"),
            git_http.settings(git_credentials=creds),
        )
    message = str(err.value)
    assert wrong not in message and git_http.token not in message
    assert base64.b64encode(f"ci:{wrong}".encode()).decode() not in message
    assert any(s.authorization == basic(f"ci:{wrong}") for s in git_http.seen)
    with pytest.raises(InputError) as err2:
        resolve_ref(git_http.url, "main", git_http.settings(git_credentials=creds))
    assert wrong not in str(err2.value)

    # The right token scoped to another origin (another loopback port) is not sent here.
    other = f"http://127.0.0.1:{free_port()}/"
    creds = {other: token_file(tmp_path, f"ci:{git_http.token}")}
    before = len(git_http.seen)
    with pytest.raises(CheckoutError):
        checkout(
            CheckoutRequest(git_http.url, sha, tmp_path / "w2"),
            git_http.settings(git_credentials=creds),
        )
    assert all(s.authorization is None for s in git_http.seen[before:])


def _git_shim(tmp_path: Path, record: Path) -> Path:
    """A ``git`` first on PATH that appends its argv to ``record`` and execs the real git."""
    bindir = tmp_path / "shim-bin"
    bindir.mkdir()
    shim = bindir / "git"
    shim.write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"git $*\" >> '{record}'\nexec '{REAL_GIT}' \"$@\"\n"
    )
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bindir


def test_token_never_lands_in_argv_urls_or_config(
    git_http: GitHTTP, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv_log = tmp_path / "argv.log"
    trace = tmp_path / "git-trace.log"
    bindir = _git_shim(tmp_path, argv_log)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    # git's own trace records the argv of every git process, its internal children too.
    monkeypatch.setenv("GIT_TRACE", str(trace))
    token = git_http.token
    userpass = f"ci:{token}"
    header = base64.b64encode(userpass.encode()).decode()
    settings = git_http.settings(git_credentials={git_http.prefix: token_file(tmp_path, userpass)})

    assert resolve_ref(git_http.url, "main", settings) == git_http.shas[-1]
    dest = tmp_path / "w"
    res = checkout(CheckoutRequest(git_http.url, git_http.shas[0], dest), settings)
    assert res.sha == git_http.shas[0]

    argv = argv_log.read_text()
    assert "git ls-remote" in argv and "git -C" in argv and " fetch " in argv
    traced = trace.read_text()
    assert "remote-http" in traced
    for text in (argv, traced):
        assert token not in text and header not in text
    monkeypatch.delenv("GIT_TRACE")
    config = git("-C", str(dest), "config", "--list")
    assert token not in config and header not in config
    assert f"remote.origin.url={git_http.url}" in config
    for path in (dest / ".git").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert token.encode() not in data and header.encode() not in data, path
    seen = git_http.seen
    assert any(s.path.startswith("/app.git/info/refs") for s in seen)
    assert all(token not in s.path and header not in s.path for s in seen)
    assert all(s.authorization == basic(userpass) for s in seen)


def test_url_rewrite_to_the_internal_server_with_credentials(
    git_http: GitHTTP, tmp_path: Path
) -> None:
    public = "https://git.example.invalid/org/"
    settings = git_http.settings(
        git_url_rewrites={public: git_http.prefix},
        git_credentials={git_http.prefix: token_file(tmp_path, f"ci:{git_http.token}")},
    )
    url = public + "app.git"
    assert resolve_ref(url, "main", settings) == git_http.shas[-1]
    dest = tmp_path / "w"
    res = checkout(CheckoutRequest(url, git_http.shas[1], dest), settings)
    assert res.sha == git_http.shas[1]
    assert_shallow_partial(dest, git_http.shas[1], "app v1\n")
    # The workspace keeps the public URL; the rewrite lives only in git's environment.
    assert f"remote.origin.url={url}" in git("-C", str(dest), "config", "--list")
    seen = git_http.seen
    assert seen and all(s.path.startswith("/app.git/") for s in seen)
    assert all(s.authorization == basic(f"ci:{git_http.token}") for s in seen)


def test_mirror_cache_with_credentials(git_http: GitHTTP, tmp_path: Path) -> None:
    creds = {git_http.prefix: token_file(tmp_path, f"ci:{git_http.token}")}
    settings = git_http.settings(git_credentials=creds, mirror_cache=True)
    # Enough refs that the mirror clone's list of wants passes 1 KiB and git gzips it.
    bare = str(git_http.base / "app.git")
    for i in range(40):
        git(
            "-C",
            bare,
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "tag",
            "-a",
            "-m",
            "t",
            f"t{i}",
            git_http.shas[i % 3],
        )
    res = checkout(CheckoutRequest(git_http.url, git_http.shas[0], tmp_path / "w1"), settings)
    assert (res.sha, res.via) == (git_http.shas[0], "mirror")
    new = make_repo(git_http.base / "app.git", {"README.md": "app new\n"}, message="new")
    res = checkout(CheckoutRequest(git_http.url, new, tmp_path / "w2"), settings)
    assert res.sha == new and (tmp_path / "w2" / "README.md").read_text() == "app new\n"
    assert any(s.encoding == "gzip" for s in git_http.seen)
    for mirror in settings.resolved_mirror_root.glob("*.git"):
        assert git_http.token not in (mirror / "config").read_text()
    assert all(s.authorization == basic(f"ci:{git_http.token}") for s in git_http.seen)


def test_credential_is_not_sent_to_another_origin_after_a_redirect(
    git_http: GitHTTP, tmp_path: Path
) -> None:
    # The credentialed origin (another loopback port) redirects to git_http, which is
    # opened to anyone: an origin the credential was never configured for.
    git_http.server.open = True
    front = _GitHTTPServer(free_port(), git_http.base, set(), git_http.server.base_env)
    front.redirect_to = git_http.prefix.rstrip("/")
    with serving(front):
        prefix = f"http://127.0.0.1:{front.server_address[1]}/"
        settings = git_http.settings(
            git_credentials={prefix: token_file(tmp_path, f"ci:{git_http.token}")}
        )
        try:
            checkout(
                CheckoutRequest(prefix + "app.git", git_http.shas[0], tmp_path / "w"), settings
            )
        except CheckoutError:
            pass  # refusing the redirect is fine; leaking the token is not
    assert front.seen and all(s.status == 302 for s in front.seen)
    leaked = [s for s in git_http.seen if s.authorization is not None]
    assert leaked == []
