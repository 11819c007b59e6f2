"""One attempt of a job on this runner: what it carries and accumulates on its way."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ci_pool.core.capabilities import Capability
from ci_pool.core.evidence import ArtifactEntry, Evidence
from ci_pool.settings import Settings
from ci_pool.store import Job
from ci_pool.worker.cleanup import Leftover
from ci_pool.worker.jobfiles import JobDir
from ci_pool.worker.logs import LogWriter
from ci_pool.worker.monitor import JobMonitor


@dataclass
class StepDirs:
    """The job's step scripts (read-only to the job) and the files its steps write back,
    both held open so a replaced path changes nothing."""

    scripts: JobDir
    files: JobDir

    def close(self) -> None:
        self.scripts.close()
        self.files.close()


@dataclass
class Attempt:
    """Everything one attempt of a job accumulates on its way."""

    job: Job
    cap: Capability | None
    runner_id: str
    logw: LogWriter
    monitor: JobMonitor
    secrets: dict[str, str]
    evidence: Evidence = field(default_factory=Evidence)
    dirs: StepDirs | None = None
    #: The job's workspace on this host (checkout steps write into it).
    workspace: Path | None = None
    settings: Settings | None = None
    commands: list[str] = field(default_factory=list)
    #: Work actions left for after the job's steps (``actions.PostStep``), in the order it
    #: was registered; run in reverse.
    posts: list[Any] = field(default_factory=list)
    #: JavaScript actions whose ``pre`` ran at job start, by step index: the commit it ran
    #: at and the state it saved (``actions.setup``); their step then runs main alone.
    pre_states: dict[int, tuple[str, dict[str, str]]] = field(default_factory=dict)
    #: The local changes the job carries (``--sync``), read from the store when claimed.
    sync_data: bytes | None = None
    #: The workspace is already mounted in a (warm) container, which would not see an
    #: overlay mounted on it later: checkouts copy the cached tree instead.
    workspace_mounted: bool = False
    #: What the attempt leaves for removal once its outcome is recorded.
    leftover: Leftover | None = None

    def note(self, **values: Any) -> None:
        """Add facts to the attempt's evidence record."""
        self.evidence = self.evidence.model_copy(update=values)

    def note_artifacts(self, files: Iterable[Any]) -> None:
        """Add stored files (with path, size and sha256) to the evidence's artifacts."""
        new = [ArtifactEntry(path=f.path, size=f.size, sha256=f.sha256) for f in files]
        self.note(artifacts=(*(self.evidence.artifacts or ()), *new))
