"""Job specs as submitted, job states, and the one table of allowed transitions."""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ci_pool import defaults as d
from ci_pool.core.actions import parse_uses
from ci_pool.core.names import SCP_LIKE, check_env_names, check_ref, check_repo_url
from ci_pool.core.runner_names import check_runner_glob
from ci_pool.core.services import ContainerSpec, ServiceSpec
from ci_pool.core.sync import SyncSource
from ci_pool.core.workflow import expressions
from ci_pool.exceptions import InputError


class JobState(str, Enum):
    """Where a job is. Comments say what may follow each state."""

    BLOCKED = "blocked"  # -> queued, skipped, cancelled, failed (a bad dynamic matrix)
    QUEUED = "queued"  # -> running, rejected, cancelled, error (broker down at submit)
    RUNNING = "running"  # -> succeeded, failed, timed_out, cancelled, error
    SUCCEEDED = "succeeded"  # final
    FAILED = "failed"  # final
    TIMED_OUT = "timed_out"  # final
    CANCELLED = "cancelled"  # final
    ERROR = "error"  # -> queued while attempts remain, cancelled
    REJECTED = "rejected"  # final
    SKIPPED = "skipped"  # final

    @property
    def is_final(self) -> bool:
        return not TRANSITIONS[self] or self is JobState.ERROR

    def __str__(self) -> str:
        return self.value


class PipelineState(str, Enum):
    """Where a pipeline is: running until every job has ended, then its result."""

    RUNNING = "running"  # -> succeeded, failed, cancelled (and running again on retry)
    SUCCEEDED = "succeeded"  # final
    FAILED = "failed"  # final
    CANCELLED = "cancelled"  # final
    REJECTED = "rejected"  # final: policy refused a job of it before anything ran

    def __str__(self) -> str:
        return self.value


TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.BLOCKED: frozenset(
        {JobState.QUEUED, JobState.SKIPPED, JobState.CANCELLED, JobState.FAILED}
    ),
    JobState.QUEUED: frozenset(
        {JobState.RUNNING, JobState.REJECTED, JobState.CANCELLED, JobState.ERROR}
    ),
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.TIMED_OUT,
            JobState.CANCELLED,
            JobState.ERROR,
        }
    ),
    JobState.ERROR: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.TIMED_OUT: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.REJECTED: frozenset(),
    JobState.SKIPPED: frozenset(),
}

FINAL_STATES = frozenset(s for s in JobState if s.is_final)

#: The operator's moves (``retry``): a job that ended badly goes back to ``queued`` (a job of
#: its own) or ``blocked`` (a pipeline job, until its needs are met again). Rejected jobs stay
#: rejected: a retry is not a way around policy.
RETRY_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    state: frozenset({JobState.QUEUED, JobState.BLOCKED})
    for state in (
        JobState.FAILED,
        JobState.TIMED_OUT,
        JobState.CANCELLED,
        JobState.ERROR,
        JobState.SKIPPED,
    )
}

#: Exit code of ``ci-pool wait`` for jobs that did not run to an exit code of their own.
WAIT_EXIT_CODES: dict[JobState, int] = {
    JobState.SUCCEEDED: 0,
    JobState.TIMED_OUT: 124,
    JobState.CANCELLED: 130,
    JobState.ERROR: 3,
    JobState.REJECTED: 2,
    JobState.SKIPPED: 1,
}


def sources_of(target: JobState, *, operator: bool = False) -> frozenset[JobState]:
    """States from which ``target`` may be reached (by the operator's retry, with
    ``operator``)."""
    table = RETRY_TRANSITIONS if operator else TRANSITIONS
    return frozenset(s for s, nxt in table.items() if target in nxt)


#: Validation context of values read back from the store.
STORED = "stored"


_FILTER = re.compile(r"^(?:blob:none|blob:limit=[0-9]{1,12}[kmg]?|tree:[0-9]{1,6})$")
#: ``owner/name`` (more parts allowed, as Gitea subgroups): a repository on the job's server.
_REPO_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(?:/[A-Za-z0-9_][A-Za-z0-9._-]*)+$")


