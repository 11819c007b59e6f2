"""The web view's reads on both backends: a log read a window of lines at a time, the
lines that start with a prefix, and keyset pages of pipelines by filter."""

from __future__ import annotations

from ci_pool.store import Store
from ci_pool.store.browsing import PipelineFilter
from tests.unit.store.test_repository import new_job


def test_log_window_reads_numbered_lines_from_any_line(store: Store) -> None:
    job_id = new_job(store).id
    for seq, chunk in enumerate(["one\ntwo\n", "##[step] 1 exit 0 in 0.50s\nfour\n", "five"]):
        store.append_log(job_id, 1, seq, chunk)
    whole = store.log_window(job_id, None, 1, 100, 10_000)
    assert [(x.number, x.text) for x in whole.lines] == [
        (1, "one"),
        (2, "two"),
        (3, "##[step] 1 exit 0 in 0.50s"),
        (4, "four"),
        (5, "five"),
    ]
    assert whole.attempt == 1 and not whole.more
    first = store.log_window(job_id, None, 1, 2, 10_000)
    assert [x.text for x in first.lines] == ["one", "two"] and first.more
    assert first.next_line == 3
    rest = store.log_window(job_id, 1, 3, 2, 10_000)
    assert [x.number for x in rest.lines] == [3, 4] and rest.more
    tail = store.log_window(job_id, 1, 5, 2, 10_000)
    assert [x.text for x in tail.lines] == ["five"] and not tail.more
    assert store.log_window(job_id, 1, 99, 2, 10_000).lines == []
    # The next window starts at the chunk the previous one stopped in, with the same lines.
    assert rest.resume == (2, 5)
    resumed = store.log_window(job_id, 1, 5, 2, 10_000, resume=rest.resume)
    assert resumed.lines == tail.lines
    bogus = store.log_window(job_id, 1, 3, 2, 10_000, resume=(1, 99))
    assert [x.number for x in bogus.lines] == [3, 4], "a resume past the line is ignored"
    by_bytes = store.log_window(job_id, 1, 1, 100, 5)
    assert [x.text for x in by_bytes.lines] == ["one", "two"] and by_bytes.more
    assert store.log_window("nope", None, 1, 10, 100).attempt is None
    marks = store.log_lines_starting(job_id, 1, "##[step] ")
    assert marks == ["##[step] 1 exit 0 in 0.50s"]


def test_pipelines_pages_newest_first_by_filter(store: Store) -> None:
    made = [
        store.create_pipeline(
            {
                "name": f"p{i}",
                "repo": "https://git.example/b.git",
                "ref": "main" if i % 2 else "dev",
            },
            [],
        ).id
        for i in range(5)
    ]
    where = PipelineFilter(repo="https://git.example/b.git")
    first = store.list_pipelines(where, limit=3)
    assert [p.id for p in first] == made[::-1][:3]
    after = (first[-1].created_at, first[-1].id)
    assert [p.id for p in store.list_pipelines(where, limit=3, after=after)] == made[::-1][3:]
    dev = store.list_pipelines(PipelineFilter(ref="dev", repo=where.repo), limit=10)
    assert len(dev) == 3
    assert store.list_pipelines(PipelineFilter(state="failed"), limit=10) == []
    assert store.list_pipelines(where, limit=10, capabilities=["linux"]) == [], "no jobs"
