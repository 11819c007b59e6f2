"""Workflow files (a GitHub/Gitea Actions subset) parsed and validated into a Pipeline.

Pure: text in, plain data out. Every problem of a file is collected, each a WorkflowError
at the line and column of the offending key or value, naming the key and saying what
ci-pool supports instead.

What is resolved when parsing, and what is left for the runtime:

- ``matrix.*`` is substituted everywhere (each matrix cell is its own PipelineJob), and what
  no longer depends on the run is evaluated (``${{ matrix.os == 'linux' }}`` -> ``true``).
- ``runs-on``, ``container``, ``shell``, ``timeout-minutes``, ``continue-on-error`` and the
  checkout's ``with:`` must be known when parsing: they may use ``matrix`` only.
- ``github.*``, ``env.*``, ``needs.*`` and ``steps.*`` are left in place, as ``${{ }}`` in
  templates (``run``, env values, names, outputs, working-directory) and as expression text
  in ``if_expr``; the runtime renders them with ``ci_pool.core.workflow.expressions``. As
  in GitHub, an ``if_expr`` that calls no status function means ``success() && (...)``:
  the runtime adds that, and None means ``success()``.
- One extension: a job's ``if:`` may use ``matrix`` (GitHub evaluates it before expanding).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from ci_pool.core.capabilities import IGNORED_LABELS, Capability, route
from ci_pool.core.pipeline import (
    Pipeline,
    PipelineJob,
    WorkflowErrors,
    check_sizes,
    find_cycles,
    topological_order,
)
from ci_pool.core.specs import CheckoutSpec, JobSpec, StepSpec, check_ref
from ci_pool.core.workflow.contexts import (
    JOB_LEVEL,
    MISSING,
    PARSE_TIME,
    STEP_LEVEL,
    WORKFLOW_LEVEL,
    ValueReader,
)
from ci_pool.core.workflow.matrix import Strategy, cell_keys, label, read_strategies
from ci_pool.core.workflow.yaml_source import MarkedList, MarkedMap, Pos, Source, plain
from ci_pool.defaults import MAX_JOBS_PER_PIPELINE, MAX_SCRIPT_BYTES, MAX_STEPS
from ci_pool.exceptions import CapabilityNotFound, InputError, WorkflowError

__all__ = [
    "Pipeline",
    "PipelineJob",
    "WorkflowErrors",
    "parse_workflow",
    "topological_order",
    "validate_workflow",
]

WORKFLOW_KEYS = ("name", "on", "env", "defaults", "jobs")
JOB_KEYS = (
    "name", "runs-on", "needs", "if", "env", "timeout-minutes", "continue-on-error",
    "container", "strategy", "outputs", "steps",
)  # fmt: skip
STEP_KEYS = (
    "name", "id", "run", "shell", "working-directory", "env", "if", "timeout-minutes",
    "continue-on-error", "uses", "with",
)  # fmt: skip
CHECKOUT_STEP_KEYS = ("name", "id", "uses", "with")
CHECKOUT_INPUTS = ("fetch-depth", "submodules", "lfs", "ref")
CONTAINER_KEYS = ("image", "env", "options")
SHELLS = ("bash", "sh")

_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_IMAGE = re.compile(r"^[A-Za-z0-9][^\s]*$")
# Gitea also accepts the action's full URL.
_CHECKOUT = re.compile(r"^(?:https?://[^/\s]+/)?actions/checkout@\S+$")

# Known keys ci-pool does not support, by "<level>.<key>": why, and what to do instead.
_UNSUPPORTED = {
    "workflow.run-name": "run names are not supported; name the workflow with name",
    "workflow.permissions": "there is no GITHUB_TOKEN to scope; remove it",
    "workflow.concurrency": "concurrency groups are not supported; use ci-pool cancel",
    "job.permissions": "there is no GITHUB_TOKEN to scope; remove it",
    "job.concurrency": "concurrency groups are not supported; use strategy.max-parallel",
    "job.services": "service containers are not supported; start the service in a run: "
    "step, or run on a capability whose image provides it",
    "job.environment": "deployment environments are not supported; run on the deploy "
    "capability, whose secrets and allowed refs the operator configures",
    "job.uses": "reusable workflows are not supported; copy the called jobs into this file",
    "job.with": "with: belongs to reusable workflows, which are not supported",
    "job.secrets": "secrets: belongs to reusable workflows; capability secrets arrive as "
    "environment variables",
    "job.defaults": "defaults are supported at the top level only (defaults.run)",
    "container.credentials": "registry credentials are configured by the operator, not "
    "the workflow",
    "container.ports": "ports are not supported: job containers have no published ports",
    "container.volumes": "volumes are not supported: the workspace is the only mount",
}


def parse_workflow(
    text: str,
    file: str,
    capabilities: Mapping[str, Capability],
    max_jobs: int = MAX_JOBS_PER_PIPELINE,
) -> Pipeline:
    """The pipeline of a workflow file; raises WorkflowErrors listing every problem.

    ``max_jobs`` bounds the jobs it may have, matrix cells counted (``max_jobs_per_pipeline``).
    """
    pipeline, errors = _parse(text, file, capabilities, max_jobs)
    if errors or pipeline is None:
        raise WorkflowErrors(errors)
    return pipeline


def validate_workflow(
    text: str,
    file: str,
    capabilities: Mapping[str, Capability],
    max_jobs: int = MAX_JOBS_PER_PIPELINE,
) -> list[WorkflowError]:
    """Every problem of a workflow file, in file order; empty when it is valid."""
    return _parse(text, file, capabilities, max_jobs)[1]


def _keys(src: Source, data: MarkedMap, path: str, level: str, allowed: tuple[str, ...]) -> None:
    """Report unknown keys, explaining the ones GitHub has and ci-pool does not support."""
    why = {k.split(".", 1)[1]: v for k, v in _UNSUPPORTED.items() if k.startswith(level + ".")}
    src.check_keys(data, path, level, allowed, why)


def _list(value: Any, pos: Pos) -> list[tuple[Any, Pos]]:
    """A value that may be one item or a list of items, with positions."""
    if isinstance(value, MarkedList):
        return list(zip(value, value.pos, strict=True))
    return [(value, pos)]


# -- jobs --------------------------------------------------------------------------------

_Model = TypeVar("_Model", bound=BaseModel)


class _Container(NamedTuple):
    """The job's ``container:``: the image to run the steps in, its env and docker options."""

    image: str
    env: dict[str, str]
    options: str | None


