"""Environment files and workflow commands on real workers, in Docker (linux) and on the
host (iso): what a step writes to $GITHUB_ENV, $GITHUB_PATH, $GITHUB_OUTPUT and
$GITHUB_STEP_SUMMARY reaches later steps and the store; ``::add-mask::``, ``::group::``,
``::error|warning|notice::``, ``::debug::`` and ``::stop-commands::`` act on the log and
become annotations listed by ``ci-pool show`` and the API."""

from __future__ import annotations

import httpx
import pytest

from ci_pool.broker.logstream import stream_key
from ci_pool.store import Job
from tests.conftest import GitServer, Harness
from tests.integration.test_api import auth, make_token

pytestmark = pytest.mark.integration

#: Computed by the step at run time, so it appears in no script: only ::add-mask:: hides it.
HIDDEN = "s3cr3t-runtime-value"

WORKFLOW = """\
name: files
on: push
jobs:
  files:
    runs-on: {capability}
    outputs:
      version: ${{{{ steps.setup.outputs.version }}}}
    steps:
      - id: setup
        name: setup
        run: |
          echo "GREETING=hello from step one" >> "$GITHUB_ENV"
          {{ echo 'NOTES<<EOF'; echo 'line one'; echo 'line two'; echo 'EOF'; }} >> "$GITHUB_ENV"
          mkdir -p tools
          printf '#!/bin/sh\\necho mytool ran\\n' > tools/mytool
          chmod +x tools/mytool
          echo "$PWD/tools" >> "$GITHUB_PATH"
          echo "version=1.2.3" >> "$GITHUB_OUTPUT"
          echo "pid=42" >> "$GITHUB_STATE"
          echo "## Build :100: report" >> "$GITHUB_STEP_SUMMARY"
          echo "- [x] all [bold]green[/bold]" >> "$GITHUB_STEP_SUMMARY"
      - name: use
        run: |
          echo "greeting=$GREETING"
          echo "notes=$(echo "$NOTES" | tr '\\n' '|')"
          mytool
          echo "expr=${{{{ env.GREETING }}}}"
      - name: commands
        run: |
          V=$(echo S3CR3T-RUNTIME-VALUE | tr A-Z a-z)
          echo "::add-mask::$V"
          echo "value is $V"
          echo "::group::Compile stuff"
          echo inside group
          echo "::endgroup::"
          echo "::error file=src/app.py,line=12,col=5,title=Lint failed::unused import os"
          echo "::warning::deprecated flag%0Asecond line"
          echo "::notice title=Hint::value $V"
          echo "::debug::hidden debug line"
          echo "::stop-commands::pause-123"
          echo "::error::not an annotation"
          echo "::pause-123::"
          echo "::notice::after resume"
          echo "::group::left open"
          echo in the open group
      - name: after
        run: echo "last step PATH has tools:$(command -v mytool >/dev/null && echo yes)"
"""


def run_files_job(
    request: pytest.FixtureRequest, harness: Harness, git: GitServer, cap: str
) -> Job:
    request.getfixturevalue("linux_worker" if cap == "linux" else "iso_worker")
    pool = harness.pool()
    pipe = pool.submit_pipeline(WORKFLOW.format(capability=cap), "files.yml", git.url(), "main")
    (job,) = pool.store.pipeline_jobs(pipe.id)
    return pool.wait(job.id, timeout=120)


@pytest.fixture(scope="module")
def iso_worker(harness: Harness) -> object:
    return harness.start_worker("iso")


@pytest.mark.parametrize("cap", ["linux", "iso"])
def test_env_path_output_and_summary_reach_later_steps_and_the_store(
    request: pytest.FixtureRequest, harness: Harness, git_server: GitServer, cap: str
) -> None:
    job = run_files_job(request, harness, git_server, cap)
    log = harness.pool().store.read_log(job.id)
    assert job.state == "succeeded", log
    lines = log.splitlines()
    for expected in (
        "greeting=hello from step one",
        "notes=line one|line two|",
        "mytool ran",
        "expr=hello from step one",
        "last step PATH has tools:yes",
    ):
        assert expected in lines, log
    assert job.outputs == {"version": "1.2.3"}
    (summary,) = harness.pool().store.summaries(job.id)
    assert (summary.step, summary.name) == (1, "setup")
    assert summary.markdown == "## Build :100: report\n- [x] all [bold]green[/bold]\n"


