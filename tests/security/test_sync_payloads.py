"""Local changes (``--sync``) are untrusted input: a patch or a snapshot never writes
outside the job's workspace, on the runner's real git and filesystem, and through the
real API and a real worker."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from ci_pool.exceptions import SyncRefused
from ci_pool.worker.sync import apply_patch, unpack_snapshot
from tests.conftest import GitServer, Harness, Worker
from tests.integration.test_api import auth, job_body, make_token


def symlink_patch(outside: Path) -> bytes:
    """A patch that makes ``escape`` a symlink to ``outside``, then writes through it."""
    return (
        "diff --git a/escape b/escape\nnew file mode 120000\n--- /dev/null\n+++ b/escape\n"
        f"@@ -0,0 +1 @@\n+{outside}\n\\ No newline at end of file\n"
        "diff --git a/escape/pwned b/escape/pwned\nnew file mode 100644\n--- /dev/null\n"
        "+++ b/escape/pwned\n@@ -0,0 +1 @@\n+pwned\n"
    ).encode()


def new_file_patch(path: str) -> bytes:
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 100755\n--- /dev/null\n+++ b/{path}\n"
        "@@ -0,0 +1 @@\n+pwned\n"
    ).encode()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    work = tmp_path / "job" / "src"
    work.mkdir(parents=True)
    run = ["git", "-C", str(work)]
    subprocess.run([*run, "init", "-q"], check=True)
    (work / "f").write_text("a\n")
    subprocess.run([*run, "add", "f"], check=True)
    subprocess.run([*run, "-c", "user.email=a@b.invalid", "-c", "user.name=a", "commit", "-qm",
                    "c"], check=True)  # fmt: skip
    return work


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("symlink", "beyond a symbolic link"),
        ("dotdot", "invalid path '../pwned'"),
        ("hook", "invalid path '.git/hooks/post-checkout'"),
    ],
)
def test_patch_cannot_write_outside_the_checkout(
    checkout: Path, tmp_path: Path, patch: str, message: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = {
        "symlink": symlink_patch(outside),
        "dotdot": new_file_patch("../pwned"),
        "hook": new_file_patch(".git/hooks/post-checkout"),
    }[patch]
    with pytest.raises(SyncRefused, match="the patch does not apply") as refused:
        apply_patch(data, checkout)
    assert message in str(refused.value)
    assert list(outside.iterdir()) == []
    assert not (checkout.parent / "pwned").exists()
    assert not (checkout / ".git" / "hooks" / "post-checkout").exists()
    assert not (checkout / "escape").exists()  # nothing of a refused patch is applied


def tarball(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for info, content in members:
            tar.addfile(info, None if content is None else io.BytesIO(content))
    return buf.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, content: bytes = b"x", link: str = "") -> (
    tuple[tarfile.TarInfo, bytes | None]
):  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    if kind == tarfile.REGTYPE:
        info.size = len(content)
        return info, content
    return info, None


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([entry("/tmp/abs")], "not a relative path"),
        ([entry("a/../../up")], "'..' leaves the workspace"),
        ([entry("ok"), entry("ok")], "comes twice"),
        ([entry(".git/config")], "carries no .git"),
        ([entry("l", tarfile.SYMTYPE, link="/etc")], "points outside"),
        ([entry("l", tarfile.SYMTYPE, link="../..")], "points outside"),
        ([entry("d", tarfile.DIRTYPE), entry("d/l", tarfile.SYMTYPE, link="../../x")], "outside"),
        ([entry("l", tarfile.SYMTYPE, link="sub"), entry("l/f")], "under a symlink"),
        ([entry("dev", tarfile.CHRTYPE)], "only files, directories and symlinks"),
        ([entry("fifo", tarfile.FIFOTYPE)], "only files, directories and symlinks"),
        ([entry("f"), entry("h", tarfile.LNKTYPE, link="f")], "only files, directories"),
    ],
)
def test_snapshot_is_checked_whole_before_anything_is_written(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], message: str
) -> None:
    dest = tmp_path / "job" / "src"
    with pytest.raises(SyncRefused, match=message):
        unpack_snapshot(tarball(*members), dest, 1024 * 1024)
    assert list(dest.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job"]


def test_snapshot_size_is_bounded_unpacked(tmp_path: Path) -> None:
    # 64 KiB of zeros compress to a few hundred bytes: the bound is on what it unpacks to.
    bomb = tarball(entry("zeros", content=bytes(64 * 1024)))
    assert len(bomb) < 4096
    with pytest.raises(SyncRefused, match="unpacks to over 8192 bytes"):
        unpack_snapshot(bomb, tmp_path / "src", 1024)
    with pytest.raises(SyncRefused, match="cannot be unpacked"):
        unpack_snapshot(b"not a tarball", tmp_path / "src2", 1024)


def test_a_good_snapshot_keeps_inner_symlinks_and_drops_special_bits(tmp_path: Path) -> None:
    info, content = entry("bin/tool", content=b"#!/bin/sh\n")
    info.mode = 0o4755  # setuid: dropped
    data = tarball((info, content), entry("link", tarfile.SYMTYPE, link="bin/tool"))
    assert unpack_snapshot(data, tmp_path / "src", 1024 * 1024) == 2
    assert (tmp_path / "src" / "link").readlink() == Path("bin/tool")
    assert (tmp_path / "src" / "bin" / "tool").stat().st_mode & 0o7777 == 0o755


@pytest.mark.integration
def test_hostile_patch_through_the_api_fails_the_job_and_touches_nothing(
    harness: Harness, git_server: GitServer, linux_worker: Worker, api_url: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    token = make_token(harness, "submit", "read")
    with httpx.Client(base_url=api_url, headers=auth(token), timeout=30) as http:
        missing = {"mode": "patch", "sha256": "0" * 64, "size": 1}
        res = http.post("/v1/jobs", json=job_body(git_server, "true", checkout={"sync": missing}))
        assert res.status_code == 422, res.text
        assert res.json()["error"]["field"] == "checkout.sync"
        assert "upload it first" in res.json()["error"]["message"]
        big = http.post("/v1/sync", params={"mode": "patch"}, content=b"x" * (9 * 1024 * 1024))
        assert big.status_code == 413 and "sync_max_bytes" in big.text, big.text
        up = http.post("/v1/sync", params={"mode": "patch"}, content=symlink_patch(outside))
        assert up.status_code == 201, up.text
        sync = up.json()
        res = http.post("/v1/jobs", json=job_body(git_server, "echo ran", checkout={"sync": sync}))
        assert res.status_code == 201, res.text
        job_id = res.json()["id"]
        deadline = time.monotonic() + 90
        while (view := http.get(f"/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, view
            time.sleep(0.2)
        log = http.get(f"/v1/jobs/{job_id}/logs").text
    assert view["state"] == "failed" and view["attempt"] == 1, view  # not retried
    assert "sync: the patch does not apply" in view["reason"]
    assert "beyond a symbolic link" in log
    assert "ran" not in log.splitlines()
    assert list(outside.iterdir()) == []
