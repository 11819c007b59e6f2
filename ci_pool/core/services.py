"""Service containers (``services:``) and the job container's own settings (``container:``):
the specs a job carries, and the docker-run style ``options`` they may use.

``options`` is outside input written in a workflow: only an allowlist of flags is accepted
(health checks, environment, entrypoint, working directory, user); anything that could
widen what a container may do (``--privileged``, ``-v``, ``--network``, ``--cap-add``,
``--device``...) is refused with the flag named."""

from __future__ import annotations

import re
import shlex
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ci_pool import defaults as d
from ci_pool.core.names import check_env_names

#: A service name: it becomes a host name on the job's network and a key of
#: ``job.services``.
SERVICE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
_IMAGE = re.compile(r"^[A-Za-z0-9][^\s]*$")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

#: Flags that take a value, by every spelling, and the field they set.
_VALUE_FLAGS = {
    "--health-cmd": "health_cmd",
    "--health-interval": "health_interval",
    "--health-timeout": "health_timeout",
    "--health-retries": "health_retries",
    "--health-start-period": "health_start_period",
    "-e": "env",
    "--env": "env",
    "--entrypoint": "entrypoint",
    "-w": "workdir",
    "--workdir": "workdir",
    "-u": "user",
    "--user": "user",
    "--cpus": "cpus",
    "-m": "memory",
    "--memory": "memory",
}
_WHY_REFUSED = {
    "--privileged": "gives the container the host's devices",
    "-v": "mounts host paths",
    "--volume": "mounts host paths",
    "--mount": "mounts host paths",
    "--network": "the job's network is chosen by the runner",
    "--net": "the job's network is chosen by the runner",
    "--cap-add": "adds kernel capabilities",
    "--device": "exposes host devices",
    "--security-opt": "weakens the container's confinement",
    "--pid": "shares the host's processes",
    "--ipc": "shares the host's memory",
    "--userns": "changes user namespacing",
    "-p": "ports are published by the runner (services: ports)",
    "--publish": "ports are published by the runner (services: ports)",
}


def parse_duration(text: str, flag: str) -> float:
    """A docker duration (``10s``, ``1m30s``, ``500ms``) in seconds, at most an hour."""
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"{flag} {text!r}: give a duration such as 10s, 1m30s or 500ms")
    if not 0 < total <= 3600:
        raise ValueError(f"{flag} {text!r}: must be more than 0 and at most 1h")
    return total


class HealthCheck(BaseModel):
    """A health check run in the container (``--health-*``), in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cmd: str = Field(min_length=1, max_length=4000)
    interval: float = d.SERVICE_HEALTH_INTERVAL
    timeout: float = d.SERVICE_HEALTH_TIMEOUT
    retries: int = Field(default=d.SERVICE_HEALTH_RETRIES, ge=1, le=100)
    start_period: float = 0.0

    @property
    def longest_wait(self) -> float:
        """How long docker may take to call the container healthy or unhealthy."""
        return self.start_period + self.retries * (self.interval + self.timeout)


class ContainerOptions(BaseModel):
    """What an ``options:`` string asks for, once checked against the allowlist."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    env: dict[str, str] = Field(default_factory=dict)
    health: HealthCheck | None = None
    entrypoint: str | None = None
    workdir: str | None = None
    user: str | None = None
    #: Limits asked for; the runner applies them only below the capability's own.
    cpus: float | None = Field(default=None, gt=0, le=1024)
    memory: int | None = Field(default=None, gt=0)


