"""What a submitter sends for one job: ``JobCreate``, a ``JobSpec`` with its integers
bounded for the store. The API takes it as its request body and both CLI clients take it,
so a job is checked by the same rules wherever it is submitted from."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, model_validator

from ci_pool.core.specs import CheckoutSpec, JobSpec, StepSpec, check_spec_bounds
from ci_pool.exceptions import InputError

#: Bound of every integer a client sends (the store's columns are 32-bit).
MAX_INT = 2**31 - 1


class StepCreate(StepSpec):
    """A step of a submitted job: a ``StepSpec``, its integers bounded for the store."""

    timeout: int | None = Field(default=None, ge=1, le=MAX_INT)


class CheckoutCreate(CheckoutSpec):
    """The checkout of a submitted job: a ``CheckoutSpec``, bounded for the store."""

    fetch_depth: int = Field(default=1, ge=0, le=MAX_INT)


class JobCreate(JobSpec):
    """A job to submit: a ``JobSpec`` (its repo URL checked against the pool's settings by
    ``parse_job_spec``, the CLI's rules), its integers bounded for the store."""

    steps: tuple[StepCreate, ...] = Field(min_length=1)
    timeout: int | None = Field(default=None, ge=1, le=MAX_INT)
    checkout: CheckoutCreate = Field(default_factory=CheckoutCreate)

    @model_validator(mode="before")
    @classmethod
    def _null_checkout(cls, data: Any) -> Any:
        """``"checkout": null`` (accepted before checkout had defaults) means the defaults."""
        if isinstance(data, dict) and "checkout" in data and data["checkout"] is None:
            return {k: v for k, v in data.items() if k != "checkout"}
        return data

    def body(self) -> dict[str, object]:
        """The request body that submits this job (what is signed and sent)."""
        return self.model_dump(mode="json", exclude_none=True)


def job_create(data: dict[str, object]) -> JobCreate:
    """A submission from raw input; every problem is an InputError naming the field."""
    check_spec_bounds(data)
    try:
        return JobCreate.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InputError(err["msg"].removeprefix("Value error, "), field=field) from None