@dataclass(frozen=True)
class _Workflow:
    """What every job of a file shares."""

    capabilities: Mapping[str, Capability]
    env: dict[str, str]
    shell: str
    working_directory: str | None
    #: Job id -> declared output names, for checking ``needs.<id>.outputs.<name>``.
    outputs: dict[str, frozenset[str]]


class _JobBuilder(ValueReader):
    """Builds the PipelineJob of one matrix cell of one workflow job."""

    def __init__(
        self,
        src: Source,
        wf: _Workflow,
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
        self.path = f"jobs.{job_id}"
        # Errors that depend on the matrix values say which cell they are about.
        self.cell_note = f" (matrix: {label(cell)})" if strategy.keys is not None else ""

    def build(self, key: str, needs: tuple[str, ...]) -> PipelineJob | None:
        d, p = self.data, self.path
        _keys(self.src, d, p, "job", JOB_KEYS)
        routed = self.runs_on()
        if_expr = self.condition(d, "if", f"{p}.if", JOB_LEVEL)
        env = {**self.wf.env, **self.env(d, "env", f"{p}.env", JOB_LEVEL)}
        container = self.container()
        steps, checkout = self.steps()
        self.step_ids = frozenset(s.id for s in steps if s.id)
        outputs = self.outputs()
        name = self.name(key)
        timeout = self.minutes(d, "timeout-minutes", f"{p}.timeout-minutes")
        continue_on_error = self.flag(d, "continue-on-error", f"{p}.continue-on-error")
        if not self.ok or routed is None:
            return None
        spec = self.model(
            JobSpec,
            p,
            self.pos,
            # Filled when the pipeline is submitted.
            repo="",
            name=name[:200],
            capability=routed[0],
            labels=routed[1],
            env={**container.env, **env} if container else env,
            timeout=timeout,
            image=container.image if container else None,
            checkout=checkout or CheckoutSpec(),
            steps=steps,
        )
        if spec is None:
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
        )

    def model(self, cls: type[_Model], where: str, pos: Pos, **fields: Any) -> _Model | None:
        """``cls(**fields)``, or None with the first problem reported at ``where``."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            self.error(f"{where}{loc}: {message}{self.cell_note}", pos)
            return None

    def name(self, key: str) -> str:
        if "name" not in self.data:
            return key
        raw = self.data["name"]
        name = self.text(raw, self.data.value_pos["name"], f"{self.path}.name", JOB_LEVEL)
        # Like GitHub: a name that does not show the matrix gets the cell's values appended.
        if self.strategy.keys is not None and "matrix" not in str(raw):
            name = f"{name} ({label(self.cell)})"
        return name

    def runs_on(self) -> tuple[str, tuple[str, ...]] | None:
        d, where = self.data, f"{self.path}.runs-on"
        caps = ", ".join(sorted(self.wf.capabilities))
        if "runs-on" not in d:
            self.error(f"{where}: is required; use the label of a capability: {caps}", self.pos)
            return None
        value, pos = d["runs-on"], d.value_pos["runs-on"]
        if isinstance(value, MarkedMap):
            self.error(
                f"{where}: runner groups are not supported; give a label or a list of labels", pos
            )
            return None
        labels: list[str] = []
        for item, ipos in _list(value, pos):
            known = self.known(item, ipos, where)
            # A matrix value may be a list of labels; a list written in place may not.
            items = known if isinstance(item, str) and isinstance(known, list) else [known]
            for label_ in items:
                if isinstance(label_, str) and label_:
                    labels.append(label_)
                elif label_ is not MISSING:
                    self.error(f"{where}: labels must be non-empty strings{self.cell_note}", ipos)
        if not self.ok:
            return None
        wanted = set(labels) - IGNORED_LABELS
        try:
            cap = route(self.wf.capabilities, labels=labels)
        except CapabilityNotFound:
            hosted = (
                " (ci-pool has no GitHub-hosted runners)"
                if any("-latest" in x for x in labels)
                else ""
            )
            self.error(
                f"{where}: no capability has the label(s) {', '.join(sorted(wanted))}"
                f"{self.cell_note}{hosted}; capabilities that exist: {caps}",
                pos,
            )
            return None
        except InputError:
            if not wanted:
                self.error(f"{where}: needs a label besides self-hosted: one of {caps}", pos)
            else:
                several = sorted(
                    c.name for c in self.wf.capabilities.values() if wanted <= c.label_set
                )
                self.error(
                    f"{where}: labels {', '.join(sorted(wanted))} match several capabilities"
                    f" ({', '.join(several)}){self.cell_note}; add the name of one",
                    pos,
                )
            return None
        return cap.name, tuple(labels)

    def container(self) -> _Container | None:
        d, where = self.data, f"{self.path}.container"
        if d.get("container") is None:
            return None
        value, pos = d["container"], d.value_pos["container"]
        env: dict[str, str] = {}
        options = None
        if isinstance(value, MarkedMap):
            _keys(self.src, value, where, "container", CONTAINER_KEYS)
            if "image" not in value:
                self.error(f"{where}: needs image:", pos)
                return None
            env = self.env(value, "env", f"{where}.env", PARSE_TIME)
            if "options" in value:
                options = self.known(
                    value["options"], value.value_pos["options"], f"{where}.options"
                )
                if not isinstance(options, str):
                    self.error(
                        f"{where}.options: must be a string of docker options",
                        value.value_pos["options"],
                    )
                    options = None
            value, pos, where = value["image"], value.value_pos["image"], f"{where}.image"
        image = self.known(value, pos, where)
        if image is MISSING:
            return None
        if not isinstance(image, str) or not _IMAGE.match(image):
            self.error(f"{where}: must be an image name such as debian:12{self.cell_note}", pos)
            return None
        return _Container(image, env, options)

    def steps(self) -> tuple[tuple[StepSpec, ...], CheckoutSpec | None]:
        where = f"{self.path}.steps"
        value = self.data.get("steps")
        if not isinstance(value, MarkedList) or not value:
            pos = self.data.value_pos.get("steps", self.pos)
            self.error(
                f"{where}: a job needs a list of steps (run: or uses: actions/checkout)", pos
            )
            return (), None
        if len(value) > MAX_STEPS:
            self.error(
                f"{where}: {len(value)} steps; the limit is {MAX_STEPS} per job",
                self.data.value_pos["steps"],
            )
            return (), None
        steps: list[StepSpec] = []
        checkout: CheckoutSpec | None = None
        ids: set[str] = set()
        for i, (step, pos) in enumerate(zip(value, value.pos, strict=True)):
            sp = f"{where}[{i}]"
            if not isinstance(step, MarkedMap):
                self.error(f"{sp}: a step must be a mapping with run: or uses:", pos)
                continue
            self.step_ids = frozenset(ids)
            if "uses" in step:
                if checkout is not None and _CHECKOUT.match(str(step["uses"])):
                    self.error(
                        f"{sp}.uses: a job has one checkout; remove this step",
                        step.value_pos["uses"],
                    )
                checkout = self.checkout(step, sp) or checkout
            elif "run" in step:
                built = self.run_step(step, sp, pos)
                if built is not None:
                    steps.append(built)
            else:
                self.error(f"{sp}: a step needs run: (or uses: actions/checkout@v4)", pos)
            step_id = step.get("id")
            if step_id is not None:
                if not isinstance(step_id, str) or not _ID.match(step_id):
                    self.error(
                        f"{sp}.id: must start with a letter or _ and contain only "
                        "letters, digits, - and _",
                        step.value_pos["id"],
                    )
                elif step_id in ids:
                    self.error(
                        f"{sp}.id: {step_id!r} is already the id of an earlier step",
                        step.value_pos["id"],
                    )
                ids.add(str(step_id))
        if not steps and self.ok:
            self.error(f"{where}: the job has no run: steps", self.data.value_pos["steps"])
        return tuple(steps), checkout

    def run_step(self, step: MarkedMap, sp: str, pos: Pos) -> StepSpec | None:
        _keys(self.src, step, sp, "step", STEP_KEYS)
        if "with" in step:
            self.error(f"{sp}.with: with: is only for uses: actions/checkout", step.key_pos["with"])
        run = step["run"]
        if not isinstance(run, str) or not run.strip():
            self.error(f"{sp}.run: must be a non-empty script", step.value_pos["run"])
            run = ""
        if len(run.encode("utf-8", "surrogatepass")) > MAX_SCRIPT_BYTES:
            self.error(
                f"{sp}.run: the script is over {MAX_SCRIPT_BYTES} bytes", step.value_pos["run"]
            )
            run = ""
        script = self.text(run, step.value_pos["run"], f"{sp}.run", STEP_LEVEL)
        name = f"Run {script.strip().splitlines()[0]}"[:200] if script.strip() else "run"
        if "name" in step:
            name = self.text(step["name"], step.value_pos["name"], f"{sp}.name", STEP_LEVEL)
        shell = self.wf.shell
        if "shell" in step:
            shell = self.known(step["shell"], step.value_pos["shell"], f"{sp}.shell")
            if shell is not MISSING and shell not in SHELLS:
                self.error(
                    f"{sp}.shell: {shell!r} is not supported; ci-pool runs bash or sh "
                    "(call other interpreters from the script)",
                    step.value_pos["shell"],
                )
        workdir = self.wf.working_directory
        if "working-directory" in step:
            wpos = step.value_pos["working-directory"]
            workdir = self.text(
                step["working-directory"], wpos, f"{sp}.working-directory", STEP_LEVEL
            )
        step_id = step.get("id")
        fields = {
            "name": name[:200],
            # A bad id or shell is reported on its own (by steps() or defaults).
            "id": step_id if isinstance(step_id, str) and _ID.match(step_id) else None,
            "run": script,
            "shell": shell if shell in SHELLS else None,
            "working_directory": workdir,
            "env": self.env(step, "env", f"{sp}.env", STEP_LEVEL),
            "if_expr": self.condition(step, "if", f"{sp}.if", STEP_LEVEL),
            "timeout": self.minutes(step, "timeout-minutes", f"{sp}.timeout-minutes"),
            "continue_on_error": self.flag(step, "continue-on-error", f"{sp}.continue-on-error"),
        }
        return self.model(StepSpec, sp, pos, **fields) if self.ok else None

    def checkout(self, step: MarkedMap, sp: str) -> CheckoutSpec | None:
        uses, upos = step["uses"], step.value_pos["uses"]
        if not isinstance(uses, str) or not _CHECKOUT.match(uses):
            self.error(
                f"{sp}.uses: action {uses!r} is not supported; ci-pool runs only run: steps "
                "and its built-in checkout (uses: actions/checkout@v4); install tools in a "
                "run: step or in the capability's image",
                upos,
            )
            return None
        for key in step:
            if key not in CHECKOUT_STEP_KEYS:
                self.error(
                    f"{sp}.{key}: the built-in checkout takes only {', '.join(CHECKOUT_STEP_KEYS)}",
                    step.key_pos[key],
                )
        options = step.get("with")
        if options is None:
            return CheckoutSpec()
        if not isinstance(options, MarkedMap):
            self.error(
                f"{sp}.with: must be a mapping of {', '.join(CHECKOUT_INPUTS)}",
                step.value_pos["with"],
            )
            return None
        values: dict[str, Any] = {}
        for key, raw in options.items():
            kwhere, vpos = f"{sp}.with.{key}", options.value_pos[key]
            if key not in CHECKOUT_INPUTS:
                self.error(
                    f"{kwhere}: not supported by the built-in checkout; it supports "
                    f"{', '.join(CHECKOUT_INPUTS)}",
                    options.key_pos[key],
                )
                continue
            value = self.known(raw, vpos, kwhere)
            if value is not MISSING:
                values[key.replace("-", "_")] = self.checkout_input(key, value, kwhere, vpos)
        return (
            self.model(CheckoutSpec, f"{sp}.with", step.value_pos["with"], **values)
            if self.ok
            else None
        )

    def checkout_input(self, key: str, value: Any, where: str, pos: Pos) -> Any:
        text = value.lower() if isinstance(value, str) else value
        if key == "fetch-depth":
            depth = int(text) if isinstance(text, str) and text.isdigit() else text
            if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 0:
                return depth
            self.error(f"{where}: must be a whole number (0 for the whole history)", pos)
        elif key == "ref":
            try:
                if isinstance(value, str):
                    return check_ref(value)
                self.error(f"{where}: must be a branch, tag or commit SHA", pos)
            except ValueError as exc:
                self.error(f"{where}: {exc}", pos)
        elif text in (True, False, "true", "false") or (
            key == "submodules" and text == "recursive"
        ):
            return text in (True, "true", "recursive")
        else:
            allowed = "true, false or recursive" if key == "submodules" else "true or false"
            self.error(f"{where}: must be {allowed}", pos)
        return None

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
            if not _ID.match(name):
                self.error(
                    f"{where}.{name}: names start with a letter or _ and contain only "
                    "letters, digits, - and _",
                    value.key_pos[name],
                )
        return {
            name: self.text(raw, value.value_pos[name], f"{where}.{name}", STEP_LEVEL)
            for name, raw in value.items()
        }


# -- the file ----------------------------------------------------------------------------


def _needs(src: Source, job_id: str, job: MarkedMap, job_ids: list[str]) -> list[str]:
    """The job ids a job needs; unknown ones are errors at the item that names them."""
    if "needs" not in job:
        return []
    where = f"jobs.{job_id}.needs"
    out: list[str] = []
    for need, pos in _list(job["needs"], job.value_pos["needs"]):
        if not isinstance(need, str):
            src.error(f"{where}: must be a job id or a list of job ids", pos)
        elif need == job_id:
            src.error(f"{where}: job {job_id!r} cannot need itself", pos)
        elif need not in job_ids:
            src.error(
                f"{where}: job {need!r} does not exist; jobs in this file: {', '.join(job_ids)}",
                pos,
            )
        elif need not in out:
            out.append(need)
    return out


def _defaults(src: Source, data: MarkedMap) -> tuple[str, str | None]:
    """``defaults.run``: the shell and working directory of every run: step."""
    value = data.get("defaults")
    if value is None:
        return "bash", None
    if not isinstance(value, MarkedMap):
        src.error("defaults: must be a mapping with run:", data.value_pos["defaults"])
        return "bash", None
    _keys(src, value, "defaults", "defaults", ("run",))
    run = value.get("run")
    if run is None:
        return "bash", None
    if not isinstance(run, MarkedMap):
        src.error(
            "defaults.run: must be a mapping with shell: and working-directory:",
            value.value_pos["run"],
        )
        return "bash", None
    _keys(src, run, "defaults.run", "defaults.run", ("shell", "working-directory"))
    shell = run.get("shell", "bash")
    if shell not in SHELLS:
        src.error(
            f"defaults.run.shell: {shell!r} is not supported; ci-pool runs bash or sh",
            run.value_pos["shell"],
        )
    workdir = run.get("working-directory")
    if workdir is not None and (not isinstance(workdir, str) or "${{" in workdir):
        src.error(
            "defaults.run.working-directory: must be a plain path",
            run.value_pos["working-directory"],
        )
    return str(shell), workdir if isinstance(workdir, str) else None


def _jobs(src: Source, data: MarkedMap) -> MarkedMap:
    jobs = data.get("jobs")
    if not isinstance(jobs, MarkedMap) or not jobs:
        pos = data.value_pos.get("jobs") or data.key_pos.get("jobs") or Pos(1, 1)
        src.error("jobs: a workflow needs a mapping of job ids to jobs", pos)
        return MarkedMap()
    for job_id, job in jobs.items():
        if not _ID.match(job_id):
            src.error(
                f"jobs.{job_id}: job ids start with a letter or _ and contain only letters, "
                "digits, - and _",
                jobs.key_pos[job_id],
            )
        if not isinstance(job, MarkedMap):
            src.error(
                f"jobs.{job_id}: must be a mapping with runs-on: and steps:", jobs.value_pos[job_id]
            )
    return jobs


def _parse(
    text: str, file: str, capabilities: Mapping[str, Capability], max_jobs: int
) -> tuple[Pipeline | None, list[WorkflowError]]:
    src = Source(file, text)
    data = src.load()
    if data is None and not src.errors:
        src.error("the workflow is empty; it needs jobs:", Pos(1, 1))
    if not isinstance(data, MarkedMap):
        if data is not None:
            src.error("a workflow must be a mapping with jobs:", Pos(1, 1))
        return None, src.errors
    _keys(src, data, "", "workflow", WORKFLOW_KEYS)
    name = data.get("name", file)
    if not isinstance(name, str):
        src.error("name: must be a string", data.value_pos["name"])
    on = plain(data.get("on"))
    if not (
        on is None
        or isinstance(on, str | dict)
        or (isinstance(on, list) and all(isinstance(e, str) for e in on))
    ):
        src.error("on: must be an event name, a list of them or a mapping", data.value_pos["on"])
    shell, workdir = _defaults(src, data)
    top = ValueReader(src, {})
    env = top.env(data, "env", "env", WORKFLOW_LEVEL)
    jobs = _jobs(src, data)
    ids = list(jobs)
    valid = {j: job for j, job in jobs.items() if isinstance(job, MarkedMap)}
    needs = {j: _needs(src, j, job, ids) for j, job in valid.items()}
    for cycle in find_cycles(needs):
        first = cycle[0]
        src.error(
            f"jobs.{first}.needs: jobs {' -> '.join([*cycle, first])} need each other in a "
            "cycle; remove one of these needs",
            valid[first].key_pos["needs"],
        )
    outputs = {
        j: frozenset(job["outputs"]) if isinstance(job.get("outputs"), MarkedMap) else frozenset()
        for j, job in valid.items()
    }
    wf = _Workflow(capabilities, env, shell, workdir, outputs)
    strategies = read_strategies(src, jobs, valid, max_jobs)
    if strategies is None:
        return None, src.errors
    keys = {j: cell_keys(j, s.cells, s.keys is not None) for j, s in strategies.items()}
    built: list[PipelineJob | None] = []
    for job_id, job in valid.items():
        # A needed job that is not a mapping is reported already; it has no cells.
        need_keys = tuple(k for n in needs[job_id] for k in keys.get(n, ()))
        strategy = strategies[job_id]
        for key, cell in zip(keys[job_id], strategy.cells, strict=True):
            pos = jobs.key_pos[job_id]
            builder = _JobBuilder(src, wf, job_id, job, pos, needs[job_id], strategy, cell)
            built.append(builder.build(key, need_keys))
    check_sizes(src, jobs, [j for j in built if j is not None])
    errors = src.errors
    if errors:
        return None, errors
    return Pipeline(str(name), file, on, tuple(j for j in built if j is not None)), []
