"""Migration 0012 on both backends: pipelines written with a trigger beside their run facts
(0011) keep every fact in the one record after the upgrade, and get the old shape back on
a downgrade."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, DateTime, String, column, create_engine, inspect, select, table, text

from ci_pool.store import Store
from ci_pool.store.migrate import config

PR_TRIGGER = {
    "event_name": "pull_request", "ref": "refs/pull/7/merge", "ref_type": "branch",
    "ref_name": "7/head", "sha": "a" * 40, "head_ref": "feature", "base_ref": "main",
    "head_repo": "https://git.example/fork.git", "base_repo": "https://git.example/app.git",
    "number": 7, "action": "opened", "actor": "octocat", "schedule": "", "slot": "",
    "inputs": {}, "secrets_allowed": False,
    "payload": {"pull_request": {"title": "add a feature"}, "sender": {"login": "octocat"}},
}  # fmt: skip
PR_CONTEXT = {
    "event": PR_TRIGGER["payload"], "inputs": {}, "vars": {"STAGE": "ci"},
    "actor": "octocat", "run_number": 3,
}  # fmt: skip
DISPATCH_TRIGGER = {
    "event_name": "workflow_dispatch", "ref": "refs/heads/main", "ref_type": "branch",
    "ref_name": "main", "sha": "b" * 40, "actor": "api token ops",
    "inputs": {"target": "staging"}, "secrets_allowed": True,
    "payload": {"inputs": {"target": "staging"}, "ref": "main", "workflow": "ci.yml"},
}  # fmt: skip
#: A pipeline submitted before 0004 kept run facts: only its trigger.
DISPATCH_CONTEXT = None
#: ``ci-pool run``: run facts, no trigger.
RUN_CONTEXT = {"event": {}, "inputs": {}, "vars": {}, "actor": "", "run_number": 1}

PIPELINES = table(
    "pipelines",
    column("id", String), column("name", String), column("file", String),
    column("repo", String), column("ref", String), column("event", String),
    column("env", JSON), column("state", String), column("created_at", DateTime),
    column("context", JSON(none_as_null=True)), column("trigger", JSON(none_as_null=True)),
)  # fmt: skip


def _url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    url: str = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store at 0011 holding pipelines of the old shape."""
    from alembic import command

    url = _url(request, tmp_path)
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(config(conn), "0011_provtoken")
        for pid, event, context, trigger in (
            ("p-pr", "pull_request", PR_CONTEXT, PR_TRIGGER),
            ("p-dispatch", "workflow_dispatch", DISPATCH_CONTEXT, DISPATCH_TRIGGER),
            ("p-run", "push", RUN_CONTEXT, None),
        ):
            conn.execute(
                PIPELINES.insert().values(
                    id=pid,
                    name="ci",
                    file="ci.yml",
                    repo="https://git.example/app.git",
                    ref="main",
                    event=event,
                    env={},
                    state="succeeded",
                    created_at=datetime(2026, 11, 20, 10),
                    context=context,
                    trigger=trigger,
                )
            )
    engine.dispose()
    return url


def _rows(url: str, *names: str) -> dict[str, tuple[Any, ...]]:
    engine = create_engine(url)
    cols = [column(n, JSON(none_as_null=True)) for n in names]
    with engine.connect() as conn:
        rows = conn.execute(select(column("id"), *cols).select_from(table("pipelines"))).all()
    engine.dispose()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_the_trigger_moves_into_the_run_facts_and_back(old_store: str) -> None:
    from alembic import command

    store = Store(old_store)
    store.init_schema()  # to head
    assert "trigger" not in {c["name"] for c in inspect(store.engine).get_columns("pipelines")}

    pr = store.get_pipeline("p-pr").context
    assert pr is not None
    assert (pr.event_name, pr.number, pr.secrets_allowed) == ("pull_request", 7, False)
    assert (pr.head_ref, pr.base_ref, pr.ref, pr.sha) == (
        "feature",
        "main",
        PR_TRIGGER["ref"],
        "a" * 40,
    )
    assert pr.event["pull_request"]["title"] == "add a feature"
    assert (pr.actor, pr.vars, pr.run_number) == ("octocat", {"STAGE": "ci"}, 3)
    assert pr.model_extra == {}, "no key of the old trigger is left over"

    dispatch = store.get_pipeline("p-dispatch").context
    assert dispatch is not None
    assert (dispatch.event_name, dispatch.actor) == ("workflow_dispatch", "api token ops")
    assert dispatch.event["inputs"] == {"target": "staging"} and dispatch.ref_name == "main"

    run = store.get_pipeline("p-run").context
    assert run is not None and run.event_name == "" and run.secrets_allowed
    store.close()

    engine = create_engine(old_store)
    with engine.begin() as conn:
        command.downgrade(config(conn), "0011_provtoken")
    engine.dispose()
    rows = _rows(old_store, "context", "trigger")
    context, trigger = rows["p-pr"]
    assert trigger == PR_TRIGGER and context == PR_CONTEXT
    context, trigger = rows["p-dispatch"]
    assert trigger == DISPATCH_TRIGGER
    assert context is not None and context["event"] == DISPATCH_TRIGGER["payload"]
    assert rows["p-run"] == (RUN_CONTEXT, None)
    assert json.dumps(rows["p-pr"][1], sort_keys=True) == json.dumps(PR_TRIGGER, sort_keys=True)
