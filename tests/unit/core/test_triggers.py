"""Which pull requests, schedules and dispatches run a workflow (``core.triggers``)."""

from __future__ import annotations

import pytest

from ci_pool.core.triggers import (
    bounded_payload,
    dispatch_trigger,
    pr_action,
    pull_request_trigger,
    schedule_crons,
)
from ci_pool.core.workflow.run_context import RunFacts


def test_pull_request_defaults_to_opened_synchronize_reopened() -> None:
    on = {"pull_request": None}
    for action in ("opened", "synchronize", "reopened"):
        assert pull_request_trigger(on, action, "main") is None
    assert "does not include 'closed'" in (pull_request_trigger(on, "closed", "main") or "")
    assert pull_request_trigger("pull_request", "opened", "dev") is None


def test_gitea_actions_take_githubs_names() -> None:
    assert pr_action("synchronized") == "synchronize"
    assert pull_request_trigger({"pull_request": {}}, pr_action("synchronized"), "main") is None


def test_pull_request_branches_filter_the_base_branch() -> None:
    on = {"pull_request": {"branches": ["main", "release/**"]}}
    assert pull_request_trigger(on, "opened", "release/1.2") is None
    why = pull_request_trigger(on, "opened", "feature/x")
    assert why == "on.pull_request.branches (main, release/**) does not match branch 'feature/x'"
    ignored = {"pull_request": {"branches-ignore": ["wip/*"]}}
    assert "matches branch 'wip/a'" in (pull_request_trigger(ignored, "opened", "wip/a") or "")


def test_pull_request_types_and_paths() -> None:
    on = {"pull_request": {"types": ["labeled"], "paths": ["src/**"]}}
    assert pull_request_trigger(on, "labeled", "main", frozenset({"src/a.py"})) is None
    assert "does not include 'opened'" in (pull_request_trigger(on, "opened", "main") or "")
    why = pull_request_trigger(on, "labeled", "main", frozenset({"README.md"}))
    assert why is not None and "on.pull_request.paths (src/**) matches none" in why
    # Unknown changed files: the workflow runs.
    assert pull_request_trigger(on, "labeled", "main", None) is None


def test_pull_request_refuses_tags_filters_and_target() -> None:
    assert "not a pull request filter" in (
        pull_request_trigger({"pull_request": {"tags": ["v*"]}}, "opened", "main") or ""
    )
    why = pull_request_trigger({"pull_request_target": None}, "opened", "main")
    assert why is not None and "pull_request_target is not run" in why
    assert "does not include pull_request" in (pull_request_trigger(["push"], "opened", "m") or "")


def test_schedule_crons_are_read_and_checked() -> None:
    on = {"schedule": [{"cron": "0  4 * * 1"}, {"cron": "*/30 * * * *"}]}
    assert schedule_crons(on) == ["0 4 * * 1", "*/30 * * * *"]
    assert schedule_crons({"push": None}) == []
    with pytest.raises(ValueError, match=r"on.schedule\[1\].cron has 3 field"):
        schedule_crons({"schedule": [{"cron": "0 4 * * 1"}, {"cron": "* * *"}]})
    with pytest.raises(ValueError, match="one key, cron"):
        schedule_crons({"schedule": [{"cron": "* * * * *", "tz": "UTC"}]})
    with pytest.raises(ValueError, match="a list of"):
        schedule_crons({"schedule": "0 4 * * *"})


def test_dispatch_trigger() -> None:
    assert dispatch_trigger({"workflow_dispatch": {"inputs": {}}}) is None
    assert "does not include workflow_dispatch" in (dispatch_trigger(["push"]) or "")


def test_a_large_payload_keeps_only_its_scalars() -> None:
    small = {"action": "opened", "pull_request": {"title": "x"}}
    assert bounded_payload(small) == small
    large = {"action": "opened", "blob": "x" * 300_000, "pull_request": {"body": "y" * 10}}
    kept = bounded_payload(large)
    assert kept == {"action": "opened", "ci_pool_truncated": True}
    assert RunFacts(event=kept).event == kept


def test_validate_refuses_a_bad_cron_with_its_place() -> None:
    from ci_pool.core.capabilities import Capability, merge_capabilities
    from ci_pool.core.workflow.parser import parse_workflow
    from ci_pool.exceptions import InputError

    caps = {n: Capability(**d) for n, d in merge_capabilities(None).items()}
    text = (
        "on:\n  schedule:\n    - cron: '0 4 * * 1'\n    - cron: '*/0 * * * *'\n"
        "jobs:\n  a:\n    runs-on: linux\n    steps:\n      - run: echo hi\n"
    )
    with pytest.raises(InputError) as exc:
        parse_workflow(text, "nightly.yml", caps, 10)
    message = str(exc.value)
    assert "nightly.yml:2:3" in message
    assert "on.schedule[1].cron minute '*/0': the step after '/' must be a number" in message
    ok = text.replace("*/0", "*/10")
    assert parse_workflow(ok, "nightly.yml", caps, 10).on["schedule"][1] == {"cron": "*/10 * * * *"}
