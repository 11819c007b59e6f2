"""The five-field cron parser of ``on.schedule``: what each form matches, what is refused
and why, and its bounds under arbitrary input."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ci_pool.core.cron import MAX_CRON_LENGTH, CronError, parse_cron


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "minute", "expected"),
    [
        ("* * * * *", "2026-11-25 10:07", True),
        ("*/15 * * * *", "2026-11-25 10:45", True),
        ("*/15 * * * *", "2026-11-25 10:46", False),
        ("30 5 * * 1-5", "2026-11-25 05:30", True),  # a Wednesday
        ("30 5 * * 1-5", "2026-11-29 05:30", False),  # a Sunday
        ("0 0 * * sun", "2026-11-29 00:00", True),
        ("0 0 * * 7", "2026-11-29 00:00", True),
        ("0 12 1,15 * *", "2026-11-15 12:00", True),
        ("0 12 1,15 * *", "2026-11-16 12:00", False),
        ("0 0 * jan-mar *", "2026-02-01 00:00", True),
        ("0 0 * JAN-MAR *", "2026-04-01 00:00", False),
        ("10-20/5 * * * *", "2026-11-25 10:15", True),
        ("10-20/5 * * * *", "2026-11-25 10:25", False),
        ("5/20 * * * *", "2026-11-25 10:45", True),
        # POSIX: both day fields restricted -> either one matches.
        ("0 0 13 * fri", "2026-11-20 00:00", True),  # a Friday, not the 13th
        ("0 0 13 * fri", "2026-11-13 00:00", True),
        ("0 0 13 * fri", "2026-11-14 00:00", False),
    ],
)
def test_what_a_schedule_matches(cron: str, minute: str, expected: bool) -> None:
    assert parse_cron(cron).matches(at(minute)) is expected


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("* * * *", "has 4 field(s)"),
        ("* * * * * *", "has 6 field(s)"),
        ("@daily", "macros are not supported"),
        ("60 * * * *", "minute '60': 60 is outside 0-59"),
        ("* 24 * * *", "hour '24'"),
        ("* * 0 * *", "day of month '0'"),
        ("* * * 13 *", "month '13'"),
        ("* * * * 8", "day of week '8'"),
        ("*/0 * * * *", "the step after '/' must be a number from 1 to 99"),
        ("20-10 * * * *", "the range runs backwards"),
        ("* * ? * *", "'?' is not supported"),
        ("* * L * *", "'L' is not supported"),
        ("* * * * 1#2", "is not supported"),
        ("1,,2 * * * *", "an empty list item"),
        ("x * * * *", "'x' is not a number from 0 to 59"),
        ("* * * foo *", "or a name (jan-dec)"),
        ("*\t* * * *\x00", "printable ASCII"),
        ("1 " * 60, f"at most {MAX_CRON_LENGTH} are accepted"),
    ],
)
def test_a_bad_schedule_says_what_is_wrong(cron: str, message: str) -> None:
    with pytest.raises(CronError) as exc:
        parse_cron(cron)
    assert message in str(exc.value)


def test_a_non_string_schedule_is_refused() -> None:
    with pytest.raises(CronError, match="must be a string"):
        parse_cron(30)


def test_the_latest_slot_within_a_window() -> None:
    cron = parse_cron("0 * * * *")
    now = at("2026-11-25 10:03")
    assert cron.latest(now, timedelta(minutes=5)) == at("2026-11-25 10:00")
    assert cron.latest(now, timedelta(minutes=2)) is None
    assert cron.latest(at("2026-11-25 10:00"), timedelta(minutes=5)) == at("2026-11-25 10:00")


def test_next_slot_and_a_schedule_that_never_comes() -> None:
    assert parse_cron("30 5 * * 1-5").next_after(at("2026-11-27 06:00")) == at("2026-11-30 05:30")
    assert parse_cron("0 0 30 2 *").next_after(at("2026-01-01 00:00")) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_schedule_or_a_cron_error_within_bounds(text: str) -> None:
    start = time.perf_counter()
    try:
        cron = parse_cron(text)
    except CronError as exc:
        assert str(exc) and len(str(exc)) < 400
    else:
        assert len(text) <= MAX_CRON_LENGTH
        for values in (cron.minutes, cron.hours, cron.days, cron.months, cron.weekdays):
            assert len(values) <= 60
    assert time.perf_counter() - start < 1.0


_FIELD = st.one_of(
    st.just("*"),
    st.integers(0, 59).map(str),
    st.tuples(st.integers(0, 20), st.integers(21, 59), st.integers(1, 30)).map(
        lambda t: f"{t[0]}-{t[1]}/{t[2]}"
    ),
)


@settings(max_examples=100, deadline=None)
@given(st.tuples(_FIELD, st.sampled_from(["*", "*/2", "3", "0-23/6"])))
def test_latest_finds_only_matching_slots(fields: tuple[str, str]) -> None:
    cron = parse_cron(f"{fields[0]} {fields[1]} * * *")
    now = at("2026-11-25 10:03")
    slot = cron.latest(now, timedelta(days=2))
    assert slot is not None and cron.matches(slot) and slot <= now
    between = slot + timedelta(minutes=1)
    while between <= now:
        assert not cron.matches(between)
        between += timedelta(minutes=1)
