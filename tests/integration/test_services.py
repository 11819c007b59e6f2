"""``services:`` end to end: a TCP server in a service container reached by name from a
container job and on a relayed loopback port from a host job; health checks; the job's
internal network; cleanup on success, on cancel and by the runner's sweep."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci_pool import defaults
from ci_pool.embedded import RedisServer, free_port
from ci_pool.service.pool import Pool
from ci_pool.store import Job
from ci_pool.worker.executors.services import remove_runner_objects
from tests.conftest import GitServer, Harness, isolated_harness, need

pytestmark = pytest.mark.integration

SERVICE_IMAGE = "ci-pool-test/svc-echo:latest"
REGISTRY_PASSWORD = "reg-pw-" + uuid.uuid4().hex
WRONG_PASSWORD = "wrong-pw-" + uuid.uuid4().hex
TEST_LABEL = "ci-pool.test-services"
#: Shared with the corpus pool: this pool's capabilities have queues of their own.
REDIS_DB = 12
CAPABILITIES = """
[capabilities.svc]
image = "{image}"
labels = ["svc"]
allow_container_override = true
secrets = {{ REG_PW = "file:{password}", REG_BAD = "file:{wrong}" }}

[capabilities.svc-host]
mode = "host"
labels = ["svc-host"]
allow_container_override = true
"""
#: Answers each connection with $GREETING; healthy once it answers itself.
SERVICE = """\
      echo:
        image: {image}
        env:
          GREETING: hello from the service
        ports: ["5000"]
        options: >-
          --health-cmd "nc 127.0.0.1 5000 </dev/null | grep -q hello"
          --health-interval 1s --health-retries 20
