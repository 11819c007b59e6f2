"""Capabilities (what a runner can build) and the routing of labels to their queues."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ci_pool.defaults import GLOB_MAX_LENGTH
from ci_pool.exceptions import CapabilityNotFound, InputError

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_MEMORY = re.compile(r"^[0-9]+[bkmg]?$", re.IGNORECASE)
#: Labels every self-hosted runner answers to; ignored when routing.
IGNORED_LABELS = frozenset({"self-hosted"})


class Capability(BaseModel):
    """One kind of runner: its queue, image, execution mode and limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    queue: str
    image: str = ""
    mode: Literal["docker", "host"] = "docker"
    labels: tuple[str, ...] = ()
    cpus: float | None = Field(default=None, gt=0)
    memory: str | None = None
    pids_limit: int | None = Field(default=4096, gt=0)
    #: Docker network mode for the job container: "none" (default), "host", or a network name.
    network: str = "none"
    privileged: bool = False
    #: Containers a runner keeps created, started and idle for this capability's next
    #: jobs (each serves one job, then is removed); 0 creates one per job when it starts.
    warm_containers: int = Field(default=0, ge=0, le=8)
    default_timeout: int = Field(default=3600, gt=0)
    #: Whether a job may name its own image (``container:``); else the capability's image.
    allow_container_override: bool = False
    #: Secrets jobs of this capability may ask for: NAME -> "env:VAR" or "file:/path".
    #: Values are read on the runner at run time and never written to the store.
    secrets: dict[str, str] = Field(default_factory=dict)
    #: Repositories jobs may come from (globs over "org/name", or whole URLs when the
    #: pattern has "://"); None allows any, an empty list none.
    repos: tuple[str, ...] | None = None
    #: Refs jobs may build (globs over full refs: "refs/heads/main", "refs/tags/v*");
    #: None allows any ref, commit ids included.
    refs: tuple[str, ...] | None = None
    #: Submissions must be signed (HMAC, see ``signing_keys``) or come from a token limited
    #: to this capability; the local operator's CLI is exempt.
    require_signature: bool = False
    #: Actions (``uses: owner/repo@ref``, ``docker://image``) must be pinned to a full commit
    #: SHA (an image to a ``@sha256:`` digest); true by default on iso and deploy.
    require_pinned_actions: bool = False
    #: ``labels`` in ci-pool.toml add to a built-in capability's labels; true replaces them.
    replace_labels: bool = False
    #: A Node.js installation on the runner host (a directory holding ``bin/node``, such as
    #: ``/usr``) that JavaScript actions run with: mounted read-only into job containers,
    #: used as is in host mode. None: the ``node`` on the image's (or host's) PATH.
    node_runtime: str | None = None

    @field_validator("node_runtime")
    @classmethod
    def _absolute_runtime(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/") or ".." in value.split("/"):
            raise ValueError(
                f'{value!r} must be an absolute directory holding bin/node, such as "/usr"'
            )
        return value.rstrip("/") or "/"

    @field_validator("repos", "refs")
    @classmethod
    def _bounded_globs(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for pattern in value or ():
            if len(pattern) > GLOB_MAX_LENGTH:
                raise ValueError(
                    f"pattern {pattern[:40]!r}... is {len(pattern)} characters long; at most "
                    f"{GLOB_MAX_LENGTH} are accepted"
                )
        return value

    @field_validator("refs")
    @classmethod
    def _valid_refs(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for pattern in value or ():
            if not pattern.startswith("refs/"):
                raise ValueError(
                    f"ref pattern {pattern!r} must be a full ref: refs/heads/<branch> or "
                    "refs/tags/<tag> (a bare name could be a branch or a tag)"
                )
        return value

    @field_validator("secrets")
    @classmethod
    def _valid_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        for name, source in value.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"secret name {name!r} is not a valid environment variable name")
            kind, _, ref = source.partition(":")
            if kind not in ("env", "file") or not ref:
                raise ValueError(f"secret {name!r}: source must be 'env:VAR' or 'file:/path'")
        return value

    @field_validator("name", "queue")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be lower-case letters, digits, '.', '_' or '-' (at most 63 characters)"
            )
        return value

    @field_validator("memory")
    @classmethod
    def _valid_memory(cls, value: str | None) -> str | None:
        if value is not None and not _MEMORY.match(value):
            raise ValueError("must be a size such as '512m' or '4g'")
        return value

    def allows_image(self, image: str) -> bool:
        """Whether jobs (and their actions) may run ``image``: the capability's own, or any
        where ``allow_container_override`` is set."""
        return self.allow_container_override or _tagged(image) == _tagged(self.image)

    @property
    def label_set(self) -> frozenset[str]:
        """Labels this capability answers to (lower-case), its own name included."""
        return frozenset(label.lower() for label in (self.name, *self.labels))


def _tagged(image: str) -> str:
    """``name`` as ``name:latest``, as Docker reads an image without a tag or digest."""
    if not image or "@" in image or ":" in image.rsplit("/", 1)[-1]:
        return image
    return f"{image}:latest"


#: Protected branches and release tags: what the privileged capabilities build by default.
STRICT_REFS = (
    "refs/heads/main",
    "refs/heads/master",
    "refs/heads/release/*",
    "refs/tags/v*",
)
#: ``iso`` (privileged) and ``deploy`` (holds keys) build no repository until the operator
#: lists it, only protected refs, and only signed or specially scoped submissions.
_STRICT: dict[str, Any] = {
    "repos": [],
    "refs": list(STRICT_REFS),
    "require_signature": True,
    "require_pinned_actions": True,
}

DEFAULT_CAPABILITIES: dict[str, dict[str, Any]] = {
    "linux": {"image": "ci-pool/linux:latest", "labels": ["linux", "x64"]},
    "android": {"image": "ci-pool/android:latest", "labels": ["android"], "memory": "8g"},
    "flutter-web": {"image": "ci-pool/flutter-web:latest", "labels": ["flutter", "web"]},
    "iso": {
        "mode": "host",
        "labels": ["iso", "privileged"],
        "privileged": True,
        "default_timeout": 7200,
        **_STRICT,
    },
    "deploy": {
        "image": "ci-pool/deploy:latest",
        "labels": ["deploy"],
        "network": "host",
        **_STRICT,
    },
    # Checks that build nothing to ship (licence, dependency and security audits).
    "audit": {"image": "ci-pool/linux:latest", "labels": ["audit"]},
}


def merge_capabilities(overrides: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Lay the configured capability tables over the built-in defaults.

    ``labels`` given for a built-in capability add to its own (so ``labels = ["gpu"]`` on
    linux still routes ``linux`` and ``x64``); ``replace_labels = true`` replaces them."""
    merged = {name: {"name": name, "queue": name, **d} for name, d in DEFAULT_CAPABILITIES.items()}
    for name, table in (overrides or {}).items():
        if isinstance(table, Capability):
            table = table.model_dump()
        if not isinstance(table, Mapping):
            raise ValueError(f"capabilities.{name} must be a table")
        table = dict(table)
        builtin = DEFAULT_CAPABILITIES.get(name, {}).get("labels", [])
        labels = table.get("labels")
        if builtin and isinstance(labels, list | tuple) and not table.get("replace_labels"):
            table["labels"] = [*builtin, *(x for x in labels if x not in builtin)]
        merged.setdefault(name, {"name": name, "queue": name}).update(table)
        merged[name]["name"] = name
    return merged


def _toml_hint(capabilities: Mapping[str, Capability], wanted: frozenset[str]) -> str:
    """How to route ``wanted`` labels: the ci-pool.toml lines that map them."""
    # The capability that already has the most of them is the likely home of the rest;
    # GitHub's Linux runner labels (ubuntu-latest, ubuntu-24.04) belong on linux.
    best = max(
        sorted(capabilities.values(), key=lambda c: c.name),
        key=lambda c: len(wanted & c.label_set),
        default=None,
    )
    name, missing = "<name>", sorted(wanted)
    if best is not None and wanted & best.label_set:
        name, missing = best.name, sorted(wanted - best.label_set)
    elif "linux" in capabilities and any(x.startswith(("ubuntu", "debian")) for x in wanted):
        name = "linux"
    listed = ", ".join(f'"{x}"' for x in missing)
    return (
        f"; to route it, map the label in ci-pool.toml: [capabilities.{name}] "
        f"labels = [{listed}] (labels add to the capability's own)"
    )


def route(
    capabilities: Mapping[str, Capability],
    capability: str | None = None,
    labels: Iterable[str] = (),
    default: str | None = None,
) -> Capability:
    """Pick the capability for a job from its name and/or labels (case-insensitive).

    A job labelled only ``self-hosted`` goes to ``default`` when there is one; nothing
    else ever falls back to a default."""
    given = frozenset(label.lower() for label in labels)
    wanted = given - IGNORED_LABELS
    if capability is not None:
        cap = capabilities.get(capability.lower())
        if cap is None:
            raise CapabilityNotFound(capability, list(capabilities))
        missing = wanted - cap.label_set
        if missing:
            raise InputError(
                f"capability {capability!r} does not have label(s) {sorted(missing)}; "
                f"its labels are {sorted(cap.label_set)}",
                field="labels",
            )
        return cap
    if not wanted:
        if given and default is not None:
            if default not in capabilities:
                raise CapabilityNotFound(default, list(capabilities))
            return capabilities[default]
        if given:
            raise InputError(
                "needs a label besides self-hosted: one of "
                f"{', '.join(sorted(capabilities))}; or route such jobs with "
                'default_capability = "<name>" at the top of ci-pool.toml',
                field="labels",
            )
        raise InputError("give a capability or at least one label", field="capability")
    # An exact name match wins; otherwise exactly one capability must carry every label.
    matches = [c for c in capabilities.values() if wanted <= c.label_set]
    named = [c for c in matches if c.name in wanted]
    if len(named) == 1:
        return named[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CapabilityNotFound(
            "labels " + ",".join(sorted(wanted)),
            list(capabilities),
            hint=_toml_hint(capabilities, wanted),
        )
    raise InputError(
        f"labels {', '.join(sorted(wanted))} match several capabilities "
        f"({', '.join(sorted(c.name for c in matches))}); add the name of one to the labels",
        field="labels",
    )
