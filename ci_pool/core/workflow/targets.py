"""Which runners a workflow job may run on, by name (GitHub's semantics, mapped onto
ci-pool's):

- ``runs-on: [linux]`` / ``runs-on: linux``: the labels name the capability (any runner
  of it);
- ``runs-on: {group: NAME, labels: [linux]}``: ``labels`` name the capability, ``group``
  a runner group from the ``runner_groups`` setting, which is a glob over runner names;
- ``runner: 'client-acme-*'`` on a job: the glob itself (ci-pool's own key), with the
  capability still from ``runs-on``.

A job gives a group or a ``runner:``, not both. Values may come from the matrix.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from ci_pool.core.pipeline import Pipeline
from ci_pool.core.runner_names import check_runner_glob
from ci_pool.core.workflow.contexts import MISSING
from ci_pool.core.workflow.yaml_source import MarkedMap, Pos
from ci_pool.exceptions import InputError

RUNS_ON_KEYS = ("group", "labels")


class Reader(Protocol):
    """What a job reader gives this module: errors at a position, parse-time values."""

    def error(self, message: str, pos: Pos | None) -> None: ...

    def known(self, value: Any, pos: Pos, where: str) -> Any: ...


def _glob(reader: Reader, value: Any, pos: Pos, where: str) -> str | None:
    known = reader.known(value, pos, where)
    if known is MISSING:
        return None
    if not isinstance(known, str) or not known.strip():
        reader.error(f"{where}: must be a glob over runner names, like client-acme-*", pos)
        return None
    try:
        return check_runner_glob(known, where)
    except InputError as exc:
        reader.error(str(exc), pos)
        return None


def group_glob(reader: Reader, value: MarkedMap, where: str, groups: dict[str, str]) -> str | None:
    """The glob of ``runs-on.group`` (a runner group of the settings), or None."""
    if "group" not in value:
        return None
    pos = value.value_pos["group"]
    name = reader.known(value["group"], pos, f"{where}.group")
    if name is MISSING:
        return None
    if not isinstance(name, str) or name not in groups:
        known = ", ".join(sorted(groups)) or "none (set runner_groups in the pool's settings)"
        reader.error(
            f"{where}.group: no runner group {str(name)[:60]!r}; groups that exist: {known}; "
            "or send the job by name with runner: 'GLOB'",
            pos,
        )
        return None
    return groups[name]


def job_runner_glob(reader: Reader, data: MarkedMap, where: str) -> str | None:
    """The job's ``runner:`` glob, or None."""
    if data.get("runner") is None:
        return None
    return _glob(reader, data["runner"], data.value_pos["runner"], where)


def sent_to(pipeline: Pipeline, runner: str | None) -> Pipeline:
    """Every job of ``pipeline`` sent to runners matching ``runner`` (``run --runner``);
    a job that names its own runners as well is an error (drop one of the two)."""
    if runner is None:
        return pipeline
    glob = check_runner_glob(runner, "runner")
    for job in pipeline.jobs:
        if job.spec.runner is not None:
            raise InputError(
                f"{pipeline.file}: jobs.{job.job_id} is sent to runners {job.spec.runner!r} "
                f"by its own runner: or runs-on.group:; drop that or --runner {glob!r}",
                field="runner",
            )
    jobs = tuple(
        replace(job, spec=job.spec.model_copy(update={"runner": glob})) for job in pipeline.jobs
    )
    return replace(pipeline, jobs=jobs)
