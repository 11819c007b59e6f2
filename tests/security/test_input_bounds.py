"""Every outside input has a bound (issue 12, attacks 5, 7, 8 and 15), against the real API
under uvicorn and the real ``ci-pool validate``: a hostile body or workflow is a 413/422
naming the bound (or rc 1 with file:line:col), in well under a second and a few MB, writes
nothing, and the API keeps answering."""

from __future__ import annotations

import json
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from ci_pool.embedded import make_repo
from ci_pool.store.models import Job as JobRow
from ci_pool.store.models import Pipeline as PipelineRow
from tests.conftest import APP_FILES, GitServer, Harness
from tests.integration.test_api import auth, job_body, make_token
from tests.integration.test_webhooks import (
    CI,
    Hooks,
    deliver,
    files_of,
    hook_repo,
    hooks,
    pipeline_count,
    push_body,
)

pytestmark = pytest.mark.integration
__all__ = ["hook_repo", "hooks"]  # fixtures of the webhook tests, used here too

#: 9 values, each level 9 aliases of the one above: 9**7 (4.8 million) strings in ``on:``.
ALIAS_BOMB = (
    'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    + "".join(
        f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]\n"
        for prev, name in zip("abcde", "bcdef", strict=True)
    )
    + f"on: [{','.join(['*f'] * 9)}]\n"
    + "jobs: {}\n"
)
#: One 256-cell matrix job, aliased 40 times: 10,496 jobs.
MATRIX_ALIASES = (
    "on: push\njobs:\n  a: &j\n    runs-on: linux\n    strategy:\n      matrix:\n"
    f"        x: {list(range(16))}\n        y: {list(range(16))}\n"
    "    steps:\n      - run: echo ${{ matrix.x }}\n" + "".join(f"  j{i}: *j\n" for i in range(40))
)


def excludes_workflow() -> str:
    """A 16x16x16 product brought to 256 cells by 200 exclude entries."""
    values = {k: [f"{k}{i}" for i in range(16)] for k in "abc"}
    excludes = [{"a": f"a{i}"} for i in range(1, 16)]
    excludes += [{"a": f"a{i % 15 + 1}", "b": f"b{i % 16}", "c": "c0"} for i in range(185)]
    rows = "".join(f"          - {json.dumps(e)}\n" for e in excludes)
    axes = "".join(f"        {k}: {json.dumps(v)}\n" for k, v in values.items())
    return (
        "on: push\njobs:\n  build:\n    runs-on: linux\n    strategy:\n      matrix:\n"
        f"{axes}        exclude:\n{rows}"
        "    steps:\n      - run: echo ${{ matrix.a }} ${{ matrix.b }} ${{ matrix.c }}\n"
    )


def deep_parens(depth: int) -> str:
    return (
        "on: push\njobs:\n  a:\n    runs-on: linux\n    steps:\n"
        f"      - run: echo ${{{{ {'(' * depth}github.ref{')' * depth} }}}}\n"
    )


NUL_WORKFLOW = "on: push\njobs:\n  a:\n    runs-on: linux\n    steps:\n      - run: echo a\x00b\n"


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@dataclass
class Measured:
    seconds: float = 0.0
    peak_growth_mb: float = 0.0


@contextmanager
def measured() -> Iterator[Measured]:
    """Wall time and how far this process's peak RSS rose (the API serves from a thread
    of this process)."""
    result = Measured()
    before, started = peak_rss_kb(), time.monotonic()
    yield result
    result.seconds = time.monotonic() - started
    result.peak_growth_mb = (peak_rss_kb() - before) / 1024


def counts(harness: Harness) -> tuple[int, int]:
    with harness.pool().store.session(write=False) as s:
        jobs = s.scalar(select(func.count()).select_from(JobRow)) or 0
        pipelines = s.scalar(select(func.count()).select_from(PipelineRow)) or 0
    return jobs, pipelines


@pytest.fixture
def api(api_url: str, harness: Harness) -> Iterator[httpx.Client]:
    token = make_token(harness, "submit", "read")
    with httpx.Client(base_url=api_url, headers=auth(token), timeout=60) as client:
        yield client


@pytest.fixture
def unchanged(harness: Harness, api: httpx.Client) -> Iterator[None]:
    """Nothing is written to the store, and the API still answers afterwards."""
    before = counts(harness)
    yield
    assert counts(harness) == before
    started = time.monotonic()
    assert api.get("/healthz").status_code == 200
    assert time.monotonic() - started < 2


def error_of(res: httpx.Response, status: int) -> dict[str, Any]:
    assert res.status_code == status, res.text
    assert "Traceback" not in res.text
    error: dict[str, Any] = res.json()["error"]
    return error