"""


@pytest.fixture(scope="module")
def service_image(docker_client: Any, busybox_image: str, tmp_path_factory: Any) -> Iterator[str]:
    ctx = tmp_path_factory.mktemp("svc-image")
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\n"
        'CMD ["nc", "-ll", "-p", "5000", "-e", "sh", "-c", "echo $GREETING"]\n'
    )
    docker_client.images.build(path=str(ctx), tag=SERVICE_IMAGE, rm=True, labels={TEST_LABEL: "1"})
    yield SERVICE_IMAGE
    docker_client.images.remove(SERVICE_IMAGE, force=True)


@pytest.fixture(scope="module")
def svc_pool(
    session_dir: Path, redis_server: RedisServer, busybox_image: str, service_image: str
) -> Iterator[Harness]:
    # One attempt: a service that never becomes healthy is not worth a retry here.
    h = isolated_harness(
        session_dir / "services", redis_server, busybox_image, REDIS_DB, max_attempts=1
    )
    (h.root / "reg-pw").write_text(REGISTRY_PASSWORD + "\n")
    (h.root / "reg-bad").write_text(WRONG_PASSWORD + "\n")
    with h.config.open("a") as config:
        config.write(
            CAPABILITIES.format(
                image=busybox_image, password=h.root / "reg-pw", wrong=h.root / "reg-bad"
            )
        )
    h.start_worker("svc", concurrency=2)
    yield h
    h.stop()


def workflow(runs_on: str, steps: str, service: str, container: str = "") -> str:
    return (
        f"on: push\njobs:\n  job:\n    runs-on: {runs_on}\n{container}"
        f"    services:\n{service}    steps:\n{steps}"
    )


def submit(h: Harness, git: GitServer, text: str) -> tuple[Pool, str]:
    pool = h.pool()
    row = pool.submit_pipeline(text, "services.yml", git.url(), "main")
    (job,) = pool.store.pipeline_jobs(row.id)
    return pool, job.id


def wait_final(pool: Pool, job_id: str, timeout: float = 120) -> Job:
    deadline = time.monotonic() + timeout
    while not (job := pool.get(job_id)).state.is_final or job.state.value == "error":
        if job.state.value == "error" and job.attempt >= job.max_attempts:
            return job
        assert time.monotonic() < deadline, f"{job_id} still {job.state}"
        time.sleep(0.1)
    return job


def left_of(docker_client: Any, job_id: str, timeout: float = 15) -> tuple[list[Any], list[Any]]:
    """The job's containers and networks once they are gone, or those still there after
    ``timeout`` s: they are removed in the background after the outcome is recorded."""
    label = {"label": f"{defaults.LABEL_JOB}={job_id}"}
    deadline = time.monotonic() + timeout
    while True:
        found = (
            docker_client.containers.list(all=True, filters=label, ignore_removed=True),
            docker_client.networks.list(filters=label),
        )
        if found == ([], []) or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def test_container_job_reaches_its_service_by_name_and_everything_is_removed(
    svc_pool: Harness,
    git_server: GitServer,
    busybox_image: str,
    service_image: str,
    docker_client: Any,
) -> None:
    container = (
        f"    container:\n      image: {busybox_image}\n"
        "      options: -e FROM_OPTIONS=set-by-options\n"
        "      volumes: [./cache:/mnt/cache]\n"
    )
    steps = (
        "      - run: nc echo 5000 </dev/null\n"
        '      - run: echo "port=${{ job.services.echo.ports[5000] }} '
        'net=${{ job.services.echo.network }} opt=$FROM_OPTIONS"\n'
        "      - run: echo kept > /mnt/cache/file && cat cache/file\n"
    )
    text = workflow("svc", steps, SERVICE.format(image=service_image), container)
    pool, job_id = submit(svc_pool, git_server, text)
    job = wait_final(pool, job_id)
    log = pool.store.read_log(job_id)
    assert job.state.value == "succeeded", f"{job.reason}\n{log}"
    lines = log.splitlines()
    assert "hello from the service" in lines
    # A container job reaches services by name: no port is mapped for it.
    assert f"port= net=ci-pool-{job_id}-1 opt=set-by-options" in lines
    assert "kept" in lines  # the workspace volume is the workspace's ./cache
    assert left_of(docker_client, job_id) == ([], [])


def test_unhealthy_service_fails_the_job_as_error_naming_it(
    svc_pool: Harness, git_server: GitServer, service_image: str, docker_client: Any
) -> None:
    service = (
        f"      sick:\n        image: {service_image}\n"
        '        options: --health-cmd "echo not-ready-yet; exit 1" --health-interval 1s '
        "--health-retries 2\n"
    )
    pool, job_id = submit(
        svc_pool, git_server, workflow("svc", "      - run: echo never-runs\n", service)
    )
    job = wait_final(pool, job_id)
    assert job.state.value == "error"
    assert job.reason is not None
    assert "service 'sick' is unhealthy" in job.reason, job.reason
    assert "not-ready-yet" in job.reason
    assert "never-runs" not in pool.store.read_log(job_id)
    assert left_of(docker_client, job_id) == ([], [])


def test_job_network_is_internal_and_cancel_removes_services_and_network(
    svc_pool: Harness, git_server: GitServer, service_image: str, docker_client: Any
) -> None:
    text = workflow("svc", "      - run: sleep 300\n", SERVICE.format(image=service_image))
    pool, job_id = submit(svc_pool, git_server, text)
    deadline = time.monotonic() + 60
    while len(containers := left_of(docker_client, job_id)[0]) < 2:
        assert time.monotonic() < deadline, "the job and its service never ran"
        time.sleep(0.1)
    (network,) = left_of(docker_client, job_id)[1]
    attrs = network.attrs
    assert attrs["Internal"] is True
    # The host has no address on it: its containers have no gateway to anywhere.
    assert attrs["Options"][defaults.NETWORK_NO_HOST_ADDRESS] == "true"
    assert attrs["Labels"][defaults.LABEL_ATTEMPT] == "1"
    by_role = {c.labels.get(defaults.LABEL_SERVICE, "job"): c for c in containers}
    assert by_role["job"].attrs["HostConfig"]["NetworkMode"] == network.name
    assert list(by_role["job"].attrs["NetworkSettings"]["Networks"]) == [network.name]
    aliases = by_role["echo"].attrs["NetworkSettings"]["Networks"][network.name]["Aliases"]
    assert "echo" in aliases
    assert by_role["echo"].attrs["HostConfig"]["PortBindings"] in (None, {})
    pool.cancel(job_id)
    job = wait_final(pool, job_id)
    assert job.state.value == "cancelled"
    deadline = time.monotonic() + 30
    while left_of(docker_client, job_id) != ([], []):
        assert time.monotonic() < deadline, f"left behind: {left_of(docker_client, job_id)}"
        time.sleep(0.1)


def test_a_cut_off_runner_removes_its_own_containers_and_networks_only(
    busybox_image: str, docker_client: Any
) -> None:
    """What a revoked runner does before it exits: everything labelled with its name goes
    (job, service and warm containers, job networks); another runner's things stay."""
    mine, other = f"cut-{uuid.uuid4().hex[:8]}", f"kept-{uuid.uuid4().hex[:8]}"
    made = []
    try:
        for runner in (mine, other):
            labels = {
                defaults.LABEL_RUNNER: runner,
                defaults.LABEL_JOB: "j",
                defaults.LABEL_ATTEMPT: "1",
                TEST_LABEL: "1",
            }
            net = docker_client.networks.create(f"{runner}-net", internal=True, labels=labels)
            made.append(net)
            for _ in range(2):
                c = docker_client.containers.create(
                    busybox_image, ["sleep", "60"], labels=labels, network=net.name
                )
                c.start()
        assert remove_runner_objects(mine) == {("j", 1)}
        left = docker_client.containers.list(all=True, filters={"label": TEST_LABEL})
        assert {c.labels[defaults.LABEL_RUNNER] for c in left} == {other} and len(left) == 2
        assert [n.name for n in docker_client.networks.list(filters={"label": TEST_LABEL})] == [
            f"{other}-net"
        ]
        assert remove_runner_objects(mine) == set()
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": TEST_LABEL}):
            c.remove(force=True)
        for n in docker_client.networks.list(filters={"label": TEST_LABEL}):
            n.remove()


