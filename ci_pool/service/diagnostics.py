"""``ci-pool runner exec NAME -- cmd``: one diagnostic command on one named live runner,
sent through the broker's remote-control channel to that worker alone (never over SSH):
the message names a one-time request in the store, which only that runner can take.
Admin only (the API checks the scope); refused on strict lanes unless
``runner_exec_strict`` allows them; every attempt is an audit row (who, runner, command,
when, how it ended)."""

from __future__ import annotations

from typing import Any

from ci_pool import defaults
from ci_pool.broker.runners import RunnerInfo
from ci_pool.core.diagnostics import DiagnosticRecord, DiagnosticResult, diagnostic_command
from ci_pool.core.policy import is_strict
from ci_pool.exceptions import ExecutorError, NotFound, PolicyDenied
from ci_pool.service.inspection import Inspection
from ci_pool.store import diagnostics as audit


class Diagnostics(Inspection):
    """Diagnostic commands on runners, and their audit."""

    def _exec_target(self, name: str) -> RunnerInfo:
        """The live runner called ``name`` (its runner id, or the host it alone runs on)."""
        live = self.runners()
        exact = [r for r in live if r.runner_id == name]
        on_host = [r for r in live if r.host == name]
        if exact or len(on_host) == 1:
            return (exact or on_host)[0]
        if len(on_host) > 1:
            raise NotFound(
                f"{len(on_host)} runners run on host {name!r}: "
                + ", ".join(sorted(r.runner_id for r in on_host))
                + "; name one of them"
            )
        raise NotFound(
            f"no live runner {name!r} (it is unknown, or offline: it has not heartbeaten "
            f"within {self.settings.runner_ttl:g}s); see ci-pool runners"
        )

    def runner_exec(
        self, name: str, argv: list[str], *, by: str, timeout: float | None = None
    ) -> DiagnosticResult:
        """Run ``argv`` on runner ``name`` and return its exit code and output."""
        command = diagnostic_command(argv, timeout or self.settings.runner_exec_timeout)
        row: dict[str, Any] = {"by": by, "runner_id": name, "capability": "", "argv": argv}
        try:
            runner = self._exec_target(name)
        except NotFound as exc:
            audit.record_exec(self.store, **row, outcome="no_answer", detail=str(exc))
            raise
        row.update(runner_id=runner.runner_id, capability=runner.capability)
        cap = self.settings.capabilities.get(runner.capability)
        if cap is None or (is_strict(cap) and not self.settings.runner_exec_strict):
            message = (
                f"runner {runner.runner_id} serves the strict lane {runner.capability!r}: "
                "diagnostic commands are refused there (set runner_exec_strict = true to "
                "allow them)"
            )
            audit.record_exec(self.store, **row, outcome="refused", detail=message)
            raise PolicyDenied(message, rule="runner_exec_strict")
        wait = command.timeout + defaults.RUNNER_EXEC_REPLY_GRACE
        node = str(runner.extra.get("node") or runner.runner_id)
        # The command stays in the store; the control message carries only the token the
        # runner takes it with (once, before it expires, under its own name).
        token = audit.create_exec_request(
            self.store, runner.runner_id, list(command.argv), command.timeout, wait
        )
        replies = self.celery.control.broadcast(
            defaults.RUNNER_EXEC_COMMAND,
            arguments={"request": token},
            destination=[node],
            reply=True,
            timeout=wait,
            limit=1,
        )
        answer = next((r[node] for r in replies or [] if node in r), None)
        if answer is None:
            message = (
                f"runner {runner.runner_id} did not answer within {wait:g}s (it may have "
                "stopped or lost the broker); see ci-pool runners"
            )
            audit.record_exec(self.store, **row, outcome="no_answer", detail=message)
            raise ExecutorError(message)
        if "ok" not in answer:
            message = str(answer.get("error", answer))
            audit.record_exec(self.store, **row, outcome="refused", detail=message)
            raise PolicyDenied(message, rule="runner_exec_strict")
        result = DiagnosticResult.model_validate(answer["ok"])
        if result.timed_out:
            result.error = (
                f"the command did not finish within {command.timeout:g}s on "
                f"{runner.runner_id}; it was killed (output so far above)"
            )
        outcome = "timed_out" if result.timed_out else "not_started" if result.error else "exited"
        audit.record_exec(
            self.store,
            **row,
            outcome=outcome,
            exit_code=result.exit_code,
            output_bytes=len(result.output.encode()),
            detail=result.error,
        )
        return result

    def runner_exec_log(
        self, runner_id: str | None = None, limit: int = 100
    ) -> list[DiagnosticRecord]:
        """The audit of diagnostic commands, newest first."""
        return [row.public() for row in audit.list_execs(self.store, runner_id, limit)]