def pipeline(git: GitServer, workflow: Any) -> dict[str, Any]:
    return {"workflow": workflow, "repo": git.url(), "ref": "main", "file": "ci.yml"}


@dataclass
class Validated:
    rc: int
    stderr: str
    seconds: float
    max_rss_mb: float


#: Runs the CLI and then reports the process's peak RSS (VmHWM restarts at exec, unlike
#: ru_maxrss, which would count this test process's size at the fork).
_MEASURED_CLI = """
import atexit, runpy, sys
def peak():
    with open("/proc/self/status") as fh:
        hwm = next(line for line in fh if line.startswith("VmHWM:"))
    sys.stderr.write("\\n" + hwm)
atexit.register(peak)
sys.argv = ["ci-pool", *sys.argv[1:]]
runpy.run_module("ci_pool", run_name="__main__")
"""


def validate(harness: Harness, tmp_path: Path, text: str | bytes) -> Validated:
    """``ci-pool validate`` of one file in a subprocess, with that process's own peak RSS."""
    path = tmp_path / "ci.yml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED_CLI, "validate", str(path)],
        env=harness.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    stderr, _, hwm = proc.stderr.rpartition("\nVmHWM:")
    return Validated(
        proc.returncode, stderr, time.monotonic() - started, int(hwm.split()[0]) / 1024
    )


# -- attack 5: a YAML alias bomb ----------------------------------------------------------


def test_alias_bomb_posted_as_a_pipeline_is_422_at_its_line(
    api: httpx.Client, git_server: GitServer, unchanged: None
) -> None:
    assert len(ALIAS_BOMB) < 400
    with measured() as cost:
        res = api.post("/v1/pipelines", json=pipeline(git_server, ALIAS_BOMB))
    error = error_of(res, 422)
    assert "more than 20000 values (aliases count as copies" in error["message"]
    assert re.match(r"ci\.yml:[1-8]:\d+: the YAML is over a bound", error["message"])
    assert cost.seconds < 2, cost
    assert cost.peak_growth_mb < 100, cost


def test_alias_bomb_in_validate_is_rc_1_with_file_line(harness: Harness, tmp_path: Path) -> None:
    result = validate(harness, tmp_path, ALIAS_BOMB)
    assert result.rc == 1, result.stderr
    assert re.search(rf"{tmp_path / 'ci.yml'}:[1-8]:\d+: the YAML is over", result.stderr)
    assert "aliases count as copies" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.max_rss_mb < 300, result


def test_self_referring_alias_and_deep_nesting_are_refused(
    api: httpx.Client, git_server: GitServer, unchanged: None
) -> None:
    res = api.post("/v1/pipelines", json=pipeline(git_server, "on: &a [*a]\njobs: {}\n"))
    assert "may not refer to its own anchor" in error_of(res, 422)["message"]
    deep = "on: push\njobs:\n  a: " + "[" * 500 + "]" * 500 + "\n"
    res = api.post("/v1/pipelines", json=pipeline(git_server, deep))
    message = error_of(res, 422)["message"]
    assert message.startswith("ci.yml:3:") and "nested deeper than 64 levels" in message


# -- attack 7: matrix amplification -------------------------------------------------------


def test_a_matrix_job_aliased_40_times_is_refused_by_max_jobs_per_pipeline(
    api: httpx.Client, git_server: GitServer, unchanged: None
) -> None:
    assert len(MATRIX_ALIASES) < 1800
    with measured() as cost:
        res = api.post("/v1/pipelines", json=pipeline(git_server, MATRIX_ALIASES))
    message = error_of(res, 422)["message"]
    assert "more than 500 jobs" in message and "max_jobs_per_pipeline" in message
    assert cost.seconds < 2, cost


def test_200_excludes_validate_quickly(harness: Harness, tmp_path: Path) -> None:
    from ci_pool.core.workflow.parser import validate_workflow

    capabilities = harness.settings().capabilities
    text = excludes_workflow()
    started = time.monotonic()
    assert validate_workflow(text, "ci.yml", capabilities) == []
    assert time.monotonic() - started < 2
    # the same 200 excludes over a 16,384-combination product: refused, not enumerated
    big = text.replace('        c: ["c0"', '        d: ["d0", "d1", "d2", "d3"]\n        c: ["c0"')
    started = time.monotonic()
    (error,) = validate_workflow(big, "ci.yml", capabilities)
    assert time.monotonic() - started < 2
    assert "16384 combinations; the limit is 256 per job (and 4096 before exclude)" in str(error)
    result = validate(harness, tmp_path, text)
    assert result.rc == 0, result.stderr
    assert "1 file(s) valid" in result.stderr


