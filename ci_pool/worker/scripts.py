"""Running what a step runs (a ``run:`` step's script, a JavaScript action's launcher, a
container action): its output becomes the step's log with the workflow commands in it
applied, and the annotations it made are kept on the job."""

from __future__ import annotations

from collections.abc import Callable

from ci_pool.worker.attempt import Attempt
from ci_pool.worker.executors.base import Execution
from ci_pool.worker.runner_store import RunnerStore

#: Runs something, handing its raw output to the callback; returns its exit code.
Producer = Callable[[Callable[[bytes], None]], int]


def run_output(att: Attempt, index: int, store: RunnerStore, produce: Producer) -> int:
    """Run ``produce`` as step ``index``: its output is the step's; its exit code."""
    logw = att.logw
    logw.begin_step(index)
    try:
        return produce(logw.write)
    finally:
        annotations = logw.end_step()
        if annotations:
            store.add_annotations(att.job.id, att.job.attempt, annotations)


def run_script(
    att: Attempt,
    execution: Execution,
    index: int,
    name: str,
    env: dict[str, str],
    shell: str | None,
    store: RunnerStore,
) -> int:
    """Run the script ``name`` (in the scripts directory) as step ``index``; its exit code."""
    return run_output(
        att, index, store, lambda out: execution.run_step(name, out, env=env, shell=shell)
    )
