"""A workflow job's ``container:`` and ``services:``, read into the job spec's typed models."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from ci_pool.core.services import (
    ContainerSpec,
    RegistryCredentials,
    ServiceSpec,
    check_job_options,
    check_volume,
    parse_options,
)
from ci_pool.core.workflow.contexts import JOB_ENV, MISSING, PARSE_TIME
from ci_pool.core.workflow.schema import (
    CONTAINER_KEYS,
    CREDENTIAL_KEYS,
    SERVICE_KEYS,
    check_keys,
    one_or_many,
)
from ci_pool.core.workflow.steps import StepReader
from ci_pool.core.workflow.yaml_source import MarkedList, MarkedMap, Pos
from ci_pool.defaults import MAX_SERVICES

_IMAGE = re.compile(r"^[A-Za-z0-9][^\s]*$")
#: ``5432``, ``5432:5432``, ``127.0.0.1:8080:80``, with an optional ``/tcp``.
_PORT = re.compile(r"^(?:(?:[0-9.]+:)?[0-9]{1,5}:)?([0-9]{1,5})(?:/tcp)?$")


class JobContainer(NamedTuple):
    """The job's ``container:``: the image to run the steps in, its env and settings."""

    image: str
    env: dict[str, str]
    options: str | None
    spec: ContainerSpec | None


class ContainerReader(StepReader):
    """Reads ``container:`` and ``services:`` of the job being built."""

    data: MarkedMap
    path: str

    def options(self, value: MarkedMap, where: str, *, job: bool = False) -> str | None:
        if "options" not in value:
            return None
        pos = value.value_pos["options"]
        options = self.known(value["options"], pos, f"{where}.options")
        if not isinstance(options, str):
            if options is not MISSING:
                self.error(f"{where}.options: must be a string of docker options", pos)
            return None
        try:
            check_job_options(options) if job else parse_options(options)
        except ValueError as exc:
            self.error(f"{where}.options: {exc}", pos)
            return None
        return options

    def container(self) -> JobContainer | None:
        d, where = self.data, f"{self.path}.container"
        if d.get("container") is None:
            return None
        value, pos = d["container"], d.value_pos["container"]
        env: dict[str, str] = {}
        options, spec = None, None
        if isinstance(value, MarkedMap):
            check_keys(self.src, value, where, "container", CONTAINER_KEYS)
            if "image" not in value:
                self.error(f"{where}: needs image:", pos)
                return None
            env = self.env(value, "env", f"{where}.env", PARSE_TIME)
            options = self.options(value, where, job=True)
            fields: dict[str, Any] = {
                "options": options,
                "volumes": self.volumes(value, where),
                "credentials": self.credentials(value, where),
            }
            if options is not None or fields["volumes"] or fields["credentials"] is not None:
                spec = self.model(ContainerSpec, where, pos, **fields)
            value, pos, where = value["image"], value.value_pos["image"], f"{where}.image"
        image = self.image(value, pos, where)
        return None if image is None else JobContainer(image, env, options, spec)

    def image(self, value: Any, pos: Pos, where: str) -> str | None:
        image = self.known(value, pos, where)
        if image is MISSING:
            return None
        if not isinstance(image, str) or not _IMAGE.match(image):
            self.error(f"{where}: must be an image name such as debian:12", pos)
            return None
        return image

    def volumes(self, value: MarkedMap, where: str) -> tuple[str, ...]:
        if "volumes" not in value:
            return ()
        out = []
        for item, ipos in one_or_many(value["volumes"], value.value_pos["volumes"]):
            known = self.known(item, ipos, f"{where}.volumes")
            if isinstance(known, str):
                try:
                    out.append(check_volume(known))
                except ValueError as exc:
                    self.error(f"{where}.volumes: {exc}", ipos)
            elif known is not MISSING:
                self.error(f"{where}.volumes: give ./dir:/path strings", ipos)
        return tuple(out)

    def credentials(self, value: MarkedMap, where: str) -> RegistryCredentials | None:
        if "credentials" not in value:
            return None
        creds, pos, where = (
            value["credentials"],
            value.value_pos["credentials"],
            f"{where}.credentials",
        )
        if not isinstance(creds, MarkedMap):
            self.error(f"{where}: must be a mapping with username and password", pos)
            return None
        check_keys(self.src, creds, where, "credentials", CREDENTIAL_KEYS)
        if any(key not in creds for key in CREDENTIAL_KEYS):
            self.error(f"{where}: needs username and password", pos)
            return None
        fields = {
            key: self.text(creds[key], creds.value_pos[key], f"{where}.{key}", JOB_ENV)
            for key in CREDENTIAL_KEYS
            if key in creds
        }
        return self.model(RegistryCredentials, where, pos, **fields)

    def services(self) -> tuple[ServiceSpec, ...]:
        d, where = self.data, f"{self.path}.services"
        value = d.get("services")
        if value is None:
            return ()
        if not isinstance(value, MarkedMap):
            self.error(f"{where}: must be a mapping of service name to image or settings",
                       d.value_pos["services"])  # fmt: skip
            return ()
        if len(value) > MAX_SERVICES:
            self.error(f"{where}: {len(value)} services; the limit is {MAX_SERVICES} per job",
                       d.value_pos["services"])  # fmt: skip
            return ()
        out = []
        for name, item in value.items():
            service = self.service(name, item, value.value_pos[name], f"{where}.{name}")
            if service is not None:
                out.append(service)
        return tuple(out)

    def service(self, name: str, item: Any, pos: Pos, where: str) -> ServiceSpec | None:
        fields: dict[str, Any] = {"name": name}
        if isinstance(item, MarkedMap):
            check_keys(self.src, item, where, "service", SERVICE_KEYS)
            if "image" not in item:
                self.error(f"{where}: needs image:", pos)
                return None
            fields["env"] = self.env(item, "env", f"{where}.env", JOB_ENV)
            fields["options"] = self.options(item, where)
            fields["ports"] = self.ports(item, where)
            fields["credentials"] = self.credentials(item, where)
            item, pos = item["image"], item.value_pos["image"]
        image = self.image(item, pos, f"{where}.image")
        if image is None:
            return None
        return self.model(ServiceSpec, where, pos, image=image, **fields)

    def ports(self, item: MarkedMap, where: str) -> tuple[int, ...]:
        """Container ports; a host port written before it is not used: the runner picks a
        free loopback port (``job.services.<name>.ports[<port>]``)."""
        if "ports" not in item:
            return ()
        raw, pos = item["ports"], item.value_pos["ports"]
        if not isinstance(raw, MarkedList):
            self.error(f"{where}.ports: must be a list of ports such as 5432", pos)
            return ()
        out = []
        for port, ppos in one_or_many(raw, pos):
            known = self.known(port, ppos, f"{where}.ports")
            match = _PORT.match(str(known)) if isinstance(known, str | int) else None
            if match is None or not 1 <= int(match.group(1)) <= 65535:
                if known is not MISSING:
                    self.error(
                        f"{where}.ports: {known!r} is not a port such as 5432 or 8080:80", ppos
                    )
                continue
            out.append(int(match.group(1)))
        return tuple(out)
