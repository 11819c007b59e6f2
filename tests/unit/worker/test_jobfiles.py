"""runner.jobfiles: files a job leaves behind are read without following symlinks, only as
regular files, without blocking, and within a cap; new files are never written through
a name the job made. Real files, FIFOs and devices in tmp_path."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from ci_pool.exceptions import JobFileRefused
from ci_pool.worker.jobfiles import JobDir


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    d = tmp_path / "job"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "out").write_bytes(b"a=1\n")
    return d


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    f = tmp_path / "host-secret"
    f.write_text("HOST_SECRET=do-not-read\n")
    return f


def refused(d: Path, rel: str, cap: int = 1024) -> str:
    with JobDir(d) as jd, pytest.raises(JobFileRefused) as info:
        jd.read(rel, cap)
    return str(info.value)


def test_a_regular_file_below_the_directory_is_read(job_dir: Path) -> None:
    with JobDir(job_dir) as jd:
        assert jd.read("sub/out", 1024) == b"a=1\n"


def test_a_symlink_as_the_final_name_is_refused(job_dir: Path, host_file: Path) -> None:
    (job_dir / "link").symlink_to(host_file)
    assert refused(job_dir, "link") == "link: is a symbolic link, not a regular file"


def test_a_symlink_to_proc_environ_is_refused(job_dir: Path) -> None:
    (job_dir / "env").symlink_to("/proc/self/environ")
    assert "symbolic link" in refused(job_dir, "env")


def test_a_symlink_in_a_middle_component_is_refused(job_dir: Path, host_file: Path) -> None:
    (job_dir / "up").symlink_to(host_file.parent)
    message = refused(job_dir, f"up/{host_file.name}")
    assert message == (f"up/{host_file.name}: up is not a directory (symlinks are not followed)")


def test_a_fifo_is_refused_without_blocking(job_dir: Path) -> None:
    os.mkfifo(job_dir / "fifo")
    # No writer ever opens it: a blocking open or read would hang this test (timeout).
    assert refused(job_dir, "fifo") == "fifo: is a FIFO, not a regular file"


def test_a_device_is_refused(job_dir: Path) -> None:
    try:
        os.mknod(job_dir / "zero", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("creating a device node needs root")
    assert refused(job_dir, "zero") == "zero: is a character device, not a regular file"


def test_a_directory_is_refused(job_dir: Path) -> None:
    assert refused(job_dir, "sub") == "sub: is a directory, not a regular file"


def test_a_file_over_the_cap_is_refused_naming_the_cap(job_dir: Path) -> None:
    (job_dir / "big").write_bytes(b"x" * 2048)
    assert refused(job_dir, "big", cap=1024) == "big: is larger than the 1024 byte limit"
    with JobDir(job_dir) as jd:
        assert jd.read("big", 2048) == b"x" * 2048


def test_paths_that_climb_out_are_refused(job_dir: Path) -> None:
    assert "not a path inside" in refused(job_dir, "../host-secret")
    assert "not a path inside" in refused(job_dir, "/etc/passwd")


def test_copy_hashes_what_it_copies_and_stops_past_the_limit(job_dir: Path) -> None:
    import hashlib

    (job_dir / "art").write_bytes(b"y" * 100)
    out = io.BytesIO()
    with JobDir(job_dir) as jd:
        size, sha = jd.copy("art", out, 1000)
        assert (size, sha) == (100, hashlib.sha256(b"y" * 100).hexdigest())
        assert out.getvalue() == b"y" * 100
        assert jd.copy("art", io.BytesIO(), 10)[0] == 11  # over the limit: cut, reported


def test_create_never_writes_through_a_planted_symlink(job_dir: Path, host_file: Path) -> None:
    (job_dir / "step-2.sh").symlink_to(host_file)
    with JobDir(job_dir) as jd, pytest.raises(JobFileRefused, match="already exists"):
        jd.create("step-2.sh", b"echo pwned\n")
    assert host_file.read_text() == "HOST_SECRET=do-not-read\n"


def test_replace_removes_a_planted_symlink_and_creates_a_fresh_file(
    job_dir: Path, host_file: Path
) -> None:
    (job_dir / "output-1").symlink_to(host_file)
    with JobDir(job_dir) as jd:
        jd.replace("output-1")
        assert jd.read("output-1", 10) == b""
    assert not (job_dir / "output-1").is_symlink()
    assert host_file.read_text() == "HOST_SECRET=do-not-read\n"


def test_a_directory_fd_keeps_pointing_at_the_original_after_a_rename(
    tmp_path: Path, job_dir: Path, host_file: Path
) -> None:
    with JobDir(job_dir) as jd:
        job_dir.rename(tmp_path / "moved")
        job_dir.symlink_to(host_file.parent)
        jd.create("new", b"ok")
    assert (tmp_path / "moved" / "new").read_bytes() == b"ok"
    assert not (host_file.parent / "new").exists()