def test_sweep_removes_a_lost_attempts_services_and_host_job_uses_mapped_port(
    svc_pool: Harness, git_server: GitServer, service_image: str, docker_client: Any
) -> None:
    quick = workflow("svc", "      - run: 'true'\n", SERVICE.format(image=service_image))
    pool, ended = submit(svc_pool, git_server, quick)
    assert wait_final(pool, ended).state.value == "succeeded"
    # What a runner lost mid-job leaves: a service and the job network of attempt 1.
    labels = {defaults.LABEL_JOB: ended, defaults.LABEL_ATTEMPT: "1", TEST_LABEL: "1"}
    net = docker_client.networks.create(
        f"lost-{uuid.uuid4().hex[:8]}", internal=True, labels=labels
    )
    docker_client.containers.create(service_image, labels=labels, network=net.name)
    try:
        # A runner's first sweep starts with it; a host runner sweeps Docker too.
        svc_pool.start_worker("svc-host")
        deadline = time.monotonic() + 60
        while left_of(docker_client, ended) != ([], []):
            assert time.monotonic() < deadline, "the sweep left the lost attempt's services"
            time.sleep(0.2)
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": TEST_LABEL}):
            c.remove(force=True)
        for n in docker_client.networks.list(filters={"label": TEST_LABEL}):
            n.remove()
    steps = (
        "      - run: >-\n"
        "          echo port=${{ job.services.echo.ports[5000] }};\n"
        "          busybox nc 127.0.0.1 ${{ job.services.echo.ports[5000] }} </dev/null;\n"
        "          bridge=cip$(printf %s-1 $CI_POOL_JOB_ID | busybox sha256sum | cut -c1-11);\n"
        '          echo "forwarding=$(cat /proc/sys/net/ipv4/conf/$bridge/forwarding)"\n'
    )
    text = workflow("svc-host", steps, SERVICE.format(image=service_image))
    pool, job_id = submit(svc_pool, git_server, text)
    job = wait_final(pool, job_id)
    log = pool.store.read_log(job_id)
    assert job.state.value == "succeeded", f"{job.reason}\n{log}"
    assert "hello from the service" in log.splitlines()
    # The services' bridge keeps a host address for the relay but forwards nothing.
    assert "forwarding=0" in log.splitlines(), log
    assert job.evidence is not None and job.evidence.model_extra is not None
    assert job.evidence.model_extra["service_forwarding"] == "off"
    port = next(line for line in log.splitlines() if line.startswith("port="))
    assert port.removeprefix("port=").isdigit()
    assert left_of(docker_client, job_id) == ([], [])


