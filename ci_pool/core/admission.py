"""Admission: what every job must satisfy before anything is written, whether it is
submitted alone or comes from a workflow file.

One place decides the capability a job routes to, the time limit it gets and whether it
may name its own image, so ``submit``, ``run`` and ``validate`` accept and refuse the same
jobs. Policy (who may build which repository and ref) is separate: ``ci_pool.core.policy``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from ci_pool.core.actions import parse_uses, pin_problem
from ci_pool.core.capabilities import Capability, route
from ci_pool.core.specs import JobSpec
from ci_pool.defaults import MAX_JOB_TIMEOUT, MAX_JOBS_PER_PIPELINE
from ci_pool.exceptions import InputError


class Problem(NamedTuple):
    """Why a job is refused: the spec field at fault (``timeout``, ``image``...) and why."""

    field: str
    message: str


class Admitted(NamedTuple):
    """A job let in: the capability it runs on and its time limit in seconds."""

    capability: Capability
    timeout: int


def _seconds(seconds: int) -> str:
    """``21600 s (360 minutes)``: the unit of the setting and the unit of a workflow."""
    minutes = f"{seconds // 60} minutes" if seconds % 60 == 0 else f"{seconds / 60:.1f} minutes"
    return f"{seconds} s ({minutes})"


@dataclass(frozen=True)
class Admission:
    """The pool's rules for letting a job in (from ``Settings.admission``)."""

    capabilities: Mapping[str, Capability]
    #: Where a job labelled only ``self-hosted`` goes (``default_capability``); None: refused.
    default_capability: str | None = None
    #: The longest a job may ask to run (``max_job_timeout``), in seconds.
    max_job_timeout: int = MAX_JOB_TIMEOUT
    #: Jobs of one pipeline, matrix cells counted (``max_jobs_per_pipeline``).
    max_jobs: int = MAX_JOBS_PER_PIPELINE
    #: ``runs-on: {group: NAME}``: NAME -> glob over runner names (``runner_groups``).
    runner_groups: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, pool: Admission | Mapping[str, Capability]) -> Admission:
        """Rules from a capability table alone take the built-in limits."""
        return pool if isinstance(pool, Admission) else cls(pool)

    def route(self, capability: str | None = None, labels: Iterable[str] = ()) -> Capability:
        """The capability for a name and/or labels (``ci_pool.core.capabilities.route``)."""
        return route(self.capabilities, capability, labels, default=self.default_capability)

    def timeout(self, requested: int | None, cap: Capability) -> int | Problem:
        """The job's time limit: what it asks for, at most ``max_job_timeout`` (more is
        refused, never cut short silently), else the capability's default."""
        if requested is None:
            return min(cap.default_timeout, self.max_job_timeout)
        if requested > self.max_job_timeout:
            return Problem(
                "timeout",
                f"{_seconds(requested)} is above the pool's limit, max_job_timeout = "
                f"{_seconds(self.max_job_timeout)}; ask for less, or have an operator raise "
                "max_job_timeout in ci-pool.toml",
            )
        return requested

    def image(self, image: str | None, cap: Capability) -> Problem | None:
        """A job may run in an image of its own only where the capability allows it."""
        if not image or cap.allows_image(image):
            return None
        return Problem(
            "image",
            f"capability {cap.name!r} runs only its own image ({cap.image or 'host mode'}), "
            f"not {image!r}; drop the image (container: in a workflow), or route the job to a "
            "capability with allow_container_override = true",
        )

    def pins(self, spec: JobSpec, cap: Capability) -> list[Problem]:
        """On a capability with ``require_pinned_actions``, every action a step names must
        be pinned (``core.actions.pin_problem``); the field is ``steps[i].uses``."""
        if not cap.require_pinned_actions:
            return []
        problems = []
        for i, step in enumerate(spec.steps):
            if step.uses is None:
                continue
            why = pin_problem(parse_uses(step.uses))
            if why is not None:
                problems.append(Problem(f"steps[{i}].uses", f"{why} (capability {cap.name!r})"))
        return problems

    def services(self, spec: JobSpec, cap: Capability) -> list[Problem]:
        """Service images follow the job image's rule; services need the Docker executor."""
        problems = []
        for service in spec.services:
            problem = self.image(service.image, cap)
            if problem is not None:
                problems.append(
                    Problem(
                        f"services.{service.name}", f"service {service.name!r}: {problem.message}"
                    )
                )
        logins = [("container", spec.container.credentials if spec.container else None)]
        logins += [(f"services.{s.name}", s.credentials) for s in spec.services]
        for where, creds in logins:
            if creds is not None and creds.secret_name not in spec.secrets:
                problems.append(
                    Problem(
                        where,
                        f"credentials: the password's secret {creds.secret_name!r} must also "
                        "be listed in secrets",
                    )
                )
        if spec.container is not None and cap.mode == "host" and spec.container.volumes:
            problems.append(
                Problem("container", f"capability {cap.name!r} runs on the host: it has no volumes")
            )
        return problems

    def check(self, spec: JobSpec) -> tuple[Admitted | None, list[Problem]]:
        """Every reason to refuse ``spec``; routing errors raise (they name their field)."""
        cap = self.route(spec.capability, spec.labels)
        problems: list[Problem] = []
        timeout = self.timeout(spec.timeout, cap)
        if isinstance(timeout, Problem):
            problems.append(timeout)
        image = self.image(spec.image, cap)
        if image is not None:
            problems.append(image)
        problems += self.pins(spec, cap)
        problems += self.services(spec, cap)
        if problems or isinstance(timeout, Problem):
            return None, problems
        return Admitted(cap, timeout), []

    def admit(self, spec: JobSpec) -> Admitted:
        """The capability and time limit of ``spec``, or InputError naming the first problem."""
        admitted, problems = self.check(spec)
        if admitted is None:
            raise InputError(problems[0].message, field=problems[0].field)
        return admitted
