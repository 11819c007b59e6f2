"""The pool cache's backends under one contract: a directory, and an S3 bucket on a real
S3-compatible server on loopback (moto's server). Entries found by scope and key prefix,
archives round-tripped through each backend, least recently used entries evicted."""

from __future__ import annotations

import io
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci_pool.settings import Settings
from ci_pool.worker import artifacts, cache_archive
from ci_pool.worker.actions.cache_actions import CacheRequest, find_entry
from ci_pool.worker.actions.workspace_paths import Paths
from ci_pool.worker.cachestore import CacheBackend, open_backend

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    moto_server = pytest.importorskip("moto.server")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(params=["directory", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> CacheBackend:
    if request.param == "directory":
        return open_backend(Settings(home=tmp_path, cache_dir=tmp_path / "cache"))
    endpoint = request.getfixturevalue("s3_server")
    keys = tmp_path / "s3-keys"
    keys.write_text("testing-key:testing-secret\n")
    settings = Settings(
        home=tmp_path,
        cache_url=f"s3://cache-{tmp_path.name[-8:].lower().replace('_', '-')}/pool",
        cache_s3_endpoint=endpoint,
        cache_s3_credentials=f"file:{keys}",
    )
    cache = open_backend(settings)
    client: Any = cache.client  # type: ignore[attr-defined]
    client.create_bucket(Bucket=settings.cache_url[5:].split("/")[0])
    return cache


def _archive(tmp_path: Path, files: dict[str, str], compression: str = "zstd") -> Path:
    src = tmp_path / f"src-{compression}"
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    os.symlink("a.txt", src / "dir" / "link")
    out = tmp_path / f"entry.{compression}"
    with out.open("wb") as fh:
        packed = cache_archive.pack(src, artifacts.Selection(("dir",)), fh, compression, 1 << 20)
    assert (packed.files, packed.bytes) == (len(files) + 1, sum(map(len, files.values())))
    return out


def _request(scopes: tuple[str, ...], key: str, *restore: str) -> CacheRequest:
    return CacheRequest(key, restore, Paths(("dir",), (), ""), "repo1", scopes, "ver1")


def test_round_trip_and_prefix_match_on_each_backend(backend: CacheBackend, tmp_path: Path) -> None:
    for compression in ("zstd", "gzip"):
        archive = _archive(
            tmp_path, {"dir/a.txt": "alpha\n", "dir/sub/b.txt": "beta\n"}, compression
        )
        req = _request(("refs/heads/main",), f"deps-{compression}-abc")
        backend.put(req.name("refs/heads/main", req.key), archive)
        found = find_entry(backend, req)
        assert found is not None and found[1] == req.key
        buf = io.BytesIO()
        assert backend.fetch(found[0].name, buf)
        dest = tmp_path / f"dest-{compression}"
        dest.mkdir()
        buf.seek(0)
        assert cache_archive.unpack(buf, dest, 1 << 20, 100) == (3, 11)
        assert (dest / "dir" / "sub" / "b.txt").read_text() == "beta\n"
        assert os.readlink(dest / "dir" / "link") == "a.txt"
    # A restore key matches by prefix, the most recently used entry first.
    time.sleep(1.1)  # S3 keeps last-modified times to the second
    backend.touch(_request(("refs/heads/main",), "").name("refs/heads/main", "deps-gzip-abc"))
    prefix = find_entry(backend, _request(("refs/heads/main",), "deps-none", "deps-"))
    assert prefix is not None and prefix[1] == "deps-gzip-abc"
    assert find_entry(backend, _request(("refs/heads/main",), "other", "nothing-")) is None
    assert not backend.fetch("v1/missing", io.BytesIO())


def test_branch_scopes_fall_back_to_the_default_branch_only(
    backend: CacheBackend, tmp_path: Path
) -> None:
    archive = _archive(tmp_path, {"dir/a.txt": "a\n"})
    main, feature = "refs/heads/main", "refs/heads/feature"
    backend.put(_request((main,), "k").name(main, "k-main"), archive)
    backend.put(_request((feature,), "k").name(feature, "k-feature"), archive)
    # A feature job restores its own entry first, then main's.
    on_feature = find_entry(backend, _request((feature, main), "k-feature"))
    assert on_feature is not None and on_feature[1] == "k-feature"
    fallback = find_entry(backend, _request((feature, main), "k-main"))
    assert fallback is not None and fallback[1] == "k-main"
    # A main job never sees the feature branch's entries.
    assert find_entry(backend, _request((main,), "k-feature")) is None
    assert find_entry(backend, _request((main,), "x", "k-f")) is None


def test_least_recently_used_entries_are_evicted_past_the_size_cap(
    backend: CacheBackend, tmp_path: Path
) -> None:
    archive = _archive(tmp_path, {"dir/a.txt": "x" * 2000})
    size = archive.stat().st_size
    req = _request(("refs/heads/main",), "k")
    for n in range(3):
        backend.put(req.name("refs/heads/main", f"k{n}"), archive)
        time.sleep(1.1)
    backend.touch(req.name("refs/heads/main", "k0"))  # k0 used last: k1 is the oldest
    removed = backend.evict(2 * size, "v1")
    assert [e.name.rsplit("/", 1)[1] for e in removed] == ["k1"]
    left = sorted(e.name.rsplit("/", 1)[1] for e in backend.find("v1/"))
    assert left == ["k0", "k2"]
