"""Command-line values read without pydantic, where that is plain.

Typer (0.29) coerces each value a command gets with a pydantic TypeAdapter, and importing
pydantic for it costs about as much as importing typer and rich together
(bench/cli_start.py). The CLI's parameters are mostly strings, flags, lists of strings,
bounded integers and paths: ``plain_command`` gives those a coercion of their own that
takes a value only when it is already what typer would make of it. Any other value (not a
number, out of bounds, an unreadable path) and any other type go to typer's own coercion,
so typer still accepts, converts and words every error as before. A typer without this
seam (``_TyperParameter.get_runtime_param``) keeps its coercion everywhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import typer
import typer.main

_INTEGER = re.compile(r"[+-]?[0-9]+")


class _Typers(Exception):
    """The value is one for typer's own coercion."""


def _plain(annotation: Any, info: Any, value: Any) -> Any:
    """``value`` as typer would coerce it for ``annotation``, or _Typers."""
    if annotation in (str, bool) and type(value) is annotation:
        return value
    if annotation is int and not info.clamp:
        if isinstance(value, str) and _INTEGER.fullmatch(value):
            value = int(value)
        if type(value) is int and (info.min is None or value >= info.min):
            if info.max is None or value <= info.max:
                return value
    if annotation == list[str] and isinstance(value, list | tuple):
        if all(type(v) is str for v in value):
            return list(value)
    if annotation is Path and isinstance(value, str | Path):
        checks = (info.exists, info.writable, info.resolve_path, info.allow_dash)
        if not any(checks) and info.file_okay and info.dir_okay and info.path_type is None:
            path = Path(value)
            if not path.exists() or not info.readable or os.access(path, os.R_OK):
                return path
    raise _Typers


class _PlainCoercion:
    """The coercion of one parameter: plain values here, the rest by typer."""

    def __init__(self, annotation: Any, info: Any):
        self.annotation, self.info = annotation, info

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        multi = param.multiple or param.nargs == -1
        if value is None:
            return () if multi else None
        if not (multi and isinstance(value, str)):
            try:
                return _plain(self.annotation, self.info, value)
            except _Typers:
                pass
        param._runtime_param = None  # typer builds its own from here on
        return param.get_runtime_param().coerce(value, param=param, ctx=ctx)


def plain_command(app: typer.Typer) -> Any:
    """``app``'s click command, its parameters coercing plain values without pydantic."""
    command = typer.main.get_command(app)
    pending: list[Any] = [command]
    while pending:
        cmd = pending.pop()
        pending.extend(getattr(cmd, "commands", {}).values())
        # The --help option is made on first use: made here, it coerces the same way.
        help_option = cmd.get_help_option(typer.Context(cmd, **cmd.context_settings))
        for param in [*cmd.params, *([help_option] if help_option is not None else [])]:
            descriptor = getattr(param, "type_descriptor", None)
            if descriptor is None or getattr(param, "_runtime_param", 0) is not None:
                continue
            if descriptor.file_annotation is None and descriptor.parameter_info.parser is None:
                param._runtime_param = _PlainCoercion(
                    descriptor.annotation, descriptor.parameter_info
                )
    return command
