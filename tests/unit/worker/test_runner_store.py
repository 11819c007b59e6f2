"""The runner's store seam: which store a runner opens, rows crossing the API unchanged,
and the server's artifact path and upload-route rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ci_pool.api.limits import streamed
from ci_pool.core.evidence import Evidence
from ci_pool.exceptions import ConfigError
from ci_pool.service.runner_io import artifact_parts
from ci_pool.settings import Settings
from ci_pool.store import Job, Store
from ci_pool.store.models import Pipeline
from ci_pool.store.wire import dump_row, load_row
from ci_pool.worker.api_store import ApiRunnerStore
from ci_pool.worker.runner_store import open_runner_store, through_api

CREDENTIAL = "circ_" + "x" * 43


def test_a_runner_with_an_api_url_and_a_credential_uses_the_api_and_no_store(
    tmp_path: Path,
) -> None:
    api = Settings(home=tmp_path, api_url="http://127.0.0.1:9", runner_credential=CREDENTIAL)
    assert through_api(api)
    assert isinstance(open_runner_store(api), ApiRunnerStore)
    assert not (tmp_path / "ci-pool.db").exists()
    # The credential file serves as well as the setting.
    (tmp_path / "runner-credential").write_text(CREDENTIAL + "\n")
    assert through_api(Settings(home=tmp_path, api_url="http://127.0.0.1:9"))
    # Without either, the embedded default: the store.
    local = Settings(home=tmp_path / "other")
    assert not through_api(local)
    assert isinstance(open_runner_store(local), Store)


def test_a_database_url_beside_a_runner_credential_is_refused(tmp_path: Path) -> None:
    both = Settings(
        home=tmp_path,
        api_url="http://127.0.0.1:9",
        runner_credential=CREDENTIAL,
        store_url=f"sqlite:///{tmp_path}/x.db",
    )
    with pytest.raises(ConfigError, match="must hold no database URL") as err:
        through_api(both)
    assert err.value.key == "store_url"


def test_plain_http_to_another_host_is_refused_before_any_call(tmp_path: Path) -> None:
    remote = Settings(home=tmp_path, api_url="http://10.1.2.3:8080", runner_credential=CREDENTIAL)
    with pytest.raises(ConfigError, match="refusing plain http://"):
        ApiRunnerStore(remote)


def test_rows_cross_the_api_with_their_types(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.init_schema()
    job = store.create_job(
        name="build",
        capability="linux",
        queue="linux",
        repo="https://git.example.com/org/app.git",
        ref="main",
        steps=[{"name": "run", "run": "make"}],
        env={"A": "1"},
        labels=["linux"],
        timeout_s=60,
        max_attempts=3,
        evidence=Evidence(job_id="j", runner_id="r", attempt=1),
    )
    row = store.get_job(job.id)
    back = load_row(Job, json.loads(json.dumps(dump_row(row))))
    for column in Job.__table__.columns:
        assert getattr(back, column.key) == getattr(row, column.key), column.key
    assert back.state == "queued" and back.created_at.tzinfo is not None
    assert back.steps[0].run == "make" and back.evidence is not None
    pipeline = Pipeline(id="p1", repo="r", ref="main", state="running")
    assert load_row(Pipeline, dump_row(pipeline)).state == "running"
    store.close()


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("bundle/app.txt", True),
        ("a.txt", True),
        ("../escape", False),
        ("a/../../b", False),
        ("/etc/passwd", False),
        ("a//b", False),
        ("./a", False),
        ("a/.", False),
        ("a\\..\\b", False),
        ("a\0b", False),
        ("", False),
    ],
)
def test_artifact_paths_stay_inside_their_directory(path: str, ok: bool) -> None:
    assert (artifact_parts(path) is not None) is ok


def test_only_the_runner_upload_routes_stream_past_the_body_limit() -> None:
    base = "/v1/runner/jobs/j/attempts/1"
    assert streamed("PUT", base + "/artifacts")
    assert streamed("PUT", base + "/cache/archive")
    assert not streamed("POST", base + "/log")
    assert not streamed("PUT", base + "/outputs")
    assert not streamed("PUT", "/v1/jobs/artifacts")
