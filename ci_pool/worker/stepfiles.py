"""The environment files of a job's steps ($GITHUB_OUTPUT, $GITHUB_ENV, $GITHUB_PATH,
$GITHUB_STEP_SUMMARY, $GITHUB_STATE): made empty before each step, read back after it
through ``jobfiles`` (never through a link, capped), and what they carry to later steps.

What a step sets reaches only the environment of the job's later steps: it is passed to
each step as its own environment, never applied to the runner's process."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from ci_pool import defaults
from ci_pool.core.envfiles import env_updates, parse_key_values, path_entries
from ci_pool.core.specs import StepSpec
from ci_pool.exceptions import JobFileRefused
from ci_pool.worker.attempt import Attempt, StepDirs
from ci_pool.worker.runner_store import RunnerStore

#: Each variable a step gets and the stem of its file (``<stem>-<step>``).
FILES = {
    "GITHUB_OUTPUT": "output",
    "GITHUB_ENV": "env",
    "GITHUB_PATH": "path",
    "GITHUB_STEP_SUMMARY": "summary",
    "GITHUB_STATE": "state",
}


@dataclass
class StepFiles:
    """The files of one attempt's steps and what they set for the steps after them."""

    store: RunnerStore
    #: Variables set through $GITHUB_ENV, for every later step.
    env: dict[str, str] = field(default_factory=dict)
    #: Directories added through $GITHUB_PATH, the latest first.
    path: list[str] = field(default_factory=list)
    summaries: int = 0

    def prepare(self, dirs: StepDirs, index: int | str, files_path: str) -> dict[str, str]:
        """Make the step's files empty (whatever the job left under their names is
        removed, not followed); the variables that name them."""
        for stem in FILES.values():
            dirs.files.replace(f"{stem}-{index}")
        return {var: f"{files_path}/{stem}-{index}" for var, stem in FILES.items()}

    def path_prefix(self) -> str:
        """What the step's script is prefixed with to put $GITHUB_PATH entries first."""
        if not self.path:
            return ""
        joined = ":".join(self.path).replace("'", "'\\''")
        return f"PATH='{joined}':\"$PATH\"; export PATH\n"

    def read_back(
        self,
        att: Attempt,
        index: int,
        step: StepSpec,
        ctx: dict[str, Any],
        key: str | None = None,
    ) -> tuple[dict[str, str], list[str]]:
        """Read what step ``index`` wrote; its outputs, and why it fails (a file the runner
        refuses to read, a malformed $GITHUB_ENV) if it does. ``key`` names the files of a
        step inside a composite action (``3.1``); its summary counts as step ``index``'s."""
        assert att.dirs is not None
        name = key or str(index)
        files = att.dirs.files
        failures: list[str] = []
        outputs: dict[str, str] = {}
        try:
            outputs = parse_key_values(
                files.read(f"output-{name}", defaults.STEP_OUTPUT_MAX_BYTES)
            ).values
        except JobFileRefused as exc:
            failures.append(f"$GITHUB_OUTPUT {exc}")
        try:
            self._apply_env(att, name, files.read(f"env-{name}", defaults.STEP_ENV_MAX_BYTES), ctx)
        except JobFileRefused as exc:
            failures.append(f"$GITHUB_ENV {exc}")
        except ValueError as exc:
            failures.append(f"$GITHUB_ENV env-{name}: {exc}")
        try:
            for entry in path_entries(files.read(f"path-{name}", defaults.STEP_ENV_MAX_BYTES)):
                self.path.insert(0, entry)
        except JobFileRefused as exc:
            failures.append(f"$GITHUB_PATH {exc}")
        try:
            self._keep_summary(att, name, step, index)
        except JobFileRefused as exc:
            failures.append(f"$GITHUB_STEP_SUMMARY {exc}")
        return outputs, failures

    def _apply_env(self, att: Attempt, index: int | str, data: bytes, ctx: dict[str, Any]) -> None:
        values, refused, problems = env_updates(data)
        if problems:
            raise ValueError("; ".join(problems[:5]))
        for name in refused:
            att.logw.line(
                f"##[ci-pool] step {index}: $GITHUB_ENV cannot set {name} "
                "(reserved for the runner); ignored"
            )
        self.env.update(values)
        if isinstance(ctx.get("env"), dict):
            ctx["env"].update(values)

    def _keep_summary(
        self, att: Attempt, index: int | str, step: StepSpec, summary_index: int
    ) -> None:
        assert att.dirs is not None
        cap = defaults.STEP_SUMMARY_MAX_BYTES
        buf = io.BytesIO()
        size, _sha = att.dirs.files.copy(f"summary-{index}", buf, cap)
        if size == 0:
            return
        if self.summaries >= defaults.MAX_STEP_SUMMARIES:
            att.logw.line(
                f"##[ci-pool] step {index}: summary not kept: a job keeps at most "
                f"{defaults.MAX_STEP_SUMMARIES} step summaries"
            )
            return
        data = buf.getvalue()
        markdown = data[:cap].decode(errors="replace")
        if size > cap:
            markdown = markdown.rsplit("\n", 1)[0] if "\n" in markdown else markdown
            markdown += (
                f"\n\n> **Note:** this summary was cut at the {cap} byte limit of a step summary.\n"
            )
            att.logw.line(
                f"##[ci-pool] step {index}: $GITHUB_STEP_SUMMARY is larger than the {cap} "
                "byte limit; the summary was cut there"
            )
        self.summaries += 1
        job = att.job
        self.store.add_summary(
            job.id, job.attempt, summary_index, step.name or "run", att.logw.masker.mask(markdown)
        )
