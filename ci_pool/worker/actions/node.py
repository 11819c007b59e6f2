"""JavaScript actions (``runs.using: node16|node20|node24``): ``pre``, ``main`` and ``post``
run with ``node`` where the job's steps run (its container, or the host in host mode).

Node comes from the capability's ``node_runtime`` (a host directory holding ``bin/node``,
mounted read-only into job containers at ``defaults.CONTAINER_NODE``) or, without one, from
the PATH of the image (or host). Each phase is a small launcher script in the job's
read-only scripts directory, run like a ``run:`` step, so its output goes through the same
log writer (masks, groups, annotations) and it is stopped the same way on cancel or timeout.

``pre`` of a remote action runs at job start, before the first step (``actions.setup``);
that of a local action right before its ``main``, in the same step: a local action is read
from the workspace a checkout step fills, so it is known only when its step is reached.
``post`` runs after the job's steps, latest first, also after a failure (``post-if``, by
default ``always()``)."""

from __future__ import annotations

import re
import secrets
import shlex

from ci_pool import defaults
from ci_pool.core.workflow import expressions
from ci_pool.exceptions import JobFileRefused
from ci_pool.worker import scripts
from ci_pool.worker.actions.call import ActionCall, PostStep, kind
from ci_pool.worker.actions.load import LoadedAction
from ci_pool.worker.actions.toolkit import Phases

#: What a launcher exits with when it finds no node to run.
NO_NODE = 127
_SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def node_program(call: ActionCall) -> str:
    """Where the job finds node: the capability's ``node_runtime`` as the job sees it, or
    empty for the one on its PATH."""
    cap = call.att.cap
    runtime = cap.node_runtime if cap is not None else None
    if not runtime:
        return ""
    base = defaults.CONTAINER_NODE if call.execution.mode == "docker" else runtime
    return f"{base}/bin/node"


def missing_node(call: ActionCall, using: str) -> str:
    """The error a job shows when it has no node: what is missing and how to fix it."""
    cap = call.att.cap
    name = cap.name if cap is not None else "?"
    runtime = cap.node_runtime if cap is not None else None
    if runtime:
        return (
            f"action {call.ref} runs on Node.js ({using}) but node_runtime {runtime!r} of "
            f"capability {name!r} has no working bin/node on this runner: install Node.js "
            "there (Debian: apt-get install nodejs) or correct node_runtime in ci-pool.toml"
        )
    return (
        f"action {call.ref} runs on Node.js ({using}) and capability {name!r} has none: set "
        f'node_runtime = "/usr" (a directory holding bin/node) under [capabilities.{name}] '
        "in ci-pool.toml, or run the job in an image with node on its PATH"
    )


def launcher(program: str, script: str, error: str, odd: list[str]) -> str:
    """The shell script that runs ``script`` with node, or says why there is none.

    ``odd`` names variables that are not shell names (``INPUT_MY-INPUT``): a shell drops
    those from the environment it passes on, so each travels as ``CI_POOL_ENV_<i>`` and
    ``env`` gives it back its name for node."""
    fail = f"echo {shlex.quote('::error::' + error)}; exit {NO_NODE}"
    if program:
        find = f'node={shlex.quote(program)}\n[ -x "$node" ] || {{ {fail}; }}\n'
    else:
        find = f"node=$(command -v node) || {{ {fail}; }}\n"
    renamed = "".join(f'{shlex.quote(name)}="$CI_POOL_ENV_{i}" ' for i, name in enumerate(odd))
    run = f"env {renamed}" if odd else ""
    # Not exec'd: when node cannot start at all (a binary without its libraries), the
    # launcher says so instead of a bare "not found".
    return (
        f"set +e\n{find}"
        f'{run}"$node" "$GITHUB_ACTION_PATH"/{shlex.quote(script)}\nrc=$?\n'
        f'if [ "$rc" = {NO_NODE} ] && ! "$node" --version >/dev/null 2>&1; then {fail}; fi\n'
        'exit "$rc"\n'
    )


def shell_safe(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """``env`` with each variable that is not a shell name moved to ``CI_POOL_ENV_<i>``;
    the names moved, in order (``launcher`` gives them back)."""
    safe: dict[str, str] = {}
    odd: list[str] = []
    for name, value in env.items():
        if _SHELL_NAME.match(name):
            safe[name] = value
        elif "=" not in name and "\0" not in name:
            safe[f"CI_POOL_ENV_{len(odd)}"] = value
            odd.append(name)
    return safe, odd


class NodeAction:
    """One JavaScript action of one step: its phases and what they pass on."""

    def __init__(self, call: ActionCall, loaded: LoadedAction):
        self.call, self.loaded = call, loaded
        self.phases = Phases(call, loaded)
        self.runs = loaded.definition.runs

    def phase(self, name: str, script: str, files_index: int, *, outputs: bool) -> int:
        """Run one phase (``pre``, ``main``, ``post``); its exit code."""
        call = self.call
        att = call.att
        assert att.dirs is not None
        try:
            env, odd = shell_safe(self.phases.env(files_index))
            error = missing_node(call, self.runs.using)
            body = launcher(node_program(call), script, error, odd)
            file = f"action-{call.index}-{name}-{secrets.token_hex(4)}.sh"
            att.dirs.scripts.create(file, (call.files.path_prefix() + body).encode())
        except JobFileRefused as exc:
            call.line(f"##[error]action {call.ref}: {name} not run: {exc}")
            return 1
        att.commands.append(f"node {script}")
        code = scripts.run_script(
            att, call.execution, call.index, file, env, "sh", call.files.store
        )
        failures = self.phases.read_back(files_index, outputs=outputs)
        for failure in failures:
            call.line(f"##[ci-pool] step {call.index} ({name}) failed: {failure}")
        return code or (1 if failures else 0)

    def holds(self, condition: str | None, status: str) -> bool:
        """Whether ``pre-if``/``post-if`` holds (both default to ``always()``)."""
        try:
            return expressions.condition(condition or "always()", self.call.ctx, status)
        except ValueError as exc:
            self.call.line(f"##[error]action {self.call.ref}: {exc}")
            return False

    def run(self) -> int:
        """``pre`` (if it holds, and did not run at job start) then ``main``; ``post`` is
        left for after the job's steps."""
        call, runs = self.call, self.runs
        started = call.att.pre_states.pop(call.index, None) if call.depth == 0 else None
        if started is not None and started[0] == (self.loaded.commit or ""):
            self.phases.state.update(started[1])  # its pre ran at job start
        elif runs.pre and self.holds(runs.pre_if, call.status):
            code = self.phase("pre", runs.pre, call.index, outputs=False)
            if code != 0:
                return code
        assert runs.main is not None
        if runs.post:
            call.att.posts.append(PostStep(call.step.name or str(call.ref), self.post))
        return self.phase("main", runs.main, call.index, outputs=True)

    def post(self, status: str) -> int:
        """The ``post`` phase, given the job's status."""
        runs = self.runs
        assert runs.post is not None
        if not self.holds(runs.post_if, status):
            self.call.line(f"##[ci-pool] post of {self.call.ref} skipped (post-if is false)")
            return 0
        return self.phase(
            "post", runs.post, defaults.POST_FILES_BASE + self.call.index, outputs=False
        )


@kind("node16", "node20", "node24")
def run_node(call: ActionCall, loaded: LoadedAction | None) -> int:
    """Run a JavaScript action."""
    assert loaded is not None
    return NodeAction(call, loaded).run()
