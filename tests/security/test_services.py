"""``services:`` and ``container:`` cannot widen what a job may do: images outside the
capability's rule, privileged or host-mounting options, host-path volumes and symlinked
volume sources are all refused before anything runs."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from ci_pool.core.admission import Admission
from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.core.services import ContainerSpec
from ci_pool.core.specs import parse_job_spec
from ci_pool.core.workflow.parser import validate_workflow
from ci_pool.exceptions import ExecutorError, InputError
from ci_pool.worker.executors.base import JobContext
from ci_pool.worker.executors.services import container_settings, workspace_dir

#: linux runs only its own image (the default); audit lets a job name its own.
CAPS = {
    n: Capability(**d)
    for n, d in merge_capabilities({"audit": {"allow_container_override": True}}).items()
}


def errors(text: str) -> list[str]:
    return [str(e) for e in validate_workflow(textwrap.dedent(text), "wf.yml", CAPS)]


def test_a_service_image_the_capability_does_not_allow_is_refused() -> None:
    text = """\
        on: push
        jobs:
          test:
            runs-on: linux
            services:
              db: postgres:16
            steps: [{run: "true"}]
        """
    (found,) = errors(text)
    assert found.startswith("wf.yml:6:11: jobs.test.services.db: service 'db'")
    assert "runs only its own image" in found and "'postgres:16'" in found
    assert errors(text.replace("runs-on: linux", "runs-on: audit")) == []
    spec = parse_job_spec(
        {
            "repo": "https://git.example/app.git",
            "capability": "linux",
            "steps": [{"run": "true"}],
            "services": [{"name": "db", "image": "postgres:16"}],
        },
        allow_local_repos=False,
    )
    with pytest.raises(InputError) as info:
        Admission(CAPS).admit(spec)
    assert info.value.field == "services.db"


@pytest.mark.parametrize(
    ("where", "options"),
    [
        ("services.db", "--privileged"),
        ("services.db", "-v /:/host"),
        ("services.db", "--network=host"),
        ("services.db", "--health-cmd true --cap-add ALL"),
        ("container", "--privileged"),
        ("container", "--mount type=bind,source=/,target=/host"),
        ("container", "--device /dev/mem"),
        ("container", "--pid host"),
    ],
)
def test_widening_options_are_refused_at_their_line(where: str, options: str) -> None:
    block = (
        f"    services:\n      db:\n        image: x\n        options: {options}\n"
        if where.startswith("services")
        else f"    container:\n      image: x\n      options: {options}\n"
    )
    text = f"on: push\njobs:\n  test:\n    runs-on: audit\n{block}    steps: [{{run: 'true'}}]\n"
    (found,) = errors(text)
    line = 8 if where.startswith("services") else 7
    flag = options.split()[-2] if "--cap-add" in options else options.split()[0]
    assert found.startswith(f"wf.yml:{line}:")
    assert f"jobs.test.{where}.options: {flag.split('=')[0]} is " in found


@pytest.mark.parametrize("volume", ["/etc:/x", "/:/host", "docker-sock:/var/run", "./../..:/x"])
def test_host_paths_and_named_volumes_are_refused(volume: str) -> None:
    text = f"""\
        on: push
        jobs:
          test:
            runs-on: audit
            container:
              image: x
              volumes: ["{volume}"]
            steps: [{{run: "true"}}]
        """
    (found,) = errors(text)
    assert found.startswith("wf.yml:7:")
    assert "jobs.test.container.volumes:" in found


def test_a_symlinked_volume_source_is_refused_at_run_time(tmp_path: Path) -> None:
    workspace = tmp_path / "src"
    workspace.mkdir()
    # What a checked-out repository can hold: a link out of the workspace.
    os.symlink("/etc", workspace / "cache")
    (workspace / "sub").mkdir()
    os.symlink("/", workspace / "sub" / "up")
    ctx = JobContext(
        job_id="j",
        attempt=1,
        runner_id="r",
        capability=CAPS["audit"],
        workspace=workspace,
        scripts=tmp_path,
        files=tmp_path,
        container=ContainerSpec(volumes=("./cache:/mnt",)),
    )
    with pytest.raises(ExecutorError, match="not a directory of the workspace"):
        container_settings(ctx)
    with pytest.raises(ExecutorError, match="symlink"):
        workspace_dir(workspace, "sub/up/etc")
    made = workspace_dir(workspace, "new/dir")
    assert made == workspace / "new" / "dir" and made.is_dir() and not made.is_symlink()
