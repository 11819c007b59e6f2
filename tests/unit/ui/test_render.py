"""What the web view draws from job output: ANSI colours as classes, groups folded, every
piece of text escaped, step outcomes from the log, summaries sanitized, and ``next=``
kept on the web view."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from ci_pool.store.browsing import LogLine
from ci_pool.ui import render
from ci_pool.ui.web import safe_next

AT = datetime(2026, 11, 26, 5, 0, 0, tzinfo=UTC)


def test_ansi_colours_become_classes_and_other_escapes_go() -> None:
    spans = render.spans("\x1b[1;31mred\x1b[0m plain \x1b[2Kcleared\x07 \x1b[38;5;9mx\x1b[39my")
    assert [(s.text, s.classes) for s in spans] == [
        ("red", "ansi-bold ansi-fg-1"),
        (" plain ", ""),
        ("cleared", ""),
        (" ", ""),
        ("x", ""),
        ("y", ""),
    ]
    assert [(s.text, s.classes) for s in render.spans("\x1b[92;41mhi")] == [
        ("hi", "ansi-bg-1 ansi-fg-10")
    ]


def test_log_html_escapes_text_and_folds_groups() -> None:
    lines = [
        LogLine(1, AT, "##[group]build <b>"),
        LogLine(2, AT, "<script>alert(1)</script>"),
        LogLine(3, AT, "##[endgroup]"),
        LogLine(4, AT + timedelta(seconds=3), "##[ci-pool] done & dusted"),
    ]
    html = str(render.log_html(render.log_blocks(lines)))
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<details class="group" id="G1"><summary><div class="line" id="L1">' in html
    assert "build &lt;b&gt;</span></div></summary>" in html
    assert html.endswith(
        '<div class="line own" id="L4"><a class="ln" href="#L4">4</a>'
        '<time class="ts">05:00:03</time>'
        '<span class="tx">##[ci-pool] done &amp; dusted</span></div></div>'
    )
    assert "endgroup" not in html


def _top_blocks(chunk: str) -> int:
    """How many lines and groups a chunk holds (a group's lines count as one)."""
    outside = re.sub(r"<details.*?</details>", "<details>", chunk)
    return outside.count('<div class="line') + outside.count("<details>")


def test_log_html_puts_the_lines_in_chunks_in_order() -> None:
    """The lines in ``chunk`` blocks of at most CHUNK_BLOCKS lines or groups each (what the
    browser skips drawing while off screen), in order, a group never split."""
    size = render.CHUNK_BLOCKS
    n = 2 * size + 5
    texts = {4: "##[group]inside", size + 3: "##[endgroup]"}
    lines = [LogLine(i, AT, texts.get(i, f"line {i}")) for i in range(1, n + 1)]
    html = str(render.log_html(render.log_blocks(lines)))
    chunks = html.split('</div><div class="chunk">')
    assert html.startswith('<div class="chunk">') and html.endswith("</div></div>")
    # Lines 1-3, the group (lines 4 to size + 3), then the size + 2 lines after it.
    assert [_top_blocks(c) for c in chunks] == [size, 6]
    assert html.count("<details") == 1 and "</details>" in chunks[0]
    shown = [int(x) for x in re.findall(r'id="L(\d+)"', html)]
    assert shown == [i for i in range(1, n + 1) if i != size + 3]
    assert str(render.log_html([])) == ""


def test_step_outcomes_come_from_the_step_lines() -> None:
    found = render.step_outcomes(
        [
            "##[step] 1 checkout",
            "##[step] 1 exit 0 in 0.25s",
            "##[step] 2 exit 3 in 75.00s",
            "##[step] 3 timed out after 10s",
            "##[step] 4 deploy skipped",
        ]
    )
    assert found["1"] == render.StepOutcome("ok", 0.25)
    assert found["2"] == render.StepOutcome("exit 3", 75.0)
    assert found["3"].outcome == "timed out" and found["4"].outcome == "skipped"
    assert render.seconds(0.25) == "0.25s" and render.seconds(75.0) == "1m 15s"


def test_summaries_keep_markdown_and_lose_anything_active() -> None:
    html = render.summary_html(
        "## Title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n<img src=x onerror=alert(1)>\n\n"
        "[x](javascript:alert(2)) [ok](https://example.org) <script>alert(3)</script>"
    )
    assert "<h2>Title</h2>" in html and "<table>" in html
    assert "<img" not in html and "<script" not in html
    assert 'href="javascript' not in html
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">ok</a>' in html


def test_gantt_bars_scale_to_the_run() -> None:
    bars = render.gantt(
        [
            ("a", "succeeded", AT, AT + timedelta(seconds=10)),
            ("b", "running", AT + timedelta(seconds=10), None),
            ("c", "blocked", None, None),
        ],
        AT + timedelta(seconds=20),
    )
    assert [(b.x, b.width, b.y) for b in bars] == [(0, 500, 0), (500, 500, 24), (0, 0, 48)]


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("/ui/pipelines?state=failed", "/ui/pipelines?state=failed"),
        ("/ui/jobs/abc#L12", "/ui/jobs/abc#L12"),
        ("https://evil.example/ui/", "/ui/"),
        ("//evil.example/ui/", "/ui/"),
        ("/\\evil.example", "/ui/"),
        ("/ui/../v1/jobs", "/ui/"),
        ("/v1/jobs", "/ui/"),
        ("javascript:alert(1)", "/ui/"),
        ("/ui/\nx", "/ui/"),
        (None, "/ui/"),
    ],
)
def test_next_stays_on_the_web_view(given: str | None, kept: str) -> None:
    assert safe_next(given) == kept
