"""A Docker step's output reaches the runner whole, however late the runner reads the exec's
response: a step that prints at once and exits, on a busy host, must not lose its lines
(the engine writes them right behind the response's headers, into the client's buffer).

The late read is made on purpose (the client waits before it reads each response's
headers), against the real engines: dockerd and Podman's API service."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from ci_pool.core.capabilities import Capability
from ci_pool.worker.executors.base import JobContext
from ci_pool.worker.executors.docker import DockerExecutor

pytestmark = pytest.mark.integration

#: How long the client sits on each response before reading its headers.
LATE_S = 0.15

STEP = """echo first
printf 'no newline at the end'
"""
BIG = "head -c 200000 /dev/zero | tr '\\0' x; echo; echo after the big one\n"


@pytest.fixture(params=["docker", "podman"])
def engine_url(request: pytest.FixtureRequest, busybox_image: str) -> str:
    if request.param == "docker":
        return "unix:///var/run/docker.sock"
    return str(request.getfixturevalue("podman_socket"))


def client(url: str, timeout: int = 60) -> Any:
    import docker

    return docker.DockerClient(base_url=url, timeout=timeout)


@pytest.fixture
def engine(engine_url: str) -> Iterator[Any]:
    with closing(client(engine_url)) as c:
        yield c


@pytest.fixture
def late_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    begin = http.client.HTTPResponse.begin

    def late_begin(self: http.client.HTTPResponse) -> None:
        time.sleep(LATE_S)
        begin(self)

    monkeypatch.setattr(http.client.HTTPResponse, "begin", late_begin)


def context(image: str, tmp_path: Path) -> JobContext:
    dirs = {name: tmp_path / name for name in ("workspace", "scripts", "files")}
    for path in dirs.values():
        path.mkdir()
    return JobContext(
        job_id=f"execout{tmp_path.name[-6:].replace('_', '')}",
        attempt=1,
        runner_id="exec-output-test",
        capability=Capability(name="linux", queue="linux", image=image),
        **dirs,
    )


@pytest.fixture
def execution(engine: Any, busybox_image: str, tmp_path: Path) -> Iterator[Any]:
    run = DockerExecutor(engine).execution(context(busybox_image, tmp_path))
    run.start()
    try:
        yield run
    finally:
        run.close()


def step(run: Any, name: str, body: str) -> tuple[int, bytes]:
    (run.ctx.scripts / name).write_text(body)
    out: list[bytes] = []
    code = run.run_step(name, out.append)
    return code, b"".join(out)


@pytest.mark.usefixtures("late_reads")
def test_a_quick_steps_output_survives_a_late_read(execution: Any) -> None:
    for i in range(5):
        code, out = step(execution, f"s{i}.sh", STEP + f"exit {i}\n")
        assert (code, out) == (i, b"first\nno newline at the end")
    code, out = step(execution, "big.sh", BIG)
    assert code == 0
    assert out == b"x" * 200000 + b"\nafter the big one\n"


def test_many_quick_steps_lose_no_line(execution: Any) -> None:
    lines = []
    for i in range(60):
        code, out = step(execution, f"q{i}.sh", f"echo line {i}\n")
        assert code == 0
        lines += out.decode().splitlines()
    assert lines == [f"line {i}" for i in range(60)]


def test_a_step_silent_longer_than_the_clients_timeout_still_streams(
    execution: Any, engine_url: str
) -> None:
    # The container is made with the usual client; the step runs through one whose
    # timeout (2 s) is shorter than the step's silence (4 s).
    with closing(client(engine_url, timeout=2)) as quick:
        execution.client = quick
        code, out = step(execution, "slow.sh", "echo before; sleep 4; echo after\n")
    assert (code, out) == (0, b"before\nafter\n")
