"""$GITHUB_ENV / $GITHUB_OUTPUT / $GITHUB_PATH as a step writes them."""

from __future__ import annotations

from ci_pool.core.envfiles import env_updates, parse_key_values, path_entries, reserved


def test_lines_and_delimited_blocks() -> None:
    parsed = parse_key_values(b"A=1\r\nB<<EOF\nx=y\r\nz\nEOF\nC=a=b\n")
    assert parsed.values == {"A": "1", "B": "x=y\nz", "C": "a=b"}
    assert parsed.problems == []


def test_a_block_without_its_delimiter_and_a_stray_line_are_problems() -> None:
    parsed = parse_key_values(b"junk\nB<<END\nnever closed\n")
    assert parsed.values == {"B": "never closed"}
    assert parsed.problems == [
        "line 1: 'junk' is neither NAME=value nor NAME<<EOF",
        "line 2: no line 'END' ends B<<",
    ]


def test_env_refuses_reserved_names_and_reports_bad_ones() -> None:
    values, refused, problems = env_updates(
        b"OK=1\nci_pool_job_id=x\nNODE_OPTIONS=--require x\nGITHUB_OUTPUT=/etc/x\n1BAD=2\n"
    )
    assert values == {"OK": "1"}
    assert refused == ["ci_pool_job_id", "NODE_OPTIONS", "GITHUB_OUTPUT"]
    assert problems == ["'1BAD' is not a variable name (letters, digits, _)"]
    assert not reserved("GITHUB_TOKEN") and reserved("Github_Env")


def test_path_entries_in_order_without_blank_lines() -> None:
    assert path_entries(b"/a/bin\n\n  /b/bin  \n") == ["/a/bin", "/b/bin"]
