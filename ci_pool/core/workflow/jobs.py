"""A workflow job built into a PipelineJob per matrix cell: routing, container, outputs, spec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ci_pool.core.admission import Admission
from ci_pool.core.capabilities import IGNORED_LABELS, Capability
from ci_pool.core.pipeline import PipelineJob
from ci_pool.core.specs import EnvironmentSpec, JobSpec
from ci_pool.core.workflow.concurrency import ConcurrencyReader
from ci_pool.core.workflow.contexts import (
    JOB_ENV,
    JOB_LEVEL,
    MISSING,
    STEP_LEVEL,
    referenced_secrets,
)
from ci_pool.core.workflow.dynamic_matrix import DYNAMIC_MATRIX_LEVEL
from ci_pool.core.workflow.job_containers import ContainerReader
from ci_pool.core.workflow.matrix import Strategy, label
from ci_pool.core.workflow.schema import (
    ENVIRONMENT_KEYS,
    ID,
    JOB_KEYS,
    PERMISSION_SCOPES,
    check_keys,
    one_or_many,
)
from ci_pool.core.workflow.steps import RunDefaults
from ci_pool.core.workflow.targets import RUNS_ON_KEYS, group_glob, job_runner_glob
from ci_pool.core.workflow.yaml_source import MarkedList, MarkedMap, Pos, Source
from ci_pool.exceptions import CapabilityNotFound, InputError

_LEVELS = ("read", "write", "none")


def read_permissions(src: Source, data: MarkedMap, where: str) -> dict[str, str] | None:
    """``permissions:`` (``read-all``, ``write-all``, ``{}`` or scope: read|write|none), as
    recorded on the pipeline and its jobs; None when not given."""
    if "permissions" not in data:
        return None
    value, pos = data["permissions"], data.value_pos["permissions"]
    if value in ("read-all", "write-all"):
        return {"*": str(value).removesuffix("-all")}
    if not isinstance(value, MarkedMap):
        src.error(
            f"{where}: must be read-all, write-all or a mapping of scope to read, write or none",
            pos,
        )
        return None
    out: dict[str, str] = {}
    for scope, level in value.items():
        if scope not in PERMISSION_SCOPES:
            src.error(
                f"{where}.{scope}: not a permission scope; scopes: {', '.join(PERMISSION_SCOPES)}",
                value.key_pos[scope],
            )
        elif level not in _LEVELS:
            src.error(f"{where}.{scope}: must be read, write or none", value.value_pos[scope])
        else:
            out[scope] = str(level)
    return out


@dataclass(frozen=True)
class Workflow:
    """What every job of a file shares."""

    admission: Admission
    env: dict[str, str]
    run: RunDefaults
    #: Job id -> declared output names, for checking ``needs.<id>.outputs.<name>``.
    outputs: dict[str, frozenset[str]]
    #: The workflow's ``permissions:``; a job's own replaces it.
    permissions: dict[str, str] | None = None

    @property
    def capabilities(self) -> Mapping[str, Capability]:
        return self.admission.capabilities


class JobBuilder(ContainerReader):
    """Builds the PipelineJob of one matrix cell of one workflow job."""

    def __init__(
        self,
        src: Source,
        wf: Workflow,
        job_id: str,
        data: MarkedMap,
        pos: Pos,
        need_ids: list[str],
        strategy: Strategy,
        cell: dict[str, Any],
    ):
        needs = {n: wf.outputs.get(n, frozenset()) for n in need_ids}
        super().__init__(src, cell, strategy.keys, strategy.readable, needs, job_id)
        self.wf, self.data, self.pos, self.strategy = wf, data, pos, strategy
        self.run_defaults = wf.run
        self.path = f"jobs.{job_id}"
        # Errors in a matrix job say which cells they are about.
        self.cell_label = label(cell) if strategy.keys is not None else None
        index = next((i for i, c in enumerate(strategy.cells) if c is cell), 0)
        self.strategy_values = {
            "fail-fast": strategy.fail_fast,
            "job-index": index,
            "job-total": len(strategy.cells),
            "max-parallel": strategy.max_parallel or len(strategy.cells),
        }
        if strategy.dynamic is not None:
            self.matrix_later, self.strategy_values = True, None

    def dynamic_matrix(self) -> None:
        """Check the expressions of a matrix computed at run time: only needs (of this job),
        github, vars and inputs, when the needs have ended."""
        for where, text, pos in self.strategy.expressions:
            self.template(text, pos, where, DYNAMIC_MATRIX_LEVEL)

    def build(self, key: str, needs: tuple[str, ...]) -> PipelineJob | None:
        d, p = self.data, self.path
        check_keys(self.src, d, p, "job", JOB_KEYS)
        routed = self.runs_on()
        if_expr = self.condition(d, "if", f"{p}.if", JOB_LEVEL)
        env = {**self.wf.env, **self.env(d, "env", f"{p}.env", JOB_ENV)}
        container = self.container()
        services = self.services()
        steps = self.steps()
        outputs = self.outputs()
        name = self.name(key)
        timeout = self.minutes(d, "timeout-minutes", f"{p}.timeout-minutes")
        continue_on_error = self.flag(d, "continue-on-error", f"{p}.continue-on-error")
        group = ConcurrencyReader(self.src, f"{p}.concurrency", self.cell, self.strategy.keys)
        concurrency = group.read(d)
        permissions = read_permissions(self.src, d, f"{p}.permissions")
        environment = self.environment()
        self.dynamic_matrix()
        if not self.ok or not group.ok or routed is None:
            return None
        templates = [
            *env.values(),
            *outputs.values(),
            *(t for s in steps for t in (s.run, s.working_directory or "", *s.env.values())),
            *(v for service in services for v in service.env.values()),
        ]
        logins = [container.spec.credentials if container and container.spec else None]
        logins += [service.credentials for service in services]
        templates += [t for login in logins if login for t in (login.username, login.password)]
        secrets = referenced_secrets(templates, [if_expr or "", *(s.if_expr or "" for s in steps)])
        spec = self.model(
            JobSpec,
            p,
            self.pos,
            # Filled when the pipeline is submitted.
            repo="",
            name=name[:200],
            capability=routed[0],
            labels=routed[1],
            runner=routed[2],
            env={**container.env, **env} if container else env,
            timeout=timeout,
            image=container.image if container else None,
            steps=steps,
            secrets=secrets,
            permissions=self.wf.permissions if permissions is None else permissions,
            environment=environment,
            services=services,
            container=container.spec if container else None,
        )
        if spec is None or not self.admit(spec):
            return None
        return PipelineJob(
            key=key,
            job_id=self.job_id,
            spec=spec,
            matrix=self.cell,
            needs=needs,
            need_ids=tuple(self.needs),
            if_expr=if_expr,
            continue_on_error=continue_on_error,
            outputs=outputs,
            container_options=container.options if container else None,
            fail_fast=self.strategy.fail_fast,
            max_parallel=self.strategy.max_parallel,
            concurrency=concurrency,
            dynamic_matrix=self.strategy.dynamic,
        )

    def admit(self, spec: JobSpec) -> bool:
        """The pool's admission rules (``ci_pool.core.admission``), each problem reported at
        the key it comes from."""
        d, p = self.data, self.path
        places = {
            "timeout": "timeout-minutes",
            "image": "container",
            "container": "container",
            "services": "services",
        }
        _, problems = self.wf.admission.check(spec)
        services = d.get("services")
        for problem in problems:
            if problem.field.startswith("steps["):
                self.error(f"{p}.{problem.field}: {problem.message}", self.step_pos(problem.field))
                continue
            key, _, name = problem.field.partition(".")
            key = places.get(key, "runs-on")
            pos = d.value_pos.get(key, self.pos)
            if key == "services" and isinstance(services, MarkedMap) and name in services:
                key, pos = f"services.{name}", services.value_pos[name]
            self.error(f"{p}.{key}: {problem.message}", pos)
        return not problems

    def step_pos(self, field: str) -> Pos:
        """Where ``steps[i].uses`` is written (the job's position when not found)."""
        steps = self.data.get("steps")
        index = int(field.removeprefix("steps[").partition("]")[0])
        if isinstance(steps, MarkedList) and index < len(steps):
            step = steps[index]
            if isinstance(step, MarkedMap) and "uses" in step:
                return step.value_pos["uses"]
        return self.pos

    def name(self, key: str) -> str:
        if "name" not in self.data:
            return key
        raw = self.data["name"]
        name = self.text(raw, self.data.value_pos["name"], f"{self.path}.name", JOB_LEVEL)
        # Like GitHub: a name that does not show the matrix gets the cell's values appended.
        if self.strategy.keys is not None and "matrix" not in str(raw):
            name = f"{name} ({label(self.cell)})"
        return name

    def runs_on(self) -> tuple[str, tuple[str, ...], str | None] | None:
        """(capability, labels, runner glob or None) of ``runs-on:`` and ``runner:``."""
        d, where = self.data, f"{self.path}.runs-on"
        caps = ", ".join(sorted(self.wf.capabilities))
        if "runs-on" not in d:
            self.error(f"{where}: is required; use the label of a capability: {caps}", self.pos)
            return None
        value, pos = d["runs-on"], d.value_pos["runs-on"]
        group = None
        if isinstance(value, MarkedMap):
            check_keys(self.src, value, where, "runs-on", RUNS_ON_KEYS)
            group = group_glob(self, value, where, dict(self.wf.admission.runner_groups))
            if "labels" not in value:
                self.error(
                    f"{where}: labels: is required beside group: (the labels name the "
                    f"capability: {caps})",
                    pos,
                )
                return None
            value, pos, where = value["labels"], value.value_pos["labels"], f"{where}.labels"
        glob = job_runner_glob(self, d, f"{self.path}.runner")
        if glob is not None and group is not None:
            self.error(
                f"{self.path}.runner: give either runner: or runs-on.group:, not both",
                d.value_pos["runner"],
            )
        labels: list[str] = []
        for item, ipos in one_or_many(value, pos):
            known = self.known(item, ipos, where)
            # A matrix value may be a list of labels; a list written in place may not.
            items = known if isinstance(item, str) and isinstance(known, list) else [known]
            for label_ in items:
                if isinstance(label_, str) and label_:
                    labels.append(label_)
                elif label_ is not MISSING:
                    self.error(f"{where}: labels must be non-empty strings", ipos)
        if not self.ok:
            return None
        try:
            cap = self.wf.admission.route(labels=labels)
        except CapabilityNotFound as exc:
            wanted = sorted({x.lower() for x in labels} - IGNORED_LABELS)
            which = "the label" if len(wanted) == 1 else "all of the labels"
            hosted = (
                " (ci-pool has no GitHub-hosted runners)"
                if any("-latest" in x for x in labels)
                else ""
            )
            self.error(
                f"{where}: no capability has {which} {', '.join(wanted)}{hosted}; "
                f"capabilities that exist: {caps}{exc.hint}",
                pos,
            )
            return None
        except InputError as exc:
            self.error(f"{where}: {str(exc).removeprefix(f'{exc.field}: ')}", pos)
            return None
        return cap.name, tuple(labels), glob or group

    def environment(self) -> EnvironmentSpec | None:
        """``environment:``, a name or ``{name, url}``; expressions stay for the runtime."""
        d, where = self.data, f"{self.path}.environment"
        if d.get("environment") is None:
            return None
        value, pos = d["environment"], d.value_pos["environment"]
        url = None
        if isinstance(value, MarkedMap):
            check_keys(self.src, value, where, "environment", ENVIRONMENT_KEYS)
            if "url" in value:
                url = self.text(value["url"], value.value_pos["url"], f"{where}.url", JOB_LEVEL)
            if "name" not in value:
                self.error(f"{where}: needs name:", pos)
                return None
            value, pos, where = value["name"], value.value_pos["name"], f"{where}.name"
        if not isinstance(value, str) or not value.strip():
            self.error(f"{where}: must be the name of an environment", pos)
            return None
        name = self.text(value, pos, where, JOB_LEVEL)
        return self.model(EnvironmentSpec, where, pos, name=name, url=url or None)

    def outputs(self) -> dict[str, str]:
        d, where = self.data, f"{self.path}.outputs"
        value = d.get("outputs")
        if value is None:
            return {}
        if not isinstance(value, MarkedMap):
            self.error(
                f"{where}: must be a mapping of output name to value", d.value_pos["outputs"]
            )
            return {}
        for name in value:
            if not ID.match(name):
                self.error(
                    f"{where}.{name}: names start with a letter or _ and contain only "
                    "letters, digits, - and _",
                    value.key_pos[name],
                )
        return {
            name: self.text(raw, value.value_pos[name], f"{where}.{name}", STEP_LEVEL)
            for name, raw in value.items()
        }