@pytest.fixture(scope="module")
def registry(
    docker_client: Any, busybox_image: str, service_image: str, tmp_path_factory: Any
) -> Iterator[str]:
    """A real registry (Debian's docker-registry) on loopback that asks for a login, holding
    the busybox image as ``private/app:1`` and the echo service as ``private/echo:1``; the
    local copies are removed, so a job must pull them with its login."""
    import bcrypt

    binary = shutil.which("docker-registry")
    need(binary is not None, "docker-registry is not installed (apt-get install docker-registry)")
    root = tmp_path_factory.mktemp("registry")
    digest = bcrypt.hashpw(REGISTRY_PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    (root / "htpasswd").write_text(f"ci-bot:{digest}\n")
    port = free_port()
    (root / "config.yml").write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"auth:\n  htpasswd:\n    realm: ci-pool-test\n    path: {root / 'htpasswd'}\n"
    )
    log = (root / "registry.log").open("w")
    proc = subprocess.Popen(
        [str(binary), "serve", str(root / "config.yml")], stdout=log, stderr=log
    )
    host = f"127.0.0.1:{port}"
    pushed = [f"{host}/private/app:1", f"{host}/private/echo:1"]
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{host}/v2/", timeout=2)
            except urllib.error.HTTPError as exc:
                assert exc.code == 401, exc  # up, and it wants a login
                break
            except OSError:
                assert proc.poll() is None, (root / "registry.log").read_text()
                assert time.monotonic() < deadline, "the registry did not start"
                time.sleep(0.1)
        login = {"username": "ci-bot", "password": REGISTRY_PASSWORD}
        for source, target in zip((busybox_image, service_image), pushed, strict=True):
            repository, tag = target.rsplit(":", 1)
            docker_client.images.get(source).tag(repository, tag)
            for line in docker_client.images.push(
                repository, tag, auth_config=login, stream=True, decode=True
            ):
                assert "error" not in line, line
            docker_client.images.remove(target)
        yield host
    finally:
        for image in pushed:
            with contextlib.suppress(Exception):
                docker_client.images.remove(image, force=True)
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_container_and_service_credentials_pull_from_a_private_registry(
    svc_pool: Harness, git_server: GitServer, registry: str, docker_client: Any
) -> None:
    container = (
        f"    container:\n      image: {registry}/private/app:1\n      credentials:\n"
        "        username: ci-bot\n        password: ${{ secrets.REG_PW }}\n"
    )
    service = SERVICE.format(image=f"{registry}/private/echo:1") + (
        "        credentials:\n          username: ci-bot\n"
        "          password: ${{ secrets.REG_PW }}\n"
    )
    steps = "      - run: nc echo 5000 </dev/null\n"
    pool, job_id = submit(svc_pool, git_server, workflow("svc", steps, service, container))
    job = wait_final(pool, job_id)
    log = pool.store.read_log(job_id)
    assert job.state.value == "succeeded", f"{job.reason}\n{log}"
    assert "hello from the service" in log.splitlines()
    assert REGISTRY_PASSWORD not in log
    # Both were pulled with the job's login.
    assert docker_client.images.get(f"{registry}/private/echo:1")
    assert left_of(docker_client, job_id) == ([], [])


def test_a_wrong_login_cannot_use_a_private_image_even_one_the_runner_holds(
    svc_pool: Harness, git_server: GitServer, registry: str, docker_client: Any
) -> None:
    image = f"{registry}/private/app:1"
    # The runner holds the image already (an earlier job's pull).
    docker_client.images.pull(
        image.rsplit(":", 1)[0],
        tag="1",
        auth_config={"username": "ci-bot", "password": REGISTRY_PASSWORD},
    )
    container = (
        f"    container:\n      image: {image}\n      credentials:\n"
        "        username: ci-bot\n        password: ${{ secrets.REG_BAD }}\n"
    )
    steps = "      - run: echo never-runs\n"
    pool, job_id = submit(
        svc_pool, git_server, workflow("svc", steps, SERVICE.format(image=SERVICE_IMAGE), container)
    )
    job = wait_final(pool, job_id)
    assert job.state.value == "error"
    assert job.reason is not None
    assert f"image {image!r} is not on this runner and could not be pulled" in job.reason
    log = pool.store.read_log(job_id)
    assert "never-runs" not in log
    for text in (job.reason, log):
        assert WRONG_PASSWORD not in text and REGISTRY_PASSWORD not in text
    assert left_of(docker_client, job_id) == ([], [])
