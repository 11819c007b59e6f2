"""bench/ui.py's store filler: the copies of the submitted pipeline it writes are the rows
the UI benchmark's figures are about (states, timestamps, repos and refs per pipeline), and
every column it does not set is the submitted pipeline's own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"

# A real pool (its own redis-server and git daemon through bench/harness.py) submits the
# benchmark's workflow; the filler copies it to 100 jobs; the rows come back as JSON.
_PROBE = """
import json, sqlite3, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import ui
from harness import Bench
from ci_pool.service.pool import Pool
from ci_pool.settings import load_settings

args = ui.parse_args(["--jobs", "100"])
with Bench("ui-fill-test", args) as bench:
    server = bench.redis()
    repo = bench.git_repo({"README.md": "bench\\n"}, name="app.git")
    host = {"mode": "host"}
    settings = load_settings(None, home=bench.tmp / "home", broker_url=server.url,
        capabilities={"bench": {**host, "queue": "bench"}, "other": {**host, "queue": "other"}})
    pool = Pool(settings)
    pipeline = pool.submit_pipeline(ui.WORKFLOW, "ci.yml", repo.url, "main", commit=repo.sha)
    pool.store.close()
    db = Path(settings.resolved_store_url.removeprefix("sqlite:///"))
    counts = ui.fill_store(db, pipeline.id, 100, repo.url)
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    out = {
        "template": pipeline.id,
        "repo_url": repo.url,
        "counts": counts,
        "pipelines": [dict(r) for r in conn.execute("SELECT * FROM pipelines")],
        "jobs": [dict(r) for r in conn.execute("SELECT * FROM jobs")],
    }
    conn.close()
print(json.dumps(out, default=str))
"""


def test_filled_pipelines_are_copies_of_the_submitted_one() -> None:
    res = subprocess.run(
        [sys.executable, "-c", _PROBE, str(BENCH)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["counts"]["pipelines"] == 20 and out["counts"]["jobs"] == 100
    pipelines = {p["id"]: p for p in out["pipelines"]}
    template = pipelines.pop(out["template"])
    template_jobs = sorted(
        (j for j in out["jobs"] if j["pipeline_id"] == out["template"]), key=lambda j: j["name"]
    )
    assert len(template_jobs) == 5
    base = out["repo_url"].rsplit("/", 1)[0]
    # Pipeline i was created i minutes before the newest: order the copies by age.
    copies = sorted(pipelines.values(), key=lambda p: p["created_at"], reverse=True)
    for i, p in enumerate(copies, start=1):
        running, failed = i < 10, i >= 10 and i % 7 == 0
        assert p["state"] == ("running" if running else "failed" if failed else "succeeded")
        assert p["repo"] == f"{base}/repo{i % 20}.git"
        assert p["ref"] == ("main" if i % 3 else f"refs/heads/feature-{i % 50}")
        assert (p["finished_at"] is None) == running
        same = set(template) - {"id", "repo", "ref", "state", "created_at", "finished_at"}
        assert {k: p[k] for k in same} == {k: template[k] for k in same}
        jobs = sorted(
            (j for j in out["jobs"] if j["pipeline_id"] == p["id"]), key=lambda j: j["name"]
        )
        assert [j["name"] for j in jobs] == [j["name"] for j in template_jobs]
        for job, tpl in zip(jobs, template_jobs, strict=True):
            assert job["repo"] == p["repo"] and job["ref"] == p["ref"]
            assert job["created_at"] == job["queued_at"] == p["created_at"]
            if job["state"] == "blocked":
                assert job["started_at"] is None and job["runner_id"] is None
                assert job["updated_at"] > job["created_at"]
            else:
                assert job["started_at"] == job["updated_at"] > job["created_at"]
                assert job["runner_id"] == "bench@host" and job["attempt"] == 1
            assert (job["finished_at"] is None) == (job["state"] in ("running", "blocked"))
            assert job["exit_code"] == {"succeeded": 0, "failed": 1}.get(job["state"])
            kept = set(tpl) - {
                "id", "pipeline_id", "repo", "ref", "state", "attempt", "runner_id",
                "exit_code", "created_at", "updated_at", "queued_at", "started_at",
                "finished_at",
            }  # fmt: skip
            assert {k: job[k] for k in kept} == {k: tpl[k] for k in kept}
        states = sorted(j["state"] for j in jobs)
        if running:
            assert states == ["blocked"] * 4 + ["running"]
        else:
            assert states == (["failed"] if failed else []) + ["succeeded"] * (5 - failed)
    assert sum(p["state"] == "failed" for p in copies) == 1  # i = 14
