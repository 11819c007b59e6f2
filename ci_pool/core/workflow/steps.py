"""A job's steps: run: steps, the built-in checkout and actions (uses:), read into StepSpecs
in file order."""

from __future__ import annotations

import re
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from ci_pool.core.actions import parse_uses
from ci_pool.core.specs import CheckoutSpec, StepSpec
from ci_pool.core.workflow.contexts import MISSING, STEP_LEVEL, ValueReader
from ci_pool.core.workflow.schema import (
    ACTION_STEP_KEYS,
    CHECKOUT_INPUTS,
    CHECKOUT_STEP_KEYS,
    ID,
    SHELLS,
    STEP_KEYS,
    check_keys,
)
from ci_pool.core.workflow.yaml_source import MarkedList, MarkedMap, Pos
from ci_pool.defaults import MAX_SCRIPT_BYTES, MAX_STEPS

# Gitea also accepts the action's full URL.
CHECKOUT_ACTION = re.compile(r"^(?:https?://[^/\s]+/)?actions/checkout@\S+$")

_Model = TypeVar("_Model", bound=BaseModel)


class RunDefaults(NamedTuple):
    """``defaults.run``: the shell and working directory of every run: step."""

    shell: str
    working_directory: str | None


class StepReader(ValueReader):
    """Reads the steps of one matrix cell of one job; the job builder sets the state below."""

    run_defaults: RunDefaults
    #: The job's mapping, its position and its path (``jobs.<id>``).
    data: MarkedMap
    pos: Pos
    path: str

    def model(self, cls: type[_Model], where: str, pos: Pos, **fields: Any) -> _Model | None:
        """``cls(**fields)``, or None with the first problem reported at ``where``."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            self.error(f"{where}{loc}: {message}", pos)
            return None

    def steps(self) -> tuple[StepSpec, ...]:
        """The job's steps in file order; each ``uses: actions/checkout`` is a checkout step."""
        where = f"{self.path}.steps"
        value = self.data.get("steps")
        if not isinstance(value, MarkedList) or not value:
            pos = self.data.value_pos.get("steps", self.pos)
            self.error(
                f"{where}: a job needs a list of steps (run: or uses: actions/checkout)", pos
            )
            self.step_ids = None  # unknown: references to steps are not checked
            return ()
        if len(value) > MAX_STEPS:
            self.error(
                f"{where}: {len(value)} steps; the limit is {MAX_STEPS} per job",
                self.data.value_pos["steps"],
            )
            return ()
        steps: list[StepSpec] = []
        ids: set[str] = set()
        for i, (step, pos) in enumerate(zip(value, value.pos, strict=True)):
            sp = f"{where}[{i}]"
            if not isinstance(step, MarkedMap):
                self.error(f"{sp}: a step must be a mapping with run: or uses:", pos)
                continue
            self.step_ids = frozenset(ids)
            built: StepSpec | None = None
            if "uses" in step and self.is_checkout(step["uses"]):
                built = self.checkout_step(step, sp, pos)
            elif "uses" in step:
                built = self.action_step(step, sp, pos)
            elif "run" in step:
                built = self.run_step(step, sp, pos)
            else:
                self.error(f"{sp}: a step needs run: or uses:", pos)
            if built is not None:
                steps.append(built)
            step_id = step.get("id")
            if step_id is not None:
                if not isinstance(step_id, str) or not ID.match(step_id):
                    self.error(
                        f"{sp}.id: must start with a letter or _ and contain only "
                        "letters, digits, - and _",
                        step.value_pos["id"],
                    )
                elif step_id in ids:
                    self.error(
                        f"{sp}.id: {step_id!r} is already the id of an earlier step",
                        step.value_pos["id"],
                    )
                ids.add(str(step_id))
        if not any(s.checkout is None for s in steps) and self.ok:
            self.error(f"{where}: the job has no run: or uses: steps", self.data.value_pos["steps"])
        # Every id given, a rejected step's too: its error is reported once, not again at
        # each reference to it.
        self.step_ids = frozenset(ids)
        return tuple(steps)

    def run_step(self, step: MarkedMap, sp: str, pos: Pos) -> StepSpec | None:
        check_keys(self.src, step, sp, "step", STEP_KEYS)
        if "with" in step:
            self.error(f"{sp}.with: with: belongs to uses: steps", step.key_pos["with"])
        run = step["run"]
        if not isinstance(run, str) or not run.strip():
            self.error(f"{sp}.run: must be a non-empty script", step.value_pos["run"])
            run = ""
        if len(run.encode("utf-8", "surrogatepass")) > MAX_SCRIPT_BYTES:
            self.error(
                f"{sp}.run: the script is over {MAX_SCRIPT_BYTES} bytes", step.value_pos["run"]
            )
            run = ""
        script = self.text(run, step.value_pos["run"], f"{sp}.run", STEP_LEVEL)
        name = f"Run {script.strip().splitlines()[0]}"[:200] if script.strip() else "run"
        if "name" in step:
            name = self.text(step["name"], step.value_pos["name"], f"{sp}.name", STEP_LEVEL)
        shell = self.run_defaults.shell
        if "shell" in step:
            shell = self.known(step["shell"], step.value_pos["shell"], f"{sp}.shell")
            if shell is not MISSING and shell not in SHELLS:
                self.error(
                    f"{sp}.shell: {shell!r} is not supported; ci-pool runs bash or sh "
                    "(call other interpreters from the script)",
                    step.value_pos["shell"],
                )
        workdir = self.run_defaults.working_directory
        if "working-directory" in step:
            wpos = step.value_pos["working-directory"]
            workdir = self.text(
                step["working-directory"], wpos, f"{sp}.working-directory", STEP_LEVEL
            )
        step_id = step.get("id")
        fields = {
            "name": name[:200],
            # A bad id or shell is reported on its own (by steps() or defaults).
            "id": step_id if isinstance(step_id, str) and ID.match(step_id) else None,
            "run": script,
            "shell": shell if shell in SHELLS else None,
            "working_directory": workdir,
            "env": self.env(step, "env", f"{sp}.env", STEP_LEVEL),
            "if_expr": self.condition(step, "if", f"{sp}.if", STEP_LEVEL),
            "timeout": self.minutes(step, "timeout-minutes", f"{sp}.timeout-minutes"),
            "continue_on_error": self.flag(step, "continue-on-error", f"{sp}.continue-on-error"),
        }
        return self.model(StepSpec, sp, pos, **fields) if self.ok else None

    def checkout_step(self, step: MarkedMap, sp: str, pos: Pos) -> StepSpec | None:
        checkout = self.checkout(step, sp)
        if checkout is None:
            return None
        name = "Checkout" if checkout.repository is None else f"Checkout {checkout.repository}"
        if "name" in step:
            name = self.text(step["name"], step.value_pos["name"], f"{sp}.name", STEP_LEVEL)
        step_id = step.get("id")
        fields = {
            "name": name[:200],
            "id": step_id if isinstance(step_id, str) and ID.match(step_id) else None,
            "checkout": checkout,
            "if_expr": self.condition(step, "if", f"{sp}.if", STEP_LEVEL),
            "continue_on_error": self.flag(step, "continue-on-error", f"{sp}.continue-on-error"),
        }
        return self.model(StepSpec, sp, pos, **fields) if self.ok else None

    @staticmethod
    def is_checkout(uses: object) -> bool:
        """Whether ``uses:`` names actions/checkout, which ci-pool runs itself."""
        return isinstance(uses, str) and CHECKOUT_ACTION.match(uses) is not None

    def action_step(self, step: MarkedMap, sp: str, pos: Pos) -> StepSpec | None:
        """``uses:`` an action: the reference is checked now; the action itself is fetched
        and read by the runner."""
        check_keys(self.src, step, sp, "step", ACTION_STEP_KEYS)
        uses, upos = step["uses"], step.value_pos["uses"]
        if not isinstance(uses, str):
            self.error(f"{sp}.uses: must be an action reference such as owner/repo@v1", upos)
            return None
        try:
            parse_uses(uses)
        except ValueError as exc:
            self.error(f"{sp}.uses: {exc}", upos)
            return None
        inputs: dict[str, str] = {}
        options = step.get("with")
        if options is not None and not isinstance(options, MarkedMap):
            self.error(f"{sp}.with: must be a mapping of the action's inputs", upos)
        elif options is not None:
            for key, raw in options.items():
                vpos = options.value_pos[key]
                if isinstance(raw, bool):
                    raw = "true" if raw else "false"
                elif raw is None:
                    raw = ""
                elif isinstance(raw, int | float):
                    raw = str(raw)
                inputs[str(key)] = self.text(raw, vpos, f"{sp}.with.{key}", STEP_LEVEL)
        name = f"Run {uses}"
        if "name" in step:
            name = self.text(step["name"], step.value_pos["name"], f"{sp}.name", STEP_LEVEL)
        step_id = step.get("id")
        fields = {
            "name": name[:200],
            "id": step_id if isinstance(step_id, str) and ID.match(step_id) else None,
            "uses": uses,
            "inputs": inputs,
            "env": self.env(step, "env", f"{sp}.env", STEP_LEVEL),
            "if_expr": self.condition(step, "if", f"{sp}.if", STEP_LEVEL),
            "timeout": self.minutes(step, "timeout-minutes", f"{sp}.timeout-minutes"),
            "continue_on_error": self.flag(step, "continue-on-error", f"{sp}.continue-on-error"),
        }
        return self.model(StepSpec, sp, pos, **fields) if self.ok else None

    def checkout(self, step: MarkedMap, sp: str) -> CheckoutSpec | None:
        for key in step:
            if key not in CHECKOUT_STEP_KEYS:
                self.error(
                    f"{sp}.{key}: the built-in checkout takes only {', '.join(CHECKOUT_STEP_KEYS)}",
                    step.key_pos[key],
                )
        options = step.get("with")
        if options is None:
            return CheckoutSpec()
        if not isinstance(options, MarkedMap):
            self.error(
                f"{sp}.with: must be a mapping of {', '.join(CHECKOUT_INPUTS)}",
                step.value_pos["with"],
            )
            return None
        values: dict[str, Any] = {}
        ok = self.ok
        for key, raw in options.items():
            kwhere, vpos = f"{sp}.with.{key}", options.value_pos[key]
            if key not in CHECKOUT_INPUTS:
                self.error(
                    f"{kwhere}: not supported by the built-in checkout; it supports "
                    f"{', '.join(CHECKOUT_INPUTS)}",
                    options.key_pos[key],
                )
                continue
            if key == "ref":  # known at run time: github.*, env.*, steps.*, needs.*
                value = self.text(raw, vpos, kwhere, STEP_LEVEL) if raw is not None else None
            else:
                value = self.known(raw, vpos, kwhere)
            if value is not MISSING and value is not None and value != "":
                values[key.replace("-", "_")] = self.checkout_input(key, value, kwhere, vpos)
        if not self.ok or not ok:
            return None
        for key in list(values):
            where, vpos = (
                f"{sp}.with.{key.replace('_', '-')}",
                options.value_pos[key.replace("_", "-")],
            )
            try:
                CheckoutSpec(**{key: values[key]})
            except ValidationError as exc:
                message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
                self.error(f"{where}: {message}", vpos)
        return CheckoutSpec(**values) if self.ok else None

    def checkout_input(self, key: str, value: Any, where: str, pos: Pos) -> Any:
        text = value.lower() if isinstance(value, str) else value
        if key == "fetch-depth":
            depth = int(text) if isinstance(text, str) and text.isdigit() else text
            if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 0:
                return depth
            self.error(f"{where}: must be a whole number (0 for the whole history)", pos)
        elif key in ("ref", "repository", "path", "filter"):
            if isinstance(value, str):
                return value.strip() if key != "path" else value
            self.error(f"{where}: must be a string", pos)
        elif key == "sparse-checkout":
            if isinstance(value, str):
                return tuple(line.strip() for line in value.splitlines() if line.strip())
            self.error(f"{where}: must be a string of patterns, one per line", pos)
        elif isinstance(text, bool):  # not 1 or 0, which equal True and False
            return text
        elif text in ("true", "false") or (key == "submodules" and text == "recursive"):
            return text in ("true", "recursive")
        else:
            allowed = "true, false or recursive" if key == "submodules" else "true or false"
            self.error(f"{where}: must be {allowed}", pos)
        return None