def _split(text: str) -> list[tuple[str, str]]:
    """``options`` as (flag, value) pairs; a value-taking flag takes the next word."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot split {text!r} into words: {exc}") from None
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        word = words[i]
        flag, eq, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if not flag.startswith("-"):
            raise ValueError(f"{word!r} is not an option; options are flags such as --health-cmd")
        if flag not in _VALUE_FLAGS:
            raise _refuse(flag)
        if not eq:
            if i + 1 >= len(words):
                raise ValueError(f"{flag} needs a value")
            value, i = words[i + 1], i + 1
        pairs.append((flag, value))
        i += 1
    return pairs


def _refuse(flag: str) -> ValueError:
    allowed = ", ".join(sorted({f for f in _VALUE_FLAGS if f.startswith("--")}))
    why = _WHY_REFUSED.get(flag)
    reason = f"{flag} is refused ({why})" if why else f"{flag} is not an option ci-pool accepts"
    return ValueError(f"{reason}; allowed: {allowed}")


def parse_options(text: str) -> ContainerOptions:
    """Check a docker-run style ``options`` string against the allowlist; ValueError
    names the first flag refused and lists those accepted."""
    if len(text) > d.MAX_CONTAINER_OPTIONS:
        raise ValueError(f"options are over {d.MAX_CONTAINER_OPTIONS} characters")
    fields: dict[str, str] = {}
    env: dict[str, str] = {}
    for flag, value in _split(text):
        name = _VALUE_FLAGS[flag]
        if name == "env":
            key, eq, val = value.partition("=")
            if not eq:
                raise ValueError(f"{flag} {value!r}: give NAME=value")
            env[key] = val
        else:
            fields[name] = value
    health = None
    if "health_cmd" in fields:
        health = HealthCheck(
            cmd=fields["health_cmd"],
            interval=parse_duration(fields.get("health_interval", "10s"), "--health-interval"),
            timeout=parse_duration(fields.get("health_timeout", "5s"), "--health-timeout"),
            retries=_retries(fields.get("health_retries", str(d.SERVICE_HEALTH_RETRIES))),
            start_period=(
                parse_duration(fields["health_start_period"], "--health-start-period")
                if "health_start_period" in fields
                else 0.0
            ),
        )
    elif any(k.startswith("health_") for k in fields):
        raise ValueError("--health-interval and the like need --health-cmd")
    return ContainerOptions(
        env=check_env_names(env),
        health=health,
        entrypoint=fields.get("entrypoint"),
        workdir=fields.get("workdir"),
        user=fields.get("user"),
        cpus=_cpus(fields["cpus"]) if "cpus" in fields else None,
        memory=memory_bytes(fields["memory"], "--memory") if "memory" in fields else None,
    )


def _cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1024:
        raise ValueError(f"--cpus {text!r}: give a number of CPUs such as 2 or 0.5")
    return value


def memory_bytes(text: str, flag: str) -> int:
    """``512m``, ``2g``, ``1048576`` in bytes."""
    match = re.fullmatch(r"([0-9]{1,12})([bkmg]?)", text.lower())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{flag} {text!r}: give a size such as 512m or 2g")
    units = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    return int(match.group(1)) * units[match.group(2)]


def check_job_options(text: str) -> ContainerOptions:
    """Options of the job container: the runner sets its command, working directory and
    health itself, so only ``--env`` and ``--user`` apply."""
    options = parse_options(text)
    if options.health is not None:
        raise ValueError("--health-cmd is for services, not the job container")
    if options.entrypoint is not None or options.workdir is not None:
        raise ValueError(
            "--entrypoint and --workdir are for services; the job container's are the runner's"
        )
    return options


def _retries(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise ValueError(f"--health-retries {text!r}: give a number from 1 to 100")
    return int(text)


def check_image(image: str) -> str:
    if not _IMAGE.match(image):
        raise ValueError(f"{image!r} is not an image name such as postgres:16")
    return image


def check_volume(volume: str) -> str:
    """``./sub:/mnt[:ro]``: a directory inside the workspace mounted in the job container.
    Host paths and named volumes are refused."""
    parts = volume.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ValueError(f"{volume!r}: give ./dir-in-workspace:/path/in/container[:ro]")
    source, target = parts[0], parts[1]
    if not source.startswith("./"):
        raise ValueError(
            f"{volume!r}: only directories of the workspace may be mounted (./sub:/mnt); "
            "host paths and named volumes are refused"
        )
    rest = [p for p in source[2:].split("/") if p not in ("", ".")]
    if ".." in rest or any(c < " " for c in volume):
        raise ValueError(f"{volume!r}: the source climbs out of the workspace")
    if not target.startswith("/") or ".." in target.split("/") or target == "/":
        raise ValueError(f"{volume!r}: the target must be an absolute path such as /mnt/data")
    reserved = (d.CONTAINER_WORKSPACE, d.CONTAINER_SCRIPTS, d.CONTAINER_FILES)
    if any(target == r or target.startswith(r + "/") for r in reserved):
        raise ValueError(f"{volume!r}: {target} is where the runner mounts its own directories")
    return volume


class RegistryCredentials(BaseModel):
    """Registry login for pulling the job's image; the password is a ``${{ secrets.X }}``
    template rendered on the runner, never a value written in the store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    username: str = Field(min_length=1, max_length=500)
    password: str = Field(min_length=1, max_length=500)

    @field_validator("password")
    @classmethod
    def _password(cls, value: str) -> str:
        if not re.fullmatch(r"\$\{\{\s*secrets\.[A-Za-z_][A-Za-z0-9_]*\s*\}\}", value):
            raise ValueError(
                "give the password as ${{ secrets.NAME }} (a capability secret), never in clear"
            )
        return value

    @property
    def secret_name(self) -> str:
        return self.password.split("secrets.", 1)[1].split("}", 1)[0].strip()


class ServiceSpec(BaseModel):
    """One sidecar container of a job: reached by ``name`` from a container job, on a
    loopback port (``job.services.<name>.ports[<port>]``) from a host job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=SERVICE_NAME.pattern)
    image: str = Field(min_length=1, max_length=500)
    env: dict[str, str] = Field(default_factory=dict, max_length=d.MAX_ENV_ENTRIES)
    #: Container ports the job reaches.
    ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = Field(default=(), max_length=20)
    #: docker-run style options, as written (checked by ``parse_options``).
    options: str | None = None
    #: Registry login for pulling the service's image.
    credentials: RegistryCredentials | None = None

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return check_image(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        return check_env_names(value)

    @field_validator("options")
    @classmethod
    def _options(cls, value: str | None) -> str | None:
        if value is not None:
            parse_options(value)
        return value

    @property
    def parsed_options(self) -> ContainerOptions:
        return parse_options(self.options or "")


class ContainerSpec(BaseModel):
    """The job container's settings beyond its image: options, workspace mounts and the
    registry login for its image."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    options: str | None = None
    volumes: tuple[str, ...] = Field(default=(), max_length=20)
    credentials: RegistryCredentials | None = None

    @field_validator("options")
    @classmethod
    def _options(cls, value: str | None) -> str | None:
        if value is not None:
            parse_options(value)
        return value

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_volume(v) for v in value)

    @model_validator(mode="after")
    def _job_options(self) -> ContainerSpec:
        if self.options:
            try:
                check_job_options(self.options)
            except ValueError as exc:
                raise ValueError(f"options: {exc}") from None
        return self

    @property
    def parsed_options(self) -> ContainerOptions:
        return parse_options(self.options or "")
