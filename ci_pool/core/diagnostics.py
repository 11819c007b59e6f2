"""``ci-pool runner exec``: one diagnostic command on a named runner, and what comes back.

The command is an argv list (never a shell line), bounded in arguments and bytes; its result
is the exit code and the combined output, bounded in size, or the note that it timed out."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ci_pool import defaults
from ci_pool.exceptions import InputError


class DiagnosticCommand(BaseModel):
    """What the operator asked a runner to run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    argv: tuple[str, ...] = Field(
        min_length=1,
        max_length=defaults.RUNNER_EXEC_MAX_ARGS,
        description="The program and its arguments; run without a shell.",
    )
    timeout: float = Field(
        default=defaults.RUNNER_EXEC_TIMEOUT,
        gt=0,
        le=defaults.RUNNER_EXEC_MAX_TIMEOUT,
        description="Seconds the command may run; then it is killed.",
    )

    @field_validator("argv")
    @classmethod
    def _bounded(cls, argv: tuple[str, ...]) -> tuple[str, ...]:
        if not argv[0]:
            raise ValueError("the program name is empty")
        for i, arg in enumerate(argv):
            if "\x00" in arg:
                raise ValueError(f"argument {i} holds a NUL byte")
            if len(arg.encode()) > defaults.RUNNER_EXEC_MAX_ARG_BYTES:
                raise ValueError(
                    f"argument {i} is longer than {defaults.RUNNER_EXEC_MAX_ARG_BYTES} bytes"
                )
        return argv


def diagnostic_command(argv: list[str] | tuple[str, ...], timeout: float) -> DiagnosticCommand:
    """Validate a command line from the CLI or the API; InputError says what is wrong."""
    from pydantic import ValidationError

    try:
        return DiagnosticCommand(argv=tuple(argv), timeout=timeout)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "timeout" if err["loc"][:1] == ("timeout",) else "command"
        raise InputError(
            f"{err['msg']} (give a program and at most {defaults.RUNNER_EXEC_MAX_ARGS} "
            f"arguments; a timeout of at most {defaults.RUNNER_EXEC_MAX_TIMEOUT:g}s)",
            field=where,
        ) from None


class DiagnosticResult(BaseModel):
    """What a runner answered: exit code and combined output, or that it timed out."""

    runner_id: str
    argv: list[str]
    #: None when the command did not end by itself (timed out and killed) or never started.
    exit_code: int | None
    output: str = Field(description="stdout and stderr together, cut past the size bound.")
    truncated: bool = False
    timed_out: bool = False
    duration_s: float = 0.0
    #: Set when the runner could not start the command (no such program, not executable).
    error: str = ""


class DiagnosticRecord(BaseModel):
    """One row of the audit of diagnostic commands (``ci-pool runner exec-log``)."""

    model_config = ConfigDict(frozen=True)

    id: int
    at: str
    #: Who asked: ``api token <name>`` or ``local <user>``.
    by: str
    runner_id: str
    capability: str
    argv: list[str]
    #: exited, timed_out, not_started, refused or no_answer.
    outcome: str
    exit_code: int | None
    output_bytes: int
    detail: str
