"""Contexts at the job boundary, tried as an attacker would on a real worker, dockerd, git
daemon and Redis: a workflow job cannot receive a secret its capability does not hold (a
linux job naming the deploy capability's key gets an empty string), and ``hashFiles()``,
which the runner evaluates over the job's workspace, never follows a symlink the job
planted to a file or directory outside it."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from ci_pool.core.pipeline import WorkflowErrors
from ci_pool.store import Job
from ci_pool.store.browsing import PipelineFilter
from tests.conftest import SECRET_VALUE, GitServer, Harness, Worker

pytestmark = pytest.mark.integration

DEPLOY_VALUE = "deploy-only-secret-value"  # the shared harness's deploy capability secret


def run_workflow(h: Harness, git: GitServer, text: str, within: float = 120) -> Job:
    """Run a one-job workflow to its end; its job."""
    pool = h.pool()
    pipe = pool.submit_pipeline(text, "attack.yml", git.url(), "main")
    (job,) = pool.store.pipeline_jobs(pipe.id)
    deadline = time.monotonic() + within
    while (job := pool.get(job.id)).state in ("queued", "running", "blocked"):
        assert time.monotonic() < deadline, f"{job.id} still {job.state}"
        time.sleep(0.1)
    return job


def test_a_linux_job_never_receives_the_deploy_capabilitys_secret(
    harness: Harness, git_server: GitServer, linux_worker: Worker
) -> None:
    job = run_workflow(
        harness,
        git_server,
        "on: push\n"
        "env:\n  WF_KEY: ${{ secrets.DEPLOY_KEY }}\n"
        "jobs:\n  steal:\n    runs-on: linux\n"
        "    env:\n      JOB_KEY: ${{ secrets.deploy_key }}\n"
        "    steps:\n"
        "      - run: |\n"
        '          echo "step=[${{ secrets.DEPLOY_KEY }}] wf=[$WF_KEY] job=[$JOB_KEY]"\n'
        '          echo "env=[${DEPLOY_KEY:-}] own=[${{ secrets.API_TOKEN }}]"\n'
        "          env | grep -c deploy-only || true\n",
    )
    log = harness.pool().store.read_log(job.id)
    assert job.state == "succeeded", log
    assert "step=[] wf=[] job=[]" in log
    assert "env=[] own=[***]" in log  # its own capability's secret, masked
    assert "##[warning]secret 'DEPLOY_KEY' is not offered by capability 'linux'" in log
    assert DEPLOY_VALUE not in log and SECRET_VALUE not in log
    assert "\n0\n" in log  # no variable of the job holds the deploy value


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("toJSON(secrets)", "use secrets.NAME"),
        ("join(secrets.*)", "a '*' filter reads needs, steps, matrix"),
        ("toJSON(secrets[*])", "a '*' filter reads needs, steps, matrix"),
    ],
)
def test_the_whole_secrets_context_cannot_be_taken(harness: Harness, ref: str, words: str) -> None:
    """``toJSON(secrets)`` or a filter over it would hand over every secret of the
    capability: refused at submit, naming the line, and no pipeline is written."""
    pool = harness.pool()
    attempts = PipelineFilter(repo="git://127.0.0.1:9/app.git")
    before = len(pool.store.list_pipelines(attempts, limit=1000))
    with pytest.raises(WorkflowErrors) as caught:
        pool.submit_pipeline(
            "on: push\njobs:\n  a:\n    runs-on: linux\n    steps:\n"
            f"      - run: echo '${{{{ {ref} }}}}'\n",
            "attack.yml",
            "git://127.0.0.1:9/app.git",
            "main",
        )
    assert words in str(caught.value) and "attack.yml:6" in str(caught.value)
    assert len(pool.store.list_pipelines(attempts, limit=1000)) == before


def test_hash_files_does_not_follow_a_symlink_out_of_the_workspace(
    harness: Harness, git_server: GitServer, linux_worker: Worker, tmp_path: Path
) -> None:
    """The job points symlinks at a host file and a host directory the runner can read;
    hashFiles() (evaluated by the runner, on the host) hashes neither."""
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    victim = victim_dir / "signing-key"
    victim.write_text(f"HOST-SIGNING-KEY-{uuid.uuid4().hex}\n")
    job = run_workflow(
        harness,
        git_server,
        "on: push\njobs:\n  probe:\n    runs-on: linux\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "      - run: |\n"
        f"          ln -s {victim} leak.key\n"
        f"          ln -s {victim_dir} leakdir\n"
        "          mkdir -p deep && ln -s ../../.. deep/up\n"
        "      - run: |\n"
        "          echo \"file=[${{ hashFiles('leak.key') }}]\"\n"
        "          echo \"dir=[${{ hashFiles('leakdir/**') }}]\"\n"
        "          echo \"up=[${{ hashFiles('deep/up/**/signing-key') }}]\"\n"
        "          echo \"own=[${{ hashFiles('VERSION') }}]\"\n"
        "      - run: echo \"climb=[${{ hashFiles('../**') }}]\"\n",
    )
    log = harness.pool().store.read_log(job.id)
    assert "file=[]" in log, log
    assert "dir=[]" in log
    assert "up=[]" in log
    assert "own=[" in log and "own=[]" not in log  # a regular file of the workspace hashes
    # A pattern that climbs out is an error of that step, not a hash of the host.
    assert "hashFiles(): '../**' is outside the workspace" in log
    assert "\nclimb=" not in log  # the step did not run (its name shows the text)
    assert job.state == "failed"
