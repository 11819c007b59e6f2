"""The worker's side of ``ci-pool runner exec``: a Celery remote-control command that runs
one diagnostic command on this runner and answers with its exit code and output.

The command runs without a shell (an argv list), as the worker's own user, in a fresh
temporary directory, with a clean environment (PATH, HOME, LANG and TMPDIR only: nothing of
the worker's environment, where its broker password and credential are, is passed on), in
its own process group, killed at its timeout. Its output is bounded and every secret the
worker holds is masked in it (a command could still read the worker's own /proc entries).
Strict lanes refuse unless this worker's settings allow it."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from celery.worker.control import control_command

from ci_pool import defaults
from ci_pool.core.diagnostics import DiagnosticCommand, DiagnosticResult
from ci_pool.core.masking import Masker
from ci_pool.core.policy import is_strict
from ci_pool.exceptions import CIPoolError
from ci_pool.settings import Settings
from ci_pool.worker.runner_store import through_api

log = logging.getLogger(__name__)

#: Environment variables whose values are secrets whatever their prefix.
_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|KEY|_URL)$", re.I)


def worker_secrets(settings: Settings, environ: dict[str, str] | None = None) -> list[str]:
    """Every secret value this worker holds: its secret settings, the passwords in its URLs,
    its credential file, and secret-looking variables of its environment."""
    env = os.environ if environ is None else environ
    found: list[str] = []
    for secret in (
        settings.api_token,
        settings.registration_token,
        settings.runner_credential,
        settings.flower_auth,
    ):
        if secret is not None:
            found.append(secret.get_secret_value())
    credential = settings.runner_credential_value()
    if credential:
        found.append(credential)
    for name, value in env.items():
        if _SECRET_NAME.search(name):
            found += _url_passwords(value) if "://" in value else [value]
    for url in (settings.broker_url, settings.store_url or ""):
        found += _url_passwords(url)
    return [s for s in found if s]


def _url_passwords(value: str) -> list[str]:
    try:
        password = urlsplit(value).password
    except ValueError:
        return [value]
    return [password] if password else []


def clean_environment(workdir: str) -> dict[str, str]:
    return {
        "PATH": defaults.RUNNER_EXEC_PATH,
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
    }


def run_diagnostic(
    command: DiagnosticCommand, runner_id: str, max_output: int, secrets: Iterable[str]
) -> DiagnosticResult:
    """Run one command as described above; never raises for the command's own failures."""
    masker = Masker(secrets)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ci-pool-exec-") as workdir:
        try:
            proc = subprocess.Popen(
                list(command.argv),
                cwd=workdir,
                env=clean_environment(workdir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            return DiagnosticResult(
                runner_id=runner_id,
                argv=list(command.argv),
                exit_code=None,
                output="",
                error=f"cannot run {command.argv[0]!r} on {runner_id}: {exc.strerror}",
            )
        timed_out = False
        try:
            raw, _ = proc.communicate(timeout=command.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            raw, _ = proc.communicate()
    truncated = len(raw) > max_output
    text = masker.mask(raw[:max_output].decode(errors="replace"))
    return DiagnosticResult(
        runner_id=runner_id,
        argv=list(command.argv),
        exit_code=None if timed_out else proc.returncode,
        output=text,
        truncated=truncated,
        timed_out=timed_out,
        duration_s=round(time.monotonic() - started, 3),
    )


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def take_request(
    settings: Settings, request: str, runner_id: str
) -> tuple[list[str], float] | None:
    """The command of exec request ``request`` when it is this runner's to take: from the
    store, or through the API under the runner's own credential."""
    if through_api(settings):
        from ci_pool.worker.api_store import ApiRunnerStore

        api = ApiRunnerStore(settings)
        try:
            return api.take_exec_request(request)
        finally:
            api.client.close()
    from ci_pool.store import Store
    from ci_pool.store.diagnostics import take_exec_request

    store = Store(settings.resolved_store_url)
    try:
        return take_exec_request(store, request, runner_id)
    finally:
        store.close()


@control_command(  # type: ignore[untyped-decorator]
    name=defaults.RUNNER_EXEC_COMMAND,
    args=[("request", str)],
    signature="<request>",
)
def runner_exec(state: Any, request: str = "", **_ignored: Any) -> dict[str, Any]:
    """Answer one ``ci-pool runner exec``: ``{"ok": result}`` or ``{"error": why}``. The
    command comes from the store's one-time request, never from the message: whoever can
    publish on the control channel cannot make this runner run anything."""
    app = state.consumer.app
    settings: Settings = app.conf.ci_pool_settings
    cap_name = getattr(app.conf, "ci_pool_capability", None) or ""
    cap = settings.capabilities.get(cap_name)
    runner_id = settings.runner_id or state.consumer.hostname
    if cap is None or (is_strict(cap) and not settings.runner_exec_strict):
        return {
            "error": f"runner {runner_id} serves the strict lane {cap_name!r}: diagnostic "
            "commands are refused there (runner_exec_strict = true in its settings allows them)"
        }
    try:
        taken = take_request(settings, request, runner_id) if request else None
    except CIPoolError as exc:
        return {"error": f"runner {runner_id} could not read the exec request: {exc}"}
    if taken is None:
        log.warning("runner %s: refused an exec request the pool did not make for it", runner_id)
        return {
            "error": f"runner {runner_id}: no such exec request for it "
            "(unknown, taken already or expired)"
        }
    try:
        command = DiagnosticCommand(argv=tuple(taken[0]), timeout=taken[1])
    except ValueError as exc:
        return {"error": f"invalid command: {exc}"}
    result = run_diagnostic(
        command, runner_id, settings.runner_exec_max_output, worker_secrets(settings)
    )
    return {"ok": result.model_dump(mode="json")}