def test_5000_aliased_include_entries_are_refused_quickly(harness: Harness) -> None:
    from ci_pool.core.workflow.parser import validate_workflow

    include = "[" + ",".join(["*e"] * 5_000) + "]"
    text = (
        "on: push\njobs:\n  a:\n    runs-on: linux\n    strategy:\n      matrix:\n"
        f"        x: {list(range(16))}\n        y: {list(range(16))}\n"
        f"        exclude: [&e {{x: 99}}]\n        include: {include}\n"
        "    steps:\n      - run: echo\n"
    )
    started = time.monotonic()
    (error,) = validate_workflow(text, "ci.yml", harness.settings().capabilities)
    assert time.monotonic() - started < 2
    assert "ci.yml:10:18: jobs.a.strategy.matrix.include: 5000 entries; the limit is 256" in (
        str(error)
    )


def test_a_product_past_the_bound_is_refused_before_it_is_made(
    harness: Harness, tmp_path: Path
) -> None:
    axes = "".join(f"        k{i}: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" for i in range(9))
    text = (
        "on: push\njobs:\n  a:\n    runs-on: linux\n    strategy:\n      matrix:\n"
        f"{axes}    steps:\n      - run: 'true'\n"
    )
    result = validate(harness, tmp_path, text)
    assert result.rc == 1, result.stderr
    assert "ci.yml:7:9: jobs.a.strategy.matrix: 1000000000 combinations; the limit is 256" in (
        result.stderr
    )


# -- attack 8: oversized job specs ---------------------------------------------------------


def test_100_steps_of_1_mb_is_413_before_parsing(
    api: httpx.Client, api_url: str, git_server: GitServer, unchanged: None
) -> None:
    body = job_body(git_server, "true")
    body["steps"] = [{"run": "x" * 1_000_000}] * 100
    raw = json.dumps(body).encode()
    # Content-Length says 100 MB: answered after the first KB, the rest never sent
    host, port = urlsplit(api_url).hostname, urlsplit(api_url).port
    token = api.headers["Authorization"]
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(
            f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
            + raw[:1024]
        )
        received = b""
        while b'"}}' not in received and (chunk := conn.recv(65536)):
            received += chunk
    answer = received.decode()
    assert answer.startswith("HTTP/1.1 413 "), answer
    assert "over 1048576 bytes" in answer and "max_body_bytes" in answer

    def chunked() -> Iterator[bytes]:  # no Content-Length: the count of bytes read decides
        for start in range(0, len(raw), 65536):
            yield raw[start : start + 65536]

    with measured() as cost:
        res = api.post("/v1/jobs", content=chunked(), headers={"Content-Type": "application/json"})
    assert "over 1048576 bytes" in error_of(res, 413)["message"]
    assert cost.seconds < 30, cost
    assert cost.peak_growth_mb < 100, cost


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"steps": [{"run": "true"}] * 101}, "steps", "at most 100 items"),
        ({"steps": [{"run": "x" * 200_000}]}, "steps.0.run", "at most 131072 characters"),
        ({"steps": [{"run": "x" * 100_000}] * 6}, "steps", "the limit is 524288"),
        ({"labels": [f"l{i}" for i in range(40)]}, "labels", "at most 32 items"),
        ({"env": {f"V{i}": "1" for i in range(201)}}, "env", "at most 200 items"),
        ({"env": {"BIG": "x" * 40_000}}, "env", "over 32768 bytes"),
        ({"artifacts": [f"a{i}" for i in range(51)]}, "artifacts", "at most 50 items"),
        ({"secrets": [f"S{i}" for i in range(51)]}, "secrets", "at most 50 items"),
    ],
)
def test_each_count_and_size_of_a_job_is_bounded_and_named(
    api: httpx.Client,
    git_server: GitServer,
    unchanged: None,
    change: dict[str, Any],
    field: str,
    text: str,
) -> None:
    body = {**job_body(git_server, "true"), **change}
    error = error_of(api.post("/v1/jobs", json=body), 422)
    assert error["field"] == field and text in error["message"], error


# -- attack 15: control characters, deep expressions, deep JSON -------------------------------


def test_nul_in_a_workflow_is_422_with_its_line(
    api: httpx.Client, git_server: GitServer, unchanged: None
) -> None:
    res = api.post("/v1/pipelines", json=pipeline(git_server, NUL_WORKFLOW))
    error = error_of(res, 422)
    assert error["field"] == "body" and "NUL" in error["message"]
    # the same file as the CLI sends it: refused at its line and column
    bell = NUL_WORKFLOW.replace("\x00", "\x07")
    message = error_of(api.post("/v1/pipelines", json=pipeline(git_server, bell)), 422)["message"]
    assert message.startswith("ci.yml:6:20: control character U+0007 is not allowed")


