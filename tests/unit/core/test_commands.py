"""Workflow commands read from a step's output: what is logged, masked and annotated."""

from __future__ import annotations

from ci_pool import defaults
from ci_pool.core.commands import CommandReader
from ci_pool.core.masking import Masker


def reader(debug: bool = False) -> CommandReader:
    r = CommandReader(Masker(), debug=debug)
    r.begin_step(1)
    return r


def test_plain_lines_and_unknown_commands_pass_unchanged() -> None:
    r = reader()
    for line in ("hello", "::not a command", "::set-output name=x::1", "a ::error::b"):
        assert r.feed(line) == [line]
    assert r.take() == []


def test_add_mask_hides_the_value_from_the_command_line_on() -> None:
    r = reader()
    assert r.feed("::add-mask::hunter2-value") == ["::add-mask::***"]
    assert r.masker.mask("pw hunter2-value") == "pw ***"
    assert r.feed("::add-mask::ab") == [
        "::add-mask::***",
        "##[ci-pool] ::add-mask:: value shorter than the 4 characters a mask needs; "
        "it is not masked",
    ]


def test_annotations_carry_their_properties_unescaped_and_masked() -> None:
    r = reader()
    r.feed("::add-mask::topsecret")
    shown = r.feed("::error file=a%2Cb.py,line=3,col=7,endLine=4,title=T%3Ax::bad topsecret%0Anext")
    # The log writer masks the lines it is given back; the annotation is masked here.
    assert [r.masker.mask(line) for line in shown] == ["##[error]a,b.py:3:7: T:x: bad *** next"]
    (a,) = r.take()
    assert a.model_dump() == {
        "level": "error",
        "message": "bad ***\nnext",
        "step": 1,
        "title": "T:x",
        "file": "a,b.py",
        "line": 3,
        "end_line": 4,
        "col": 7,
        "end_column": None,
    }
    r.feed("::notice line=nope::n")
    assert r.take()[0].line is None


def test_groups_fold_and_one_left_open_closes_at_the_end_of_the_step() -> None:
    r = reader()
    assert r.feed("::group::Build") == ["##[group]Build"]
    assert r.feed("::group::Test") == ["##[endgroup]", "##[group]Test"]
    assert r.end_step() == ["##[endgroup]"]
    assert r.feed("::endgroup::") == []


def test_debug_lines_show_only_in_debug_mode() -> None:
    assert reader().feed("::debug::x") == []
    assert reader(debug=True).feed("::debug::x") == ["##[debug]x"]


def test_stop_commands_turn_commands_off_until_the_token_and_the_step_ends() -> None:
    r = reader()
    r.feed("::stop-commands::tok")
    assert r.feed("::add-mask::not-a-mask") == ["::add-mask::not-a-mask"]
    assert r.masker.mask("not-a-mask") == "not-a-mask"
    assert r.feed("::tok::") == ["::tok::"]
    assert r.feed("::warning::on again") == ["##[warning]on again"]
    r.feed("::stop-commands::other")
    r.begin_step(2)
    assert r.feed("::notice::next step") == ["##[notice]next step"]


def test_annotations_are_bounded_per_kind_per_step_and_per_job() -> None:
    r = reader()
    for i in range(15):
        r.feed(f"::error::e{i}")
        r.feed(f"::warning::w{i}")
    assert len(r.take()) == 2 * defaults.ANNOTATIONS_PER_STEP
    total = 2 * defaults.ANNOTATIONS_PER_STEP
    step = 2
    while total < defaults.ANNOTATIONS_PER_JOB + 10:
        r.begin_step(step)
        for _ in range(5):
            r.feed("::notice::n")
        total += 5
        step += 1
    assert len(r.take()) == defaults.ANNOTATIONS_PER_JOB - 2 * defaults.ANNOTATIONS_PER_STEP
    assert r.feed("::error::x" + "y" * 10) == ["##[error]xyyyyyyyyyy"]


def test_legacy_environment_commands_are_refused_with_advice() -> None:
    assert reader().feed("::set-env name=A::1")[1].endswith("append to $GITHUB_ENV instead")