@pytest.mark.parametrize("cap", ["linux", "iso"])
def test_workflow_commands_mask_group_and_annotate(
    request: pytest.FixtureRequest, harness: Harness, git_server: GitServer, cap: str
) -> None:
    job = run_files_job(request, harness, git_server, cap)
    pool = harness.pool()
    log = pool.store.read_log(job.id)
    assert job.state == "succeeded", log
    lines = log.splitlines()
    # The added mask hides the value in the stored log and the live stream, from the
    # command line on.
    assert HIDDEN not in log
    assert "::add-mask::***" in lines and "value is ***" in lines
    stream = [
        f.get(b"l", b"").decode()
        for _id, f in pool.redis.xrange(stream_key(job.capability, job.id))
    ]
    assert "value is ***" in stream
    assert not [line for line in stream if HIDDEN in line]
    # Groups are kept as fold markers; one left open is closed at the end of its step.
    at = lines.index("##[group]Compile stuff")
    assert lines[at + 1 : at + 3] == ["inside group", "##[endgroup]"]
    at = lines.index("##[group]left open")
    assert lines[at + 1 : at + 3] == ["in the open group", "##[endgroup]"]
    assert "##[error]src/app.py:12:5: Lint failed: unused import os" in lines
    assert "hidden debug line" not in log
    # Between stop-commands and its token, commands are text.
    assert "::error::not an annotation" in lines
    found = [a.model_dump(exclude_none=True) for a in pool.store.annotations(job.id)]
    assert found == [
        {
            "level": "error",
            "message": "unused import os",
            "step": 3,
            "title": "Lint failed",
            "file": "src/app.py",
            "line": 12,
            "col": 5,
        },
        {"level": "warning", "message": "deprecated flag\nsecond line", "step": 3},
        {"level": "notice", "message": "value ***", "step": 3, "title": "Hint"},
        {"level": "notice", "message": "after resume", "step": 3},
    ]


def test_show_and_the_api_list_annotations_and_the_summary_as_markdown(
    request: pytest.FixtureRequest, harness: Harness, git_server: GitServer, api_url: str
) -> None:
    job = run_files_job(request, harness, git_server, "linux")
    assert job.state == "succeeded"
    shown = harness.cli("show", job.id)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout.splitlines()
    assert "    error   step 3  src/app.py:12:5  Lint failed: unused import os" in out
    assert "    notice  step 3  Hint: value ***" in out
    assert "  summary of step 1 (setup)" in out
    # Markdown as the step wrote it: no markup, no emoji codes.
    assert "    ## Build :100: report" in out
    assert "    - [x] all [bold]green[/bold]" in out
    token = make_token(harness, "read")
    res = httpx.get(f"{api_url}/v1/jobs/{job.id}", headers=auth(token), timeout=30)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["summaries"] == [
        {
            "step": 1,
            "name": "setup",
            "markdown": "## Build :100: report\n- [x] all [bold]green[/bold]\n",
        }
    ]
    assert [(a["level"], a["message"]) for a in body["annotations"]] == [
        ("error", "unused import os"),
        ("warning", "deprecated flag\nsecond line"),
        ("notice", "value ***"),
        ("notice", "after resume"),
    ]
    assert body["annotations"][0] | {"step": 3} == {
        "level": "error",
        "message": "unused import os",
        "step": 3,
        "title": "Lint failed",
        "file": "src/app.py",
        "line": 12,
        "end_line": None,
        "col": 5,
        "end_column": None,
    }
    listed = httpx.get(f"{api_url}/v1/jobs", headers=auth(token), timeout=30).json()
    # The job list stays light: reports only in the job's own view.
    assert all(j.get("summaries") is None for j in listed["data"])
