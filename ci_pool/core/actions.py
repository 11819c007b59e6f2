"""Action references (``uses:``) and action definitions (``action.yml``), as text: what a
step names and what the action declares. Fetching and running them is the runner's."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ci_pool.core.names import check_ref

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
