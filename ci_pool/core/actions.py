"""Action references (``uses:``) and action definitions (``action.yml``), as text: what a
step names and what the action declares. Fetching and running them is the runner's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ci_pool.core.names import check_ref, is_sha
from ci_pool.core.workflow.yaml_source import MarkedMap, Pos, Source, plain
from ci_pool.exceptions import ActionError

#: ``owner/repo`` or ``owner/repo/sub/path`` before the ``@ref``.
_REMOTE = re.compile(
    r"^(?P<owner>[A-Za-z0-9_][A-Za-z0-9._-]{0,99})/(?P<repo>[A-Za-z0-9_][A-Za-z0-9._-]{0,99})"
    r"(?P<path>(?:/[A-Za-z0-9_.][A-Za-z0-9._-]{0,99}){0,10})@(?P<ref>[^\s@]{1,255})$"
)
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")

ActionKind = Literal["local", "remote", "docker"]


@dataclass(frozen=True, slots=True)
class ActionRef:
    """What ``uses:`` names: a local action (``./path`` in the workspace), a repository
    action (``owner/repo[/path]@ref``, from ``actions_url`` or a given ``https://`` host),
    or a container image (``docker://image``)."""

    kind: ActionKind
    #: local: the directory relative to the workspace; remote: the directory in the repository
    #: ("" for its root).
    path: str = ""
    owner: str = ""
    repo: str = ""
    ref: str = ""
    #: ``https://host`` when ``uses:`` gave a full URL; None means the pool's ``actions_url``.
    base_url: str | None = None
    #: docker: the image as given after ``docker://``.
    image: str = ""

    @property
    def name(self) -> str:
        """``owner/repo`` in lower case: how built-in actions are looked up."""
        return f"{self.owner}/{self.repo}".lower()

    def __str__(self) -> str:
        if self.kind == "local":
            return f"./{self.path}"
        if self.kind == "docker":
            return f"docker://{self.image}"
        sub = f"/{self.path}" if self.path else ""
        base = f"{self.base_url}/" if self.base_url else ""
        return f"{base}{self.owner}/{self.repo}{sub}@{self.ref}"


def parse_uses(text: str) -> ActionRef:
    """Read a ``uses:`` value; a ValueError says what is wrong and what is accepted."""
    accepted = (
        "give owner/repo@ref, owner/repo/path@ref, https://host/owner/repo@ref, "
        "./path/in/the/workspace or docker://image"
    )
    if not text or len(text) > 1000 or any(c < " " or c == "\x7f" for c in text):
        raise ValueError(f"{text[:100]!r} is not an action reference; {accepted}")
    if "${{" in text:
        raise ValueError("uses: cannot hold an expression; name the action literally")
    if text.startswith("./"):
        parts = [p for p in text[2:].split("/") if p not in ("", ".")]
        if ".." in parts or "\\" in text:
            raise ValueError(f"{text!r} climbs out of the workspace; {accepted}")
        return ActionRef("local", path="/".join(parts))
    if text.startswith("docker://"):
        image = text.removeprefix("docker://")
        if not _IMAGE.match(image):
            raise ValueError(f"{text!r}: not an image name; {accepted}")
        return ActionRef("docker", image=image)
    base_url = None
    rest = text
    if text.startswith(("https://", "http://")):
        scheme, _, tail = text.partition("://")
        host, _, rest = tail.partition("/")
        if not _HOST.match(host):
            raise ValueError(f"{text!r}: {host!r} is not a host name; {accepted}")
        base_url = f"{scheme}://{host}"
    m = _REMOTE.match(rest)
    if m is None:
        raise ValueError(f"{text!r} is not an action reference; {accepted}")
    path = m["path"].strip("/")
    if any(p in (".", "..") for p in path.split("/")):
        raise ValueError(f"{text!r}: the action's path cannot hold . or ..; {accepted}")
    try:
        ref = check_ref(m["ref"])
    except ValueError as exc:
        raise ValueError(f"{text!r}: the ref {exc}") from None
    return ActionRef(
        "remote", path=path, owner=m["owner"], repo=m["repo"], ref=ref, base_url=base_url
    )


def pin_problem(ref: ActionRef) -> str | None:
    """Why ``ref`` is not pinned to content that cannot change (None when it is): a
    repository action needs a full commit SHA, an image a ``@sha256:`` digest."""
    if ref.kind == "remote" and not is_sha(ref.ref):
        return (
            f"{ref} is not pinned: this capability runs actions only at a full commit SHA "
            f"(require_pinned_actions); write {ref.owner}/{ref.repo}@<40-hex commit>"
        )
    if ref.kind == "docker" and "@sha256:" not in ref.image:
        return (
            f"{ref} is not pinned: this capability runs images only by digest "
            "(require_pinned_actions); write docker://image@sha256:<digest>"
        )
    return None


#: ``runs.using`` values ci-pool runs.
USING = ("composite", "node16", "node20", "node24", "docker")
#: How deep composite actions may call other actions.
MAX_ACTION_DEPTH = 8


class ActionInput(BaseModel):
    """One of ``inputs:`` in action.yml."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    description: str = ""
    default: str | None = None
    required: bool = False
    deprecation_message: str | None = Field(default=None, alias="deprecationMessage")

    @field_validator("default", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _scalar_text(value)


class ActionOutput(BaseModel):
    """One of ``outputs:``: a composite action's ``value`` is a template over its steps."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    description: str = ""
    value: str | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _scalar_text(value)


class ActionRuns(BaseModel):
    """``runs:``: how the action runs."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    using: str
    #: node*: the scripts, relative to the action's directory.
    main: str | None = None
    pre: str | None = None
    post: str | None = None
    pre_if: str | None = Field(default=None, alias="pre-if")
    post_if: str | None = Field(default=None, alias="post-if")
    #: docker: ``Dockerfile`` (relative) or ``docker://image``.
    image: str | None = None
    args: tuple[str, ...] = ()
    entrypoint: str | None = None
    pre_entrypoint: str | None = Field(default=None, alias="pre-entrypoint")
    post_entrypoint: str | None = Field(default=None, alias="post-entrypoint")
    env: dict[str, str] = Field(default_factory=dict)
    #: composite: the steps as written (the runner reads them as a job's steps).
    steps: tuple[dict[str, Any], ...] = ()

    @field_validator("using", mode="before")
    @classmethod
    def _using(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() not in USING:
            raise ValueError(
                f"{value!r} is not supported; ci-pool runs actions using {', '.join(USING)}"
            )
        return value.lower() if isinstance(value, str) else value

    @field_validator("args", mode="before")
    @classmethod
    def _args(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [_scalar_text(v) for v in value]
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): _scalar_text(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _fields(self) -> ActionRuns:
        if self.using.startswith("node") and not self.main:
            raise ValueError(f"runs.main is required for using: {self.using}")
        if self.using == "docker" and not self.image:
            raise ValueError("runs.image is required for using: docker")
        if self.using == "composite" and not self.steps:
            raise ValueError("runs.steps is required for using: composite")
        for name in ("main", "pre", "post"):
            script = getattr(self, name)
            if script is not None and _climbs(script):
                raise ValueError(f"runs.{name}: {script!r} must be a path inside the action")
        return self


class ActionDefinition(BaseModel):
    """An action's ``action.yml`` (or ``action.yaml``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = ""
    description: str = ""
    inputs: dict[str, ActionInput] = Field(default_factory=dict)
    outputs: dict[str, ActionOutput] = Field(default_factory=dict)
    runs: ActionRuns


def _scalar_text(value: Any) -> Any:
    """YAML scalars as the text an action sees (``true``, ``3``), others unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _climbs(path: str) -> bool:
    return path.startswith("/") or ".." in path.replace("\\", "/").split("/")


def read_definition(text: str, file: str) -> ActionDefinition:
    """Read action.yml text; an ActionError names the file, line and what is wrong."""
    src = Source(file, text)
    data = src.load()
    if src.errors:
        raise ActionError(str(src.errors[0]))
    if not isinstance(data, MarkedMap):
        raise ActionError(f"{file}: an action file must be a mapping with runs:")
    try:
        return ActionDefinition.model_validate(plain(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"]]
        pos = _position(data, loc)
        where = f"{file}:{pos.line}:{pos.column}" if pos else file
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ActionError(f"{where}: {'.'.join(loc)}: {message}") from None


def _position(data: MarkedMap, loc: list[str]) -> Pos | None:
    """Where the value at ``loc`` is in the file (its closest parent's when not found)."""
    node: Any = data
    pos = None
    for part in loc:
        if isinstance(node, MarkedMap) and part in node:
            pos = node.value_pos.get(part, pos)
            node = node[part]
        else:
            break
    return pos