def test_nul_in_a_job_is_422_naming_the_field(
    api: httpx.Client, git_server: GitServer, unchanged: None
) -> None:
    error = error_of(api.post("/v1/jobs", json=job_body(git_server, "echo a\x00b")), 422)
    assert error["field"] == "body" and "NUL" in error["message"]
    body = job_body(git_server, "true")
    body["repo"] += "\x01"
    error = error_of(api.post("/v1/jobs", json=body), 422)
    assert error["field"] == "repo" and "control characters" in error["message"]


def test_control_characters_in_validate_are_rc_1_with_line(
    harness: Harness, tmp_path: Path
) -> None:
    result = validate(harness, tmp_path, NUL_WORKFLOW)
    assert result.rc == 1, result.stderr
    assert ":6:20: control character U+0000 is not allowed" in result.stderr
    result = validate(harness, tmp_path, b"on: push\njobs:\n  a: \xff\n")
    assert result.rc == 1 and ":3:6: not UTF-8 text" in result.stderr, result.stderr
    for out in (result.stderr,):
        assert "Traceback" not in out


def test_500_deep_parentheses_are_422_naming_the_position(
    api: httpx.Client, git_server: GitServer, harness: Harness, tmp_path: Path, unchanged: None
) -> None:
    res = api.post("/v1/pipelines", json=pipeline(git_server, deep_parens(500)))
    message = error_of(res, 422)["message"]
    assert message.startswith("ci.yml:6:") and "nested deeper than 32 levels" in message
    result = validate(harness, tmp_path, deep_parens(500))
    assert result.rc == 1 and "nested deeper than 32 levels" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_500_deep_json_is_a_clean_422(
    api: httpx.Client, git_server: GitServer, unchanged: None
) -> None:
    deep: Any = "x"
    for _ in range(500):
        deep = {"k": deep}
    raw = json.dumps(pipeline(git_server, {"on": "push", "jobs": deep}))
    res = api.post("/v1/pipelines", content=raw, headers={"Content-Type": "application/json"})
    error = error_of(res, 422)
    assert error["field"] == "body" and "deeper than 64 levels" in error["message"]
    res = api.post("/v1/jobs", content="[" * 500 + "]" * 500)
    assert error_of(res, 422)["field"] == "body"


def test_a_bad_workflow_in_a_push_does_not_stop_the_valid_one_beside_it(
    harness: Harness, hooks: Hooks, git_server: GitServer
) -> None:
    files = {
        **APP_FILES,
        ".gitea/workflows/ci.yml": CI,
        ".gitea/workflows/nul.yml": NUL_WORKFLOW,
        ".gitea/workflows/parens.yml": deep_parens(500),
        ".gitea/workflows/bomb.yml": ALIAS_BOMB,
    }
    sha = make_repo(git_server.base / "bounds-hooks.git", files)
    url = git_server.url("bounds-hooks.git")
    before = pipeline_count(harness)
    res = deliver(hooks, "gitea", push_body(url, "refs/heads/main", sha))
    assert res.status_code == 202, res.text
    ran, skipped = files_of(res)
    assert ran == [".gitea/workflows/ci.yml"]
    assert ":6:20: control character U+0000" in skipped[".gitea/workflows/nul.yml"]
    assert "nested deeper than 32 levels" in skipped[".gitea/workflows/parens.yml"]
    assert "aliases count as copies" in skipped[".gitea/workflows/bomb.yml"]
    assert pipeline_count(harness) == before + 1


def test_aliased_scripts_in_a_workflow_are_bounded_per_job_and_per_pipeline(
    api: httpx.Client, git_server: GitServer, unchanged: None
) -> None:
    big = "y" * 30_000  # under the 32 KiB of one env value and the 128 KiB of one script
    per_job = (
        "on: push\njobs:\n  a:\n    runs-on: linux\n"
        f"    env: {{BIG: &s '{big}'}}\n    steps:\n" + "      - run: *s\n" * 20
    )
    res = api.post("/v1/pipelines", json=pipeline(git_server, per_job))
    assert "the limit is 524288 per job" in error_of(res, 422)["message"]
    per_pipeline = (
        "on: push\njobs:\n  a:\n    runs-on: linux\n    strategy:\n      matrix:\n"
        f"        x: {list(range(200))}\n    env: {{BIG: &s '{big}'}}\n"
        "    steps:\n      - run: *s\n"
    )
    res = api.post("/v1/pipelines", json=pipeline(git_server, per_pipeline))
    message = error_of(res, 422)["message"]
    assert "more than 8388608 bytes of scripts and values, the limit per workflow" in message
