"""Container actions run only images their capability allows, and a job cannot turn an
action's build into a read of the runner's files.

The shared pool's ``linux`` capability runs only its own busybox image: a Dockerfile whose
``FROM`` or ``COPY --from`` names another image, a ``FROM`` hidden behind a build variable,
and a ``uses: docker://`` of another image are refused before anything is built or run.
A Dockerfile the job replaced with a link to a host file is refused, and a FIFO the job left
in the action's directory does not hang the build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ci_pool import defaults
from ci_pool.embedded import make_repo
from tests.conftest import TEST_IMAGE, GitServer, Harness, Worker, containers_of

pytestmark = pytest.mark.integration

ACTION = "runs:\n  using: docker\n  image: Dockerfile\n"
DOCKERFILES = {
    "other-base": "FROM alpine:3.19\nRUN echo built\n",
    "copy-from": "FROM scratch\nCOPY --from=alpine:3.19 /bin/sh /sh\n",
    "hidden-base": "ARG BASE=alpine:3.19\nFROM ${BASE}\n",
    "link": "FROM scratch\nCOPY action.yml /\n",
    # The capability's own image is allowed as a base.
    "fifo": f'FROM {TEST_IMAGE}\nCOPY action.yml /\nENTRYPOINT ["/bin/true"]\n',
}


def job(name: str, steps: str) -> str:
    return f"  {name}:\n    runs-on: linux\n    steps:\n      - uses: actions/checkout@v4\n{steps}"


WORKFLOW = "on: push\njobs:\n" + "".join(
    [
        *(job(n, f"      - uses: ./act/{n}\n") for n in ("other-base", "copy-from", "hidden-base")),
        job("pulled", "      - uses: docker://alpine:3.19\n        with: {args: echo pwned}\n"),
        job(
            "link",
            "      - run: ln -sf /etc/hostname act/link/Dockerfile\n      - uses: ./act/link\n",
        ),
        job("fifo", "      - run: mkfifo act/fifo/pipe\n      - uses: ./act/fifo\n"),
    ]
)

REFUSALS = {
    "other-base": "action ./act/other-base: Dockerfile uses image 'alpine:3.19' is not allowed "
    "on capability 'linux', which runs only its own image",
    "copy-from": "action ./act/copy-from: Dockerfile uses image 'alpine:3.19' is not allowed",
    "hidden-base": "action ./act/hidden-base/Dockerfile:2: ${BASE} uses a build variable; name "
    "the image literally",
    "pulled": "action docker://alpine:3.19: image 'alpine:3.19' is not allowed on capability "
    "'linux'",
    "link": "action ./act/link: Dockerfile: is a symbolic link, not a regular file",
}


def test_action_images_outside_the_capability_are_refused_before_any_build(
    harness: Harness,
    linux_worker: Worker,
    git_server: GitServer,
    docker_client: Any,
    tmp_path: Path,
) -> None:
    files: dict[str, str | bytes] = {"README.md": "evil actions\n"}
    for name, dockerfile in DOCKERFILES.items():
        files[f"act/{name}/action.yml"] = ACTION
        files[f"act/{name}/Dockerfile"] = dockerfile
    git_server.shas["acme/evil-actions.git"] = make_repo(
        git_server.base / "acme" / "evil-actions.git", files
    )
    wf = tmp_path / "evil.yml"
    wf.write_text(WORKFLOW)
    res = harness.cli(
        "run", str(wf), "--repo", git_server.url("acme/evil-actions.git"), "--ref", "main",
        timeout=170,
    )  # fmt: skip
    assert "Traceback" not in res.stderr, res.stderr
    pid = res.stderr.split()[1].rstrip(":")
    store = harness.pool().store
    jobs = {r.key: r for r in store.pipeline_jobs(pid)}
    try:
        for key, refusal in REFUSALS.items():
            log = store.read_log(jobs[key].id)
            assert jobs[key].state == "failed", log
            assert f"##[error]{refusal}" in log, log
            assert "building ci-pool-action" not in log
            assert "pwned" not in log
        # The FIFO is left out of the build context; the build does not wait on it.
        fifo = store.read_log(jobs["fifo"].id)
        assert jobs["fifo"].state == "succeeded", fifo
        for job_row in jobs.values():
            assert containers_of(docker_client, job_row.id) == []
        built = {i.labels[defaults.LABEL_ACTION_IMAGE] for i in own_images(docker_client)}
        assert built <= {"./act/fifo"}
    finally:
        for image in own_images(docker_client):
            docker_client.images.remove(image.id, force=True)


def own_images(docker_client: Any) -> list[Any]:
    """The action images this test's jobs built (other suites build their own)."""
    found = docker_client.images.list(filters={"label": defaults.LABEL_ACTION_IMAGE})
    return [i for i in found if i.labels[defaults.LABEL_ACTION_IMAGE].startswith("./act/")]
