"""``services:`` and ``container:`` settings: the docker-run style options parser, volume
and credential checks, and the workflow keys read into the job spec."""

from __future__ import annotations

import textwrap

import pytest

from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.core.services import (
    ContainerSpec,
    check_job_options,
    check_volume,
    parse_duration,
    parse_options,
)
from ci_pool.core.specs import parse_job_spec
from ci_pool.core.workflow.parser import parse_workflow, validate_workflow
from ci_pool.exceptions import InputError

CAPS = {
    n: Capability(**d)
    for n, d in merge_capabilities({"linux": {"allow_container_override": True}}).items()
}


def test_health_options_in_every_spelling() -> None:
    opts = parse_options(
        '--health-cmd "pg_isready -U postgres" --health-interval=10s --health-timeout 5s '
        "--health-retries 5 --health-start-period 1m30s -e POSTGRES_DB=app --env A=b=c "
        "--entrypoint /bin/sh -w /srv -u 1000:1000 --cpus 1.5 -m 512m"
    )
    assert opts.health is not None
    assert opts.health.cmd == "pg_isready -U postgres"
    assert (opts.health.interval, opts.health.timeout, opts.health.retries) == (10, 5, 5)
    assert opts.health.start_period == 90
    assert opts.env == {"POSTGRES_DB": "app", "A": "b=c"}
    assert (opts.entrypoint, opts.workdir, opts.user) == ("/bin/sh", "/srv", "1000:1000")
    assert (opts.cpus, opts.memory) == (1.5, 512 * 1024**2)
    assert parse_options("").health is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "--privileged",
            ["--privileged is refused", "host's devices", "allowed: --cpus, --entrypoint"],
        ),
        ("-v /:/host", ["-v is refused", "mounts host paths"]),
        ("--volume=/etc:/etc", ["--volume is refused"]),
        ("--mount type=bind,src=/,dst=/h", ["--mount is refused"]),
        ("--network host", ["--network is refused"]),
        ("--cap-add SYS_ADMIN", ["--cap-add is refused", "kernel capabilities"]),
        ("--device /dev/kvm", ["--device is refused"]),
        ("--security-opt seccomp=unconfined", ["--security-opt is refused"]),
        ("--pid=host", ["--pid is refused"]),
        ("-p 80:80", ["-p is refused", "services: ports"]),
        ("--health-cmd true --log-driver none", ["--log-driver is not an option ci-pool"]),
        ("--health-interval 1s", ["need --health-cmd"]),
        ("--health-cmd true --health-interval soon", ["--health-interval 'soon'"]),
        ("--health-cmd true --health-retries 0", ["--health-retries '0'"]),
        ("--health-cmd", ["--health-cmd needs a value"]),
        ("-e NOEQUALS", ["-e 'NOEQUALS': give NAME=value"]),
        ("-e 1BAD=x", ["1BAD"]),
        ("postgres", ["'postgres' is not an option"]),
        ('--health-cmd "unclosed', ["cannot split"]),
        ("--memory lots", ["--memory 'lots'"]),
    ],
)
def test_refused_options_name_the_flag(text: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        parse_options(text)
    for word in words:
        assert word in str(info.value)


def test_durations() -> None:
    assert parse_duration("500ms", "--x") == 0.5
    assert parse_duration("1h", "--x") == 3600
    for bad in ("", "10", "1d", "2h", "s", "1s2"):
        with pytest.raises(ValueError):
            parse_duration(bad, "--x")


def test_job_container_options_exclude_what_the_runner_sets() -> None:
    assert check_job_options("-e A=1 --user 0").env == {"A": "1"}
    for text in ("--health-cmd true", "--entrypoint sh", "-w /tmp"):
        with pytest.raises(ValueError):
            check_job_options(text)


@pytest.mark.parametrize(
    ("volume", "why"),
    [
        ("/etc:/x", "host paths and named volumes are refused"),
        ("data:/x", "host paths and named volumes are refused"),
        ("./../up:/x", "climbs out"),
        ("./a/../../b:/x", "climbs out"),
        ("./a:relative", "absolute path"),
        ("./a:/", "absolute path"),
        ("./a:/workspace", "the runner mounts"),
        ("./a:/ci-pool/x", "the runner mounts"),
        ("./a", "give ./dir-in-workspace"),
        ("./a:/b:rx", "give ./dir-in-workspace"),
    ],
)
def test_volumes_stay_inside_the_workspace(volume: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_volume(volume)


def test_workspace_volumes_accepted() -> None:
    assert check_volume("./cache:/mnt/cache") == "./cache:/mnt/cache"
    assert check_volume("./:/src:ro") == "./:/src:ro"


def test_credentials_only_through_a_secret() -> None:
    spec = ContainerSpec(credentials={"username": "ci", "password": "${{ secrets.REG_PW }}"})
    assert spec.credentials is not None and spec.credentials.secret_name == "REG_PW"
    with pytest.raises(ValueError, match="never in clear"):
        ContainerSpec(credentials={"username": "ci", "password": "hunter2"})


def test_submitted_job_spec_carries_services_and_names_bad_fields() -> None:
    base = {"repo": "https://git.example/app.git", "steps": [{"run": "true"}]}
    spec = parse_job_spec(
        {**base, "services": [{"name": "db", "image": "postgres:16", "ports": [5432]}]},
        allow_local_repos=False,
    )
    assert spec.services[0].name == "db" and spec.services[0].ports == (5432,)
    cases = {
        "services.0.options": {"services": [{"name": "db", "image": "x", "options": "-v /:/h"}]},
        "services.0.name": {"services": [{"name": "no such", "image": "x"}]},
        "services": {"services": [{"name": "db", "image": "x"}, {"name": "DB", "image": "y"}]},
        "container.volumes": {"container": {"volumes": ["/etc:/x"]}},
    }
    for field, extra in cases.items():
        with pytest.raises(InputError) as info:
            parse_job_spec({**base, **extra}, allow_local_repos=False)
        assert info.value.field == field, (field, str(info.value))


WORKFLOW = """\
on: push
jobs:
  test:
    runs-on: linux
    container:
      image: debian:12
      options: --user 0 -e FROM_OPTIONS=1
      volumes: [./cache:/mnt/cache]
      credentials:
        username: ci
        password: ${{ secrets.REGISTRY_PASSWORD }}
    services:
      db:
        image: postgres:16
        env:
          POSTGRES_PASSWORD: ${{ secrets.DB_PASSWORD }}
        ports: ["5432:5432", 6000]
        options: --health-cmd pg_isready --health-interval 2s
      cache: redis:7
      private:
        image: registry.example:5000/team/db:1
        credentials:
          username: ${{ vars.PULL_USER }}
          password: ${{ secrets.PULL_TOKEN }}
    steps:
      - run: echo ${{ job.services.db.ports[5432] }}
"""


def test_workflow_services_and_container_settings_reach_the_job_spec() -> None:
    job = parse_workflow(WORKFLOW, "wf.yml", CAPS).jobs[0]
    spec = job.spec
    db, cache, private = spec.services
    assert (db.name, db.image, db.ports) == ("db", "postgres:16", (5432, 6000))
    assert db.env == {"POSTGRES_PASSWORD": "${{ secrets.DB_PASSWORD }}"}
    assert db.parsed_options.health is not None
    assert (cache.name, cache.image, cache.ports) == ("cache", "redis:7", ())
    assert spec.container is not None
    assert spec.container.volumes == ("./cache:/mnt/cache",)
    assert spec.container.options == "--user 0 -e FROM_OPTIONS=1"
    assert private.credentials is not None
    assert private.credentials.secret_name == "PULL_TOKEN"
    assert private.credentials.username == "${{ vars.PULL_USER }}"
    # The secrets a service env and the registry logins use are the job's to receive.
    assert set(spec.secrets) == {"DB_PASSWORD", "REGISTRY_PASSWORD", "PULL_TOKEN"}


def test_service_errors_point_at_their_line() -> None:
    text = textwrap.dedent(
        """\
        on: push
        jobs:
          test:
            runs-on: linux
            services:
              db:
                image: postgres:16
                ports: [http]
                options: --privileged
              "bad name": redis
              login:
                image: redis:7
                credentials: {username: ci, password: hunter2}
            steps: [{run: "true"}]
        """
    )
    found = [str(e) for e in validate_workflow(text, "wf.yml", CAPS)]
    assert found[0].startswith("wf.yml:8:"), found
    assert "jobs.test.services.db.ports: 'http' is not a port" in found[0]
    assert found[1].startswith("wf.yml:9:18: jobs.test.services.db.options: --privileged")
    assert any('"bad name"' in e or "bad name" in e for e in found[2:]), found
    # A password written in clear is refused where it is written.
    (clear,) = [e for e in found if "services.login.credentials" in e]
    assert clear.startswith("wf.yml:13:") and "never in clear" in clear, clear
