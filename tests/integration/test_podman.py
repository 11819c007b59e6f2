"""What runs on Podman beyond the executor contract (tests/integration/test_executor_contract.py):
a container job reaching its service by name, with the service's container and network
removed after it, and warm containers, on a pool whose runners use Podman's API service."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from ci_pool import defaults
from ci_pool.core.specs import parse_job_spec
from tests.conftest import TEST_IMAGE, GitServer, Harness, RedisServer, isolated_harness

pytestmark = pytest.mark.integration

#: The Podman pool's Redis db (module-scoped: no other pool uses it meanwhile).
REDIS_DB = 5
SERVICE_IMAGE = "ci-pool-test/svc-echo:latest"
#: One capability (one worker to start): a job without its own container takes the warm
#: one; a container job (services) never does.
CAPABILITIES = f"""
[capabilities.svc]
image = "{TEST_IMAGE}"
labels = ["svc"]
allow_container_override = true
warm_containers = 1
"""


@pytest.fixture(scope="module")
def podman(podman_socket: str) -> Iterator[Any]:
    client = docker.DockerClient(base_url=podman_socket, timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def podman_pool(
    session_dir: Path, redis_server: RedisServer, podman_socket: str, podman: Any
) -> Iterator[Harness]:
    ctx = session_dir / "podman-svc-image"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f'FROM {TEST_IMAGE}\nCMD ["nc", "-ll", "-p", "5000", "-e", "sh", "-c", "echo $GREETING"]\n'
    )
    podman.images.build(path=str(ctx), tag=SERVICE_IMAGE, rm=True)
    h = isolated_harness(
        session_dir / "podman-more", redis_server, TEST_IMAGE, REDIS_DB, max_attempts=1,
        container_runtime="podman", podman_host=podman_socket,
    )  # fmt: skip
    with h.config.open("a") as config:
        config.write(CAPABILITIES)
    try:
        h.start_worker("svc")
        yield h
    finally:
        h.stop()


def gone(client: Any, job_id: str, timeout: float = 15) -> tuple[list[Any], list[Any]]:
    """The job's containers and networks on the engine once gone (or what is left)."""
    label = {"label": f"{defaults.LABEL_JOB}={job_id}"}
    deadline = time.monotonic() + timeout
    while True:
        # Summaries only: Podman answers an inspect of a container being removed with a 500
        # (not the 404 docker-py's ignore_removed skips).
        found = (
            client.api.containers(all=True, filters=label),
            client.networks.list(filters=label),
        )
        if found == ([], []) or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def test_a_container_job_reaches_its_service_by_name_on_podman(
    podman_pool: Harness, git_server: GitServer, podman: Any
) -> None:
    text = (
        "on: push\njobs:\n  job:\n    runs-on: svc\n"
        f"    container:\n      image: {TEST_IMAGE}\n"
        f"    services:\n      echo:\n        image: {SERVICE_IMAGE}\n"
        "        env:\n          GREETING: hello from the service\n"
        '        ports: ["5000"]\n'
        "    steps:\n      - run: nc echo 5000 </dev/null\n"
    )
    pool = podman_pool.pool()
    row = pool.submit_pipeline(text, "services.yml", git_server.url(), "main")
    (job,) = pool.store.pipeline_jobs(row.id)
    job = pool.wait(job.id, timeout=120)
    log = pool.store.read_log(job.id)
    assert job.state == "succeeded", (job.reason, log)
    assert "hello from the service" in log.splitlines()
    assert job.evidence.engine == "podman"
    assert gone(podman, job.id) == ([], [])


def test_warm_containers_serve_jobs_on_podman(
    podman_pool: Harness, git_server: GitServer, podman: Any
) -> None:
    pool = podman_pool.pool()
    for n in range(2):  # the second job takes the replacement made after the first
        # Once a warm slot is ready (the replacement is made in the background after the
        # first job took one; a slot still being made starts with a dot).
        slots = podman_pool.settings().resolved_workspace_root / defaults.WARM_DIR
        deadline = time.monotonic() + 60
        while not [p for p in slots.glob("*/*") if not p.name.startswith(".")]:
            assert time.monotonic() < deadline, "no warm container was made"
            time.sleep(0.2)
        job = pool.submit(
            parse_job_spec(
                {"repo": git_server.url(), "ref": "main", "capability": "svc",
                 "steps": [{"run": f"echo warm-{n}"}]},
                allow_local_repos=False,
            )
        )  # fmt: skip
        job = pool.wait(job.id, timeout=120)
        assert job.state == "succeeded", job.reason
        assert (job.evidence.warm_container, job.evidence.engine) == (True, "podman")
        assert f"warm-{n}" in pool.store.read_log(job.id).splitlines()
        assert gone(podman, job.id) == ([], [])


def test_a_container_action_runs_on_podman(
    podman_pool: Harness, git_server: GitServer, podman: Any
) -> None:
    text = (
        "on: push\njobs:\n  job:\n    runs-on: svc\n    steps:\n"
        f"      - id: img\n        uses: docker://{TEST_IMAGE}\n"
        "        with:\n          entrypoint: /bin/sh\n"
        '          args: -c "echo word=$INPUT_WORD >> $GITHUB_OUTPUT; echo action-ran"\n'
        "          word: from-podman\n"
        '      - run: echo "out=${{ steps.img.outputs.word }}"\n'
    )
    pool = podman_pool.pool()
    row = pool.submit_pipeline(text, "action.yml", git_server.url(), "main")
    (job,) = pool.store.pipeline_jobs(row.id)
    job = pool.wait(job.id, timeout=120)
    lines = pool.store.read_log(job.id).splitlines()
    assert job.state == "succeeded", (job.reason, lines)
    assert "action-ran" in lines and "out=from-podman" in lines
    assert gone(podman, job.id) == ([], [])
