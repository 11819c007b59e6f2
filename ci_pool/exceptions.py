"""The ci-pool exception tree.

    CIPoolError
     ├── ConfigError              bad settings or ci-pool.toml (names the key)
     ├── InputError               bad user input (names the field)
     │    ├── WorkflowError        carries file, line, column
     │    ├── CapabilityNotFound   no capability matches; lists the ones that exist
     │    └── RemoteRefused        a repository on a git server the pool may not contact
     ├── PolicyDenied             carries the rule
     ├── NotFound                 unknown job / runner
     ├── JobFileRefused           a file a job left behind is not a regular file in bounds
     ├── InfraError               the infrastructure failed: retried automatically
     │    ├── Busy                 a bounded resource is full right now: retry
     │    ├── BrokerError
     │    ├── CheckoutError
     │    └── ExecutorError
     └── ProvisioningError

A build that exits non-zero is not an exception: it is a ``failed`` outcome.
"""

from __future__ import annotations


class CIPoolError(Exception):
    """Root of every error ci-pool raises on purpose."""

    #: CLI exit code for this kind of error.
    exit_code = 3


class ConfigError(CIPoolError):
    """Settings or ci-pool.toml are invalid."""

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None, file: str | None = None):
        self.key = key
        self.file = file
        where = ": ".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {message}" if where else message)


class InputError(CIPoolError):
    """A user-supplied value is invalid; nothing was written."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class WorkflowError(InputError):
    """A workflow file is invalid at file:line:column."""

    def __init__(self, message: str, *, file: str, line: int = 0, column: int = 0):
        self.file, self.line, self.column = file, line, column
        Exception.__init__(self, f"{file}:{line}:{column}: {message}")
        self.field = None


class CapabilityNotFound(InputError):
    """No capability matches the requested name or labels."""

    def __init__(self, wanted: str, existing: list[str], hint: str = ""):
        self.wanted = wanted
        self.existing = existing
        #: How to make it route (ci-pool.toml lines), starting with "; ".
        self.hint = hint
        super().__init__(
            f"no capability matches {wanted!r}; capabilities that exist: "
            + ", ".join(sorted(existing))
            + hint,
            field="capability",
        )


class RemoteRefused(InputError):
    """The repository's git server is outside ``git_hosts`` or on a refused address; the
    pool did not contact it."""

    def __init__(self, message: str):
        super().__init__(message, field="repo")


class PolicyDenied(CIPoolError):
    """A policy rule refused the job."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        rule: str,
        field: str | None = None,
        job_id: str | None = None,
        pipeline_id: str | None = None,
    ):
        self.rule, self.field, self.detail = rule, field, message
        self.job_id, self.pipeline_id = job_id, pipeline_id
        what = (
            f"job {job_id} rejected, "
            if job_id
            else f"pipeline {pipeline_id} rejected, "
            if pipeline_id
            else ""
        )
        super().__init__(f"{what}denied by rule {rule}: {message}")

    @classmethod
    def from_record(
        cls, reason: str, *, job_id: str | None = None, pipeline_id: str | None = None
    ) -> PolicyDenied:
        """The denial a ``rejected`` record's reason ("denied by rule R: ...") stands for."""
        rule, _, detail = reason.removeprefix("denied by rule ").partition(": ")
        field = {"repos": "repo", "refs": "ref", "require_signature": "signature"}.get(
            rule.rsplit(".", 1)[-1]
        )
        return cls(detail, rule=rule, field=field, job_id=job_id, pipeline_id=pipeline_id)

    def recorded(
        self, *, job_id: str | None = None, pipeline_id: str | None = None
    ) -> PolicyDenied:
        """The same denial, naming the ``rejected`` record written for it."""
        return PolicyDenied(
            self.detail, rule=self.rule, field=self.field, job_id=job_id, pipeline_id=pipeline_id
        )


class AccessDenied(CIPoolError):
    """The submitter may not do this (token limits, a bad signature); nothing is written."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(message)


class NotFound(CIPoolError):
    """The job or runner does not exist."""

    exit_code = 2


class JobFileRefused(CIPoolError):
    """A file the runner reads back from a job (outputs, artifacts) is a symlink, a FIFO,
    a device, a directory or over its size limit. The job's own doing: a build failure."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


class InfraError(CIPoolError):
    """The infrastructure failed; the job ends ``error`` and is retried."""

    reason = "infra_error"


class Busy(InfraError):
    """Every slot of a bounded resource (ref look-ups at submit) is taken; retry later."""

    reason = "busy"


class BrokerError(InfraError):
    reason = "broker_unavailable"


class CheckoutError(InfraError):
    reason = "checkout_failed"


class ExecutorError(InfraError):
    reason = "executor_failed"


class ProvisioningError(CIPoolError):
    """Provisioning a runner container failed."""


class ActionError(CIPoolError):
    """A ``uses:`` action cannot be found, read or run as written (a missing input, an
    unsupported ``runs.using``, a file it names that is not there): the step fails."""


class SyncRefused(CIPoolError):
    """The local changes a job carries (``--sync``) cannot be applied: a patch that does not
    apply, a snapshot that would write outside the workspace. The submission's doing: the
    job fails, it is not retried."""


class RunnerCutOff(CIPoolError):
    """The API refused the runner's credential (revoked or unknown): the runner takes no
    more jobs and exits."""


class TooLarge(InputError):
    """A body over its bound (a runner's log chunk, outputs, summary, artifact, cache
    archive): answered 413 naming the bound."""
