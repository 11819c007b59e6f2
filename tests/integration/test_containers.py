"""The job container as Docker sees it, live logs with step markers and timestamps,
pipefail on the host, image overrides, submodules and LFS."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ci_pool.core.specs import parse_job_spec
from ci_pool.embedded import make_repo
from ci_pool.exceptions import CheckoutError, InputError
from ci_pool.git import CheckoutRequest, checkout
from ci_pool.settings import load_settings
from tests.conftest import GitServer, Harness, Worker, containers_left, containers_of

pytestmark = pytest.mark.integration


def test_running_container_is_labelled_limited_unprivileged_and_offline(
    harness: Harness, git_server: GitServer, android_worker: Worker, docker_client: Any
) -> None:
    res = harness.cli(
        "submit",
        "--repo",
        git_server.url(),
        "--ref",
        "main",
        "--capability",
        "android",
        "--run",
        "sleep 3",
    )
    job_id = res.stdout.strip()
    deadline = time.monotonic() + 60
    while not containers_of(docker_client, job_id):
        assert time.monotonic() < deadline, "no container appeared"
        time.sleep(0.05)
    attrs = containers_of(docker_client, job_id)[0].attrs
    labels = attrs["Config"]["Labels"]
    assert labels["ci-pool.job"] == job_id
    assert labels["ci-pool.runner"] == android_worker.runner_id
    host = attrs["HostConfig"]
    assert host["Privileged"] is False
    assert host["NetworkMode"] == "none"
    assert host["Memory"] == 256 * 1024 * 1024  # android's memory = "256m" in the test config
    assert host["PidsLimit"] == 4096
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/workspace"]["Source"].endswith(f"{job_id}-1/src")
    assert harness.cli("wait", job_id, "--timeout", "90").returncode == 0
    assert containers_left(docker_client, job_id) == []


def test_logs_follow_streams_live_with_step_markers_and_timestamps(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    # The gap is long enough for `logs -f` to start (a second or more on a loaded machine)
    # before "second" is written, so the two lines must arrive apart to pass.
    job_id = harness.submit(git_server, "echo first; sleep 6; echo second", capability="linux")
    seen: list[tuple[float, str]] = []
    with subprocess.Popen(
        [sys.executable, "-m", "ci_pool", "logs", job_id, "-f"],
        env=harness.env(),
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append((time.monotonic(), line.rstrip("\n")))
        assert proc.wait(timeout=60) == 0
    texts = [t for _, t in seen]
    stamp = r"^\d\d:\d\d:\d\d\.\d{3} "
    assert all(re.match(stamp, t) for t in texts), texts
    plain = [re.sub(stamp, "", t) for t in texts]
    assert "##[step] 1 run 1" in plain and "first" in plain and "second" in plain
    # "first" arrived while the job was still running, not with the end of the log.
    t_first = next(t for t, x in seen if x.endswith(" first"))
    t_second = next(t for t, x in seen if x.endswith(" second"))
    assert t_second - t_first > 1.0


def test_pipefail_on_host_mode(harness: Harness, git_server: GitServer) -> None:
    harness.start_worker("iso")
    pool = harness.pool()
    job = pool.submit(
        parse_job_spec(
            {
                "repo": git_server.url(),
                "ref": "main",
                "capability": "iso",
                "steps": [{"run": "false | true\necho not reached"}],
            },
            allow_local_repos=False,
        )
    )
    done = pool.wait(job.id, timeout=90)
    assert (done.state, done.exit_code) == ("failed", 1)
    assert "not reached" not in pool.store.read_log(job.id)


def test_image_override_only_where_the_capability_allows_it(
    harness: Harness, git_server: GitServer
) -> None:
    res = harness.cli(
        "submit",
        "--repo",
        git_server.url(),
        "--ref",
        "main",
        "--capability",
        "linux",
        "--image",
        "evil/image:latest",
        "--run",
        "true",
    )
    assert res.returncode == 2
    assert "runs only its own image" in res.stderr


def test_submodules_are_checked_out_on_request(tmp_path: Path, git_server: GitServer) -> None:
    base = git_server.base
    make_repo(base / "lib.git", {"lib.txt": "library\n"})
    env = {
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@l",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@l",
        "PATH": "/usr/bin:/bin",
    }
    work = tmp_path / "super"
    subprocess.run(
        ["git", "clone", "-q", git_server.url("app.git"), str(work)], check=True, env=env
    )
    subprocess.run(
        [
            "git",
            "-C",
            str(work),
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            git_server.url("lib.git"),
            "lib",
        ],
        check=True,
        env=env,
    )
    subprocess.run(["git", "-C", str(work), "commit", "-qm", "add lib"], check=True, env=env)
    # git daemon exports read-only; publish the superproject as its own bare repository.
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(work), str(base / "super.git")], check=True, env=env
    )
    sha = subprocess.run(
        ["git", "-C", str(work), "rev-parse", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    settings = load_settings(None, home=tmp_path / "home")
    url = git_server.url("super.git")
    checkout(CheckoutRequest(url, sha, tmp_path / "plain"), settings)
    assert not (tmp_path / "plain" / "lib" / "lib.txt").exists()
    checkout(CheckoutRequest(url, sha, tmp_path / "w", submodules=True), settings)
    assert (tmp_path / "w" / "lib" / "lib.txt").read_text() == "library\n"


def test_lfs_without_git_lfs_is_a_clear_checkout_error(
    tmp_path: Path, git_server: GitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PATH with git but without git-lfs, as on a runner that lacks it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to("/usr/bin/git")
    (bin_dir / "cp").symlink_to("/bin/cp")
    monkeypatch.setenv("PATH", str(bin_dir))
    settings = load_settings(None, home=tmp_path / "home")
    with pytest.raises(CheckoutError, match="git-lfs is not installed on this runner"):
        checkout(
            CheckoutRequest(git_server.url(), git_server.shas["app.git"], tmp_path / "w", lfs=True),
            settings,
        )
    with pytest.raises(InputError):
        parse_job_spec(
            {"repo": git_server.url(), "steps": [{"run": "x"}], "checkout": {"fetch_depth": -1}},
            allow_local_repos=False,
        )
