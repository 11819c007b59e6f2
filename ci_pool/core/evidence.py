"""The evidence record of one attempt: what it did and where."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ArtifactEntry(BaseModel):
    """One collected file, as the evidence record lists it."""

    model_config = ConfigDict(frozen=True)

    path: str
    size: int
    sha256: str


class Evidence(BaseModel):
    """What one attempt did and where: the record a job's outcome is judged by.

    Fields are filled as the attempt goes (a job that fails at checkout has no ``mode``);
    unknown keys of older records are kept, never dropped."""

    model_config = ConfigDict(frozen=True, extra="allow")

    job_id: str | None = None
    runner_id: str | None = None
    attempt: int | None = None
    #: How the repository was reached: the URL scheme ("ssh" for user@host:path).
    transport: str | None = None
    #: Which executor ran the steps: "docker" or "host".
    mode: str | None = None
    image: str | None = None
    #: The container engine of a docker-mode attempt: "docker" or "podman".
    engine: str | None = None
    image_id: str | None = None
    container_id: str | None = None
    #: The job ran in a warm container (created before the job was claimed).
    warm_container: bool | None = None
    commit_sha: str | None = None
    checkout_s: float | None = None
    #: "network", "mirror" or "cache" (see ``runner.checkout.CheckoutResult``).
    checkout_via: str | None = None
    #: The rendered step scripts, one after the other.
    command: str | None = None
    exit_code: int | None = None
    stdout_sample: str | None = None
    artifacts: tuple[ArtifactEntry, ...] | None = None
    #: The actions fetched for the job's ``uses:`` steps: each as written -> the commit it
    #: ran at.
    actions: dict[str, str] | None = None
    #: ``--sync``: ``patch`` or ``snapshot``, and the sha256 of what was applied.
    sync_mode: str | None = None
    sync_sha256: str | None = None
