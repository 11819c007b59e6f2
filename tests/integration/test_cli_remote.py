"""The CLI in remote mode (CI_POOL_API_URL) against a real uvicorn API over the shared pool:
each scenario runs once through the local store and broker and once through the API, and
both must give the same results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ci_pool.embedded import free_port
from tests.conftest import GitServer, Harness, Worker, submit_with
from tests.integration.test_api import make_token

pytestmark = pytest.mark.integration

Result = subprocess.CompletedProcess[str]


@dataclass
class Remote:
    """The CLI with nothing local to fall back on: an empty home and config, a broker
    address where nothing listens; only the API and its token."""

    home: Path
    config: Path
    url: str
    token: str

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
        env.update(
            CI_POOL_HOME=str(self.home),
            CI_POOL_CONFIG=str(self.config),
            CI_POOL_BROKER_URL="redis://127.0.0.1:9/0",
            CI_POOL_API_URL=self.url,
            CI_POOL_API_TOKEN=self.token,
        )
        env.update(extra)
        return {k: v for k, v in env.items() if v}

    def cli(self, *args: str, timeout: float = 120, **extra: str) -> Result:
        res = subprocess.run(
            [sys.executable, "-m", "ci_pool", *args],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert self.token not in res.stdout + res.stderr, "the token leaked into CLI output"
        assert "Traceback" not in res.stderr, res.stderr
        return res


@pytest.fixture(scope="module")
def remote(
    harness: Harness, api_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Remote]:
    root = tmp_path_factory.mktemp("remote-cli")
    (root / "ci-pool.toml").write_text("")
    r = Remote(
        root / "home",
        root / "ci-pool.toml",
        api_url,
        make_token(harness, "submit", "read", "cancel"),
    )
    yield r
    assert not (r.home / "ci-pool.db").exists(), "remote mode opened a local store"


def both(harness: Harness, remote: Remote) -> dict[str, Any]:
    return {"local": harness.cli, "remote": remote.cli}


def test_submit_wait_show_and_logs_match(
    harness: Harness, git_server: GitServer, linux_worker: Worker, remote: Remote
) -> None:
    for run, code in (("echo to-stdout; echo to-stderr >&2", 0), ("echo failing; exit 7", 7)):
        ids = {}
        for mode, cli in both(harness, remote).items():
            job_id = submit_with(cli, git_server, run)
            waited = cli("wait", job_id, "--timeout", "90")
            assert waited.returncode == code, (mode, waited.stderr)
            state = "succeeded" if code == 0 else "failed"
            assert f"job {job_id} {state}" in waited.stderr, (mode, waited.stderr)
            ids[mode] = job_id
        shown = {
            mode: json.loads(cli("show", ids[mode], "--json").stdout)
            for mode, cli in both(harness, remote).items()
        }
        assert list(shown["local"]) == list(shown["remote"])
        assert shown["local"]["state"] == shown["remote"]["state"]
        assert shown["local"]["exit_code"] == shown["remote"]["exit_code"] == code
        # One job seen both ways: the same view, the same log, the same human output.
        for job_id in ids.values():
            for args in (["show", job_id, "--json"], ["logs", job_id], ["explain", job_id]):
                local, far = harness.cli(*args), remote.cli(*args)
                assert (local.returncode, local.stdout) == (far.returncode, far.stdout), args
        logs = {
            mode: cli("logs", ids[mode]).stdout.splitlines()
            for mode, cli in both(harness, remote).items()
        }
        first = "to-stdout" if code == 0 else "failing"
        assert first in logs["local"] and first in logs["remote"]


def test_logs_follow_streams_while_the_job_runs(
    harness: Harness, git_server: GitServer, linux_worker: Worker, remote: Remote
) -> None:
    # Long enough that `logs -f` (started after the submit returns) sees the job running
    # even on a loaded machine.
    job_id = submit_with(remote.cli, git_server, "echo first-line; sleep 8; echo second-line")
    with subprocess.Popen(
        [sys.executable, "-m", "ci_pool", "logs", "-f", job_id],
        env=remote.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.rstrip().endswith("first-line"):
                break
        # The first line came through while the job still runs.
        assert harness.pool().get(job_id).state == "running"
        # The rest through the same buffered pipe the first lines came from.
        out, errors = proc.stdout.read(), proc.stderr.read()
        assert proc.wait(timeout=90) == 0, errors
    lines += out.splitlines()
    assert remote.token not in out + errors
    texts = [line.split(" ", 1)[1] if line[:2].isdigit() else line for line in lines]
    assert texts.index("first-line") < texts.index("second-line")
    assert lines[0][:2].isdigit(), "followed lines carry their timestamp"
    local = harness.cli("logs", "-f", job_id)
    assert local.returncode == 0 and local.stdout.splitlines() == lines


def test_cancel_of_a_queued_job_matches(
    harness: Harness, git_server: GitServer, remote: Remote
) -> None:
    for mode, cli in both(harness, remote).items():
        job_id = submit_with(cli, git_server, "true", capability="deploy")
        explained = cli("explain", job_id).stdout
        assert "no worker is serving capability 'deploy'" in explained, mode
        res = cli("cancel", job_id)
        assert (res.returncode, res.stdout) == (0, f"job {job_id} cancelled\n"), mode
        assert json.loads(cli("show", job_id, "--json").stdout)["state"] == "cancelled"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--ref", "-oops"], "ref"),
        (["--capability", "gpu"], "capability"),
        (["--repo", "not a url"], "repo"),
        (["--timeout", "soon"], "--timeout"),
    ],
)
def test_bad_input_gives_the_same_error(
    harness: Harness, git_server: GitServer, remote: Remote, args: list[str], field: str
) -> None:
    base = {"--repo": git_server.url(), "--ref": "main", "--capability": "linux"}
    base.update(zip(args[::2], args[1::2], strict=True))
    argv = ["submit", *(f"{k}={v}" for k, v in base.items()), "--run", "true"]
    local, far = harness.cli(*argv), remote.cli(*argv)
    assert local.returncode == far.returncode == 2, (local.stderr, far.stderr)
    assert f"error: {field}: " in local.stderr
    assert far.stderr == local.stderr


def test_unknown_job_gives_the_same_error(harness: Harness, remote: Remote) -> None:
    for args in (
        ["show", "nosuchjob"],
        ["logs", "nosuchjob"],
        ["wait", "nosuchjob"],
        ["cancel", "nosuchjob"],
        ["explain", "nosuchjob"],
    ):
        local, far = harness.cli(*args), remote.cli(*args)
        assert local.returncode == far.returncode == 2, args
        assert "no job" in far.stderr and far.stderr == local.stderr, args


def test_run_a_workflow_and_retry_match(
    harness: Harness, git_server: GitServer, linux_worker: Worker, remote: Remote, tmp_path: Path
) -> None:
    wf = tmp_path / "small.yml"
    wf.write_text(
        "name: small\non: push\njobs:\n"
        "  build:\n    runs-on: linux\n    steps:\n      - run: echo built\n"
        "  test:\n    needs: build\n    runs-on: linux\n    steps:\n      - run: exit 4\n"
    )
    results = {}
    for mode, cli in both(harness, remote).items():
        res = cli("run", str(wf), "--repo", git_server.url(), "--ref", "main", timeout=150)
        assert res.returncode == 1, (mode, res.stderr)
        pid = res.stderr.split()[1].rstrip(":")
        assert res.stdout.splitlines()[-1] == f"pipeline {pid} failed"
        shown = cli("pipeline", "show", pid, "--json")
        assert shown.returncode == 0, shown.stderr
        view = json.loads(shown.stdout)
        results[mode] = {j["key"]: (j["state"], j["exit_code"]) for j in view["jobs"]}
        retried = cli("retry", pid, timeout=150)
        assert retried.returncode == 1, (mode, retried.stderr)
        assert f"pipeline {pid}: re-running 1 job(s)" in retried.stderr, (mode, retried.stderr)
        local, far = harness.cli("pipeline", "show", pid), remote.cli("pipeline", "show", pid)
        assert local.stdout == far.stdout
    assert (
        results["local"]
        == results["remote"]
        == {
            "build": ("succeeded", 0),
            "test": ("failed", 4),
        }
    )


def test_pipeline_cancel_matches(
    harness: Harness, git_server: GitServer, remote: Remote, tmp_path: Path
) -> None:
    wf = tmp_path / "parked.yml"
    wf.write_text(
        "name: parked\non: push\njobs:\n"
        "  ship:\n    runs-on: deploy\n    steps:\n      - run: 'true'\n"
    )
    for mode, cli in both(harness, remote).items():
        res = cli("run", str(wf), "--repo", git_server.url(), "--ref", "main", "--detach")
        assert res.returncode == 0, (mode, res.stderr)
        pid = res.stdout.strip()
        cancelled = cli("pipeline", "cancel", pid)
        assert (cancelled.returncode, cancelled.stdout) == (0, f"pipeline {pid} cancelled\n")


def test_status_lists_the_same_capabilities(harness: Harness, remote: Remote) -> None:
    local, far = harness.cli("status", "--json"), remote.cli("status", "--json")
    assert local.returncode == far.returncode == 0, far.stderr
    rows = {mode: json.loads(res.stdout) for mode, res in (("local", local), ("remote", far))}
    assert [r["capability"] for r in rows["local"]] == [r["capability"] for r in rows["remote"]]
    assert [list(r) for r in rows["local"]] == [list(r) for r in rows["remote"]]
    assert "deploy" in remote.cli("status").stdout


def test_artifacts_download_the_same_bytes(
    harness: Harness, git_server: GitServer, linux_worker: Worker, remote: Remote, tmp_path: Path
) -> None:
    job_id = submit_with(
        remote.cli,
        git_server,
        "mkdir -p dist && echo release-bits > dist/app.txt && printf '\\001\\377' > dist/b.bin",
        "--artifact",
        "dist/*",
    )
    assert remote.cli("wait", job_id, "--timeout", "90").returncode == 0
    got = {}
    for mode, cli in both(harness, remote).items():
        dest = tmp_path / mode
        res = cli("artifacts", job_id, "--dest", str(dest))
        assert res.returncode == 0, (mode, res.stderr)
        got[mode] = {
            str(Path(line).relative_to(dest.resolve())): Path(line).read_bytes()
            for line in res.stdout.splitlines()
        }
    assert got["local"] == got["remote"]
    assert got["remote"]["dist/app.txt"] == b"release-bits\n"
    assert got["remote"]["dist/b.bin"] == b"\x01\xff"
    plain = submit_with(remote.cli, git_server, "true")
    assert remote.cli("wait", plain, "--timeout", "90").returncode == 0
    local, far = (
        harness.cli("artifacts", plain, "--dest", str(tmp_path / "none")),
        remote.cli("artifacts", plain, "--dest", str(tmp_path / "none")),
    )
    assert local.returncode == far.returncode == 2
    assert far.stderr == local.stderr and "has no artifacts" in far.stderr


def test_missing_or_bad_token_is_a_clear_401(
    harness: Harness, git_server: GitServer, remote: Remote
) -> None:
    res = remote.cli("status", CI_POOL_API_TOKEN="")
    assert res.returncode == 2
    assert "CI_POOL_API_TOKEN" in res.stderr and remote.url in res.stderr
    bogus = "not-a-real-token-0123456789"
    res = remote.cli("show", "nosuchjob", CI_POOL_API_TOKEN=bogus)
    assert res.returncode == 2
    assert "refused CI_POOL_API_TOKEN" in res.stderr
    assert bogus not in res.stdout + res.stderr


def test_plain_http_off_loopback_is_refused_before_any_request(remote: Remote) -> None:
    res = remote.cli("status", CI_POOL_API_URL="http://ci.example.invalid:8080")
    assert res.returncode == 2
    assert "CI_POOL_API_URL" in res.stderr and "https://" in res.stderr
    down = remote.cli("status", CI_POOL_API_URL=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 3
    assert "cannot reach the API at http://127.0.0.1:" in down.stderr


def test_runners_drain_undrain_and_scale_work_remotely_with_an_admin_token(
    harness: Harness, remote: Remote
) -> None:
    worker = harness.start_worker("flutter-web")
    try:
        local = json.loads(harness.cli("runners", "--json").stdout)
        far = remote.cli("runners", "--json")
        assert far.returncode == 0, far.stderr
        rows = {r["runner_id"]: r for r in json.loads(far.stdout)}
        assert {r["runner_id"] for r in local} == set(rows)
        mine = rows[worker.runner_id]
        assert (mine["capability"], mine["state"], mine["jobs"]) == ("flutter-web", "online", [])
        # The levers need the admin scope; the remote CLI's token has only submit/read/cancel.
        denied = remote.cli("drain", worker.runner_id)
        assert denied.returncode == 2 and "lacks the 'admin' scope" in denied.stderr
        admin = make_token(harness, "admin")
        scaled = remote.cli("scale", "flutter-web", "2", CI_POOL_API_TOKEN=admin)
        assert scaled.returncode == 0, scaled.stderr
        assert f"{worker.runner_id}: 1 -> 2 ok" in scaled.stdout
        drained = remote.cli("drain", worker.runner_id, CI_POOL_API_TOKEN=admin)
        assert drained.returncode == 0, drained.stderr
        assert f"{worker.runner_id}: draining" in drained.stdout
        assert worker.proc.wait(timeout=60) == 0  # idle, so it leaves at once
        missing = remote.cli("drain", "nobody@nowhere", CI_POOL_API_TOKEN=admin)
        assert missing.returncode == 2 and "no live runner 'nobody@nowhere'" in missing.stderr
    finally:
        worker.stop()


def test_a_token_limited_to_a_capability_sees_only_its_runners(
    harness: Harness, remote: Remote, linux_worker: Worker
) -> None:
    limited = make_token(harness, "read", capabilities=["android"])
    res = remote.cli("runners", "--json", CI_POOL_API_TOKEN=limited)
    assert res.returncode == 0, res.stderr
    assert {r["capability"] for r in json.loads(res.stdout)} <= {"android"}
