"""Runner names: host-qualified, unique pool-wide, and the globs that send a job to some of
them (pure: no Redis, no store).

A runner's name is ``<host>-<capability>-<n>`` by default, or what the operator's
``runner_name_pattern`` renders (``{client}-{env}-{role}-{n}``), lower-cased and reduced to
``RUNNER_NAME``: 1-63 of ``a-z 0-9 . -``, starting with a letter or digit (the rule the
store's registered identities keep). A job's ``runner`` glob (``client-acme-*``) matches
names in full, in linear time, in GitHub's filter syntax (``ci_pool.core.globs``): ``*`` any
run of characters, ``[a-c]`` a class, ``?``/``+`` after a character make it
optional/repeatable.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Mapping

from ci_pool import defaults as d
from ci_pool.core.globs import compile_glob
from ci_pool.exceptions import InputError

RUNNER_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
_BAD = re.compile(r"[^a-z0-9.-]+")
_GLOB_CHARS = re.compile(r"^[a-z0-9.*?+\[\]!-]+$")
#: The values every pattern may use besides the operator's ``runner_name_values``.
BUILT_IN_FIELDS = ("host", "capability", "cap", "n")


def sanitize(text: str) -> str:
    """``text`` lower-cased, each run of other characters made one ``-``, trimmed of
    leading/trailing ``-`` and ``.``."""
    return _BAD.sub("-", text.lower()).strip("-.")


def check_name(name: str) -> str:
    """A runner name as given (``--name``, ``runner_id``); ValueError saying what is wrong."""
    if not RUNNER_NAME.match(name):
        raise ValueError(
            f"{name[:80]!r} is not a runner name: use 1-63 of a-z, 0-9, '.' and '-', "
            "starting with a letter or digit (like build1-linux-1)"
        )
    return name


def pattern_fields(pattern: str) -> list[str]:
    """The ``{field}`` names of a pattern (ValueError for broken braces)."""
    try:
        return [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        raise ValueError(f"runner_name_pattern {pattern!r}: {exc}") from None


def render_name(pattern: str, host: str, capability: str, n: int, values: Mapping[str, str]) -> str:
    """The name ``pattern`` gives runner ``n`` of ``capability`` on ``host``.

    Each value is sanitized before it is put in, and the result checked; a field with no
    value is a ValueError naming it and the values that exist."""
    given = {k: sanitize(v) for k, v in values.items()}
    given.update(host=sanitize(host), capability=sanitize(capability), n=str(n))
    given["cap"] = given["capability"]
    for name in pattern_fields(pattern):
        if not name or not name.isidentifier() or name not in given:
            raise ValueError(
                f"runner_name_pattern {pattern!r}: no value for {{{name}}}; set "
                f"runner_name_values.{name or 'NAME'} (values that exist: "
                f"{', '.join(sorted(given))})"
            )
    rendered = sanitize(pattern.format_map(given))
    if len(rendered) > 63:
        # The host part is what grows: keep the end (capability and index) whole.
        rendered = rendered[-63:].lstrip("-.")
    return check_name(rendered)


def host_label(host: str) -> str:
    """The host part of a runner name: the short host name (``build1`` of ``build1.lan``),
    or an address with ``-`` for its dots and colons behind an ``h`` (``h10-0-0-5``), so
    the name is also a valid Incus instance name (a letter first, no dots)."""
    text = host.strip("[]")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        text = text.split(".", 1)[0]
    label = sanitize(text.replace(".", "-").replace(":", "-")) or "host"
    return label if label[:1].isalpha() else f"h{label}"


def default_name(host: str, capability: str, n: int) -> str:
    """``<host>-<capability>-<n>`` (``host_label`` of the host)."""
    return render_name(d.RUNNER_NAME_PATTERN, host_label(host), capability, n, {})


def check_runner_glob(pattern: str, field: str = "runner") -> str:
    """A glob over runner names: bounded, of name characters and ``* ? + [ ] !`` only,
    lower-cased (names are). InputError naming ``field`` otherwise."""
    glob = pattern.strip().lower()
    if not glob or len(glob) > d.RUNNER_GLOB_MAX_LENGTH or not _GLOB_CHARS.match(glob):
        raise InputError(
            f"{pattern[:80]!r} is not a runner glob: use 1-{d.RUNNER_GLOB_MAX_LENGTH} of a-z, "
            "0-9, '.', '-' and the wildcards * [...] ? + (like client-acme-*)",
            field=field,
        )
    compile_glob(glob)
    return glob


def name_matches(glob: str, name: str) -> bool:
    """Whether runner ``name`` is one ``glob`` sends jobs to."""
    return compile_glob(glob).match(name)