def check_workspace_path(path: str) -> str:
    """A directory relative to the workspace that cannot leave it: no absolute path, no
    ``~``, no ``..`` part. ``""`` (or ``.``) is the workspace itself."""
    if any(c < " " or c == "\x7f" for c in path) or "\\" in path:
        raise ValueError(f"{path!r} must be a plain relative path (no control characters or \\)")
    if path.startswith(("/", "~")):
        raise ValueError(
            f"{path!r} is absolute; give a path relative to the workspace, such as src/lib"
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{path!r} climbs out of the workspace ('..'); give a path inside it")
    if len(path) > 500:
        raise ValueError("the path is over 500 characters")
    return "/".join(parts)


def check_checkout_ref(ref: str) -> str:
    """A checkout ref: a literal ref (``check_ref``) or a ``${{ }}`` template the runner
    renders and checks then."""
    if "${{" in ref:
        expressions.parse_template(ref)
        return ref
    return check_ref(ref)


class CheckoutSpec(BaseModel):
    """One checkout (``uses: actions/checkout``): which repository and commit, how much of
    it (defaults: one commit, no blobs up front), and where in the workspace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Commits of history; 0 means the whole history.
    fetch_depth: int = Field(default=1, ge=0, le=2**31 - 1)
    #: ``true`` and ``recursive`` both mean submodules, recursively.
    submodules: bool = False
    lfs: bool = False
    #: Resolved and checked out instead of the job's commit; None keeps the job's commit
    #: (or the default branch of another ``repository``). May be a ``${{ }}`` template.
    ref: str | None = Field(default=None, max_length=1000)
    #: Another repository: ``owner/name`` on the job's git server, or a URL on a host in
    #: ``git_hosts``. None is the job's own repository.
    repository: str | None = Field(default=None, max_length=1000)
    #: Directory inside the workspace ("" is the workspace itself).
    path: str = ""
    #: Partial clone filter (``blob:none``, ``blob:limit=1m``, ``tree:0``); None: the pool's.
    filter: str | None = None
    sparse_checkout: tuple[Annotated[str, Field(min_length=1, max_length=1000)], ...] = Field(
        default=(), max_length=d.MAX_SPARSE_PATTERNS
    )
    sparse_checkout_cone_mode: bool = True
    #: Leave a job-scoped credential helper for the clone credential in the repository's
    #: git config (removed with the job's directory).
    persist_credentials: bool = False
    #: Empty the target directory before checking out.
    clean: bool = True
    #: The submitter's local changes, applied on (``patch``) or instead of (``snapshot``)
    #: the job's own checkout (``submit/run --sync``).
    sync: SyncSource | None = None

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or (info.context or {}).get(STORED):
            return value
        return check_checkout_ref(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_workspace_path(value)

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: str | None) -> str | None:
        if value is not None and not _FILTER.match(value):
            raise ValueError(
                f"{value!r} is not a filter ci-pool passes to git; use blob:none, "
                "blob:limit=<n>[kmg] or tree:<depth>"
            )
        return value

    @field_validator("sparse_checkout")
    @classmethod
    def _sparse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if pattern.startswith("-") or any(c < " " for c in pattern):
                raise ValueError(
                    f"{pattern!r}: sparse-checkout patterns are paths, one per line, not "
                    "starting with '-'"
                )
        return value

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is None or _REPO_PATH.match(value):
            return value
        # A URL: its form here, its host against git_hosts when submitted.
        check_repo_url(value, allow_local=False)
        return value

    def repo_url(self, job_repo: str) -> str:
        """The URL this checkout fetches: the job's repository, ``owner/name`` on the job's
        server, or the URL given."""
        name = self.repository
        if name is None:
            return job_repo
        if not _REPO_PATH.match(name):
            return name
        suffix = ".git" if job_repo.endswith(".git") and not name.endswith(".git") else ""
        if "://" in job_repo:
            parts = urlsplit(job_repo)
            return urlunsplit((parts.scheme, parts.netloc, f"/{name}{suffix}", "", ""))
        if SCP_LIKE.match(job_repo):
            return f"{job_repo.split(':', 1)[0]}:{name}{suffix}"
        raise ValueError(
            f"repository {name!r} is relative to the job's git server, and the job's "
            "repository is a local path; give a full URL"
        )


class StepSpec(BaseModel):
    """One step of a job, as parsed from a workflow or submitted on its own: a shell script
    (``run``), a checkout (``checkout``) or an action (``uses``), exactly one of them.

    Strings may still hold ``${{ }}`` templates (``run``, env values, ``working_directory``,
    the checkout's ``ref``); the runner renders them. ``if_expr`` is an expression: None
    means ``success()``, and one that calls no status function means ``success() && (...)``,
    as in GitHub."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="run", max_length=200)
    #: Set to read the step's outputs and outcome as ``steps.<id>``.
    id: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$", max_length=100)
    run: str = Field(default="", max_length=d.MAX_SCRIPT_BYTES)
    checkout: CheckoutSpec | None = None
    #: An action other than the checkout, as written (``owner/repo@ref``, ``./path``,
    #: ``docker://image``); ``core.actions.parse_uses`` reads it.
    uses: str | None = Field(default=None, max_length=1000)
    #: The action's ``with:`` inputs, as templates the runner renders.
    inputs: dict[
        Annotated[str, Field(min_length=1, max_length=100)],
        Annotated[str, Field(max_length=d.MAX_SCRIPT_BYTES)],
    ] = Field(default_factory=dict, max_length=100)
    #: None runs bash where the image has it, else sh.
    shell: Literal["bash", "sh"] | None = None
    working_directory: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    if_expr: str | None = None
    timeout: int | None = Field(default=None, gt=0)
    continue_on_error: bool = False

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        return check_env_names(value)

    @field_validator("if_expr")
    @classmethod
    def _if_expr(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Rows read back from the store were checked when written; the runner reports an
        # expression it cannot evaluate.
        if value is not None and not (info.context or {}).get(STORED):
            expressions.parse(value)  # an ExpressionError is a ValueError naming the problem
        return value

    @field_validator("uses")
    @classmethod
    def _uses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_uses(value)  # a ValueError says what is wrong
        return value

    @model_validator(mode="after")
    def _kind(self) -> StepSpec:
        kinds = sum((bool(self.run), self.checkout is not None, self.uses is not None))
        if kinds == 0:
            raise ValueError("run: a step needs a non-empty script (or a checkout or uses:)")
        if kinds > 1:
            raise ValueError("a step is one of run:, a checkout or uses:, not several")
        if self.inputs and self.uses is None:
            raise ValueError("with: inputs belong to uses: steps")
        return self


#: ``permissions:`` as recorded: scope -> level; ``read-all``/``write-all`` are ``{"*": ...}``.
Permissions = dict[
    Annotated[str, Field(pattern=r"^(\*|[a-z][a-z-]{0,63})$")], Literal["read", "write", "none"]
]


class EnvironmentSpec(BaseModel):
    """A job's ``environment:`` (a deployment environment), recorded and shown. Policy may
    bind secrets to it (``core.policy.environment_secret_names``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    url: str | None = Field(default=None, max_length=2000)


def check_artifact_glob(pattern: str) -> str:
    """A glob relative to the workspace that cannot climb out of it."""
    if not pattern or pattern.startswith(("/", "~")) or "\\" in pattern:
        raise ValueError(f"{pattern!r} must be a path relative to the workspace")
    if any(part == ".." for part in pattern.split("/")):
        raise ValueError(f"{pattern!r} must not contain '..'")
    return pattern


class JobSpec(BaseModel):
    """A job as submitted: where the code is, what to run, and where to run it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repo: str
    ref: str = "HEAD"
    capability: str | None = None
    labels: tuple[str, ...] = Field(default=(), max_length=d.MAX_LABELS)
    steps: tuple[StepSpec, ...] = Field(min_length=1, max_length=d.MAX_STEPS)
    env: dict[str, str] = Field(default_factory=dict, max_length=d.MAX_ENV_ENTRIES)
    timeout: int | None = Field(default=None, gt=0)
    name: str = Field(default="", max_length=200)
    #: Names of capability secrets the job receives as environment variables.
    secrets: tuple[Annotated[str, Field(max_length=200)], ...] = Field(
        default=(), max_length=d.MAX_SECRETS
    )
    #: Globs (relative to the workspace) collected as artifacts after the steps.
    artifacts: tuple[Annotated[str, Field(max_length=1000)], ...] = Field(
        default=(), max_length=d.MAX_ARTIFACT_PATTERNS
    )
    #: Image override; only where the capability allows it.
    image: str | None = Field(default=None, min_length=1, max_length=500)
    #: The implicit checkout before the first step, for a job none of whose steps is a
    #: checkout (a job submitted on its own; a workflow job without actions/checkout).
    checkout: CheckoutSpec = Field(default_factory=CheckoutSpec)
    #: ``permissions:`` of the job (or the workflow's), recorded; None when not given.
    permissions: Permissions | None = None
    environment: EnvironmentSpec | None = None
    #: Sidecar containers (``services:``), each on the job's own network.
    services: tuple[ServiceSpec, ...] = Field(default=(), max_length=d.MAX_SERVICES)
    #: ``container:`` options, workspace volumes and registry login for ``image``.
    container: ContainerSpec | None = None
    #: Glob over runner names (``client-acme-*``): the job runs only on a live runner of
    #: its capability whose name matches; None: any runner of the capability.
    runner: str | None = Field(default=None, max_length=d.RUNNER_GLOB_MAX_LENGTH)

    @field_validator("runner")
    @classmethod
    def _runner(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check_runner_glob(value)
        except InputError as exc:
            raise ValueError(str(exc).removeprefix("runner: ")) from None

    @property
    def checks_out_in_steps(self) -> bool:
        """Whether the job's checkouts are steps of their own (then ``checkout`` is unused)."""
        return any(step.checkout is not None for step in self.steps)

    @field_validator("artifacts")
    @classmethod
    def _artifacts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_artifact_glob(p) for p in value)

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        return value if value == "HEAD" else check_ref(value)

    @field_validator("services")
    @classmethod
    def _services(cls, value: tuple[ServiceSpec, ...]) -> tuple[ServiceSpec, ...]:
        names = [s.name.lower() for s in value]
        if len(set(names)) != len(names):
            raise ValueError("two services have the same name")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        return check_env_names(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for label in value:
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", label):
                raise ValueError(f"{label!r} is not a valid label")
        return value


def _nul_at(value: object, path: str) -> str | None:
    """The path of the first string holding a NUL character, if any."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items: list[tuple[object, object]] = []
    if isinstance(value, dict):
        items = [(k, k) for k in value] + list(value.items())
    elif isinstance(value, list | tuple):
        items = list(enumerate(value))
    for key, item in items:
        found = _nul_at(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def check_spec_bounds(data: dict[str, object]) -> None:
    """The bounds no single field states: the whole spec's size, and no NUL anywhere."""
    size = len(json.dumps(data, default=str).encode())
    if size > d.MAX_JOB_SPEC_BYTES:
        raise InputError(
            f"the job spec is {size} bytes as JSON; the limit is {d.MAX_JOB_SPEC_BYTES}",
            field="steps",
        )
    field = _nul_at(data, "")
    if field is not None:
        raise InputError("must not contain a NUL character", field=field or None)


def parse_job_spec(data: dict[str, object], *, allow_local_repos: bool) -> JobSpec:
    """Validate raw input into a JobSpec; every problem is an InputError naming the field."""
    check_spec_bounds(data)
    try:
        spec = JobSpec.model_validate(data)
        check_repo_url(spec.repo, allow_local=allow_local_repos)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InputError(err["msg"].removeprefix("Value error, "), field=field) from None
    except ValueError as exc:
        raise InputError(str(exc), field="repo") from None
    return spec
