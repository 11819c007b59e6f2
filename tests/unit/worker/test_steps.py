"""Reading back what a step wrote to $GITHUB_OUTPUT."""

from ci_pool.worker.steps import parse_outputs


def test_name_value_lines_are_read_and_the_first_equals_sign_splits() -> None:
    assert parse_outputs(b"version=1.2.3\nurl=http://x/?a=b\n") == {
        "version": "1.2.3",
        "url": "http://x/?a=b",
    }


def test_a_delimited_block_keeps_its_lines_and_an_unclosed_block_runs_to_the_end() -> None:
    data = b"notes<<EOF\nline one\nline=two\nEOF\ntail<<END\nlast\n"
    assert parse_outputs(data) == {"notes": "line one\nline=two", "tail": "last"}


def test_lines_without_a_separator_are_ignored_and_bad_bytes_are_replaced() -> None:
    assert parse_outputs(b"junk\nok=\xff\n") == {"ok": "\ufffd"}
