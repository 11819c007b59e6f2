"""Cron expressions as ``on.schedule`` writes them: five fields (minute hour day-of-month
month day-of-week), in UTC, with ``*``, ``*/n``, ranges ``a-b`` and ``a-b/n``, lists and
the names ``jan``-``dec`` and ``sun``-``sat``.

Bounds: an expression is at most ``MAX_CRON_LENGTH`` characters and each field at most
``MAX_CRON_ITEMS`` list items, so parsing is linear in the text and every set it builds
has at most 60 members. Macros (``@daily``), seconds, years, ``L``, ``W``, ``#`` and ``?``
are refused with the reason, as GitHub refuses them.

As in POSIX cron, when both day fields are restricted a day matches if either does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: Longest expression accepted (GitHub's longest real ones are under 40 characters).
MAX_CRON_LENGTH = 100
#: List items in one field.
MAX_CRON_ITEMS = 60
#: Minutes looked at when searching for a slot (one leap year and a day).
MAX_SEARCH_MINUTES = 367 * 24 * 60

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NUMBER = re.compile(r"^[0-9]{1,2}$")


class CronError(ValueError):
    """An expression that is not a five-field cron schedule; the message says why."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    #: The value names start at (1 for months, 0 for days).
    first: int = 0


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    # 7 is Sunday too, as in most crons.
    _Field("day of week", 0, 7, _DAYS, 0),
)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed schedule: the set of values each field matches."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    #: Whether each day field was restricted (not ``*``): POSIX's either-day rule.
    days_restricted: bool
    weekdays_restricted: bool

    def matches(self, at: datetime) -> bool:
        """Whether the minute ``at`` (UTC) is one of the schedule's slots."""
        at = at.astimezone(UTC)
        if at.minute not in self.minutes or at.hour not in self.hours:
            return False
        if at.month not in self.months:
            return False
        day = at.day in self.days
        weekday = (at.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return day or weekday
        return day and weekday

    def latest(self, now: datetime, within: timedelta) -> datetime | None:
        """The latest slot at or before ``now`` and after ``now - within`` (minutes, UTC)."""
        slot = now.astimezone(UTC).replace(second=0, microsecond=0)
        earliest = now.astimezone(UTC) - within
        steps = min(int(within.total_seconds() // 60) + 1, MAX_SEARCH_MINUTES)
        for _ in range(steps):
            if slot <= earliest:
                return None
            if self.matches(slot):
                return slot
            slot -= timedelta(minutes=1)
        return None

    def next_after(self, at: datetime) -> datetime | None:
        """The first slot strictly after ``at``, within a year and a day (None: never,
        like ``0 0 30 2 *``)."""
        slot = at.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(MAX_SEARCH_MINUTES):
            if self.matches(slot):
                return slot
            slot += timedelta(minutes=1)
        return None


def parse_cron(text: object) -> Cron:
    """A Cron from its text; CronError names the field and the problem otherwise."""
    if not isinstance(text, str):
        raise CronError("must be a string of five fields, like '30 5 * * 1-5'")
    if len(text) > MAX_CRON_LENGTH:
        raise CronError(f"is {len(text)} characters long; at most {MAX_CRON_LENGTH} are accepted")
    if any(not (c.isascii() and (c.isprintable() or c == " ")) for c in text):
        raise CronError("must hold only printable ASCII characters and spaces")
    stripped = text.strip()
    if stripped.startswith("@"):
        raise CronError(
            f"{stripped!r}: macros are not supported; write five fields (@daily is '0 0 * * *')"
        )
    parts = stripped.split()
    if len(parts) != 5:
        raise CronError(
            f"has {len(parts)} field(s); a schedule has five: minute hour day-of-month month "
            "day-of-week (like '30 5 * * 1-5')"
        )
    sets = [_parse_field(part, spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(0 if d == 7 else d for d in sets[4])
    return Cron(
        text=" ".join(parts),
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=weekdays,
        days_restricted=not parts[2].startswith("*"),
        weekdays_restricted=not parts[4].startswith("*"),
    )


def _parse_field(text: str, spec: _Field) -> frozenset[int]:
    items = text.split(",")
    if len(items) > MAX_CRON_ITEMS:
        raise CronError(f"{spec.name}: more than {MAX_CRON_ITEMS} list items")
    values: set[int] = set()
    for item in items:
        values.update(_parse_item(item, spec))
    return frozenset(values)


def _parse_item(item: str, spec: _Field) -> range:
    where = f"{spec.name} {item!r}"
    if not item:
        raise CronError(f"{spec.name}: an empty list item (two commas, or a trailing one)")
    body, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not _NUMBER.match(step_text) or int(step_text) == 0:
            raise CronError(f"{where}: the step after '/' must be a number from 1 to 99")
        step = int(step_text)
    if body == "*":
        low, high = spec.low, spec.high
    elif "-" in body:
        start, _, end = body.partition("-")
        low, high = _value(start, spec, where), _value(end, spec, where)
        if low > high:
            raise CronError(f"{where}: the range runs backwards ({low} is after {high})")
    else:
        low = _value(body, spec, where)
        # "5/15" means from 5 to the end in steps of 15, as in Vixie cron.
        high = spec.high if slash else low
    return range(low, high + 1, step)


def _value(text: str, spec: _Field, where: str) -> int:
    lowered = text.lower()
    if lowered in spec.names:
        return spec.names.index(lowered) + spec.first
    if not _NUMBER.match(text):
        hint = f" or a name ({spec.names[0]}-{spec.names[-1]})" if spec.names else ""
        if text in ("?", "L", "W") or "#" in text or text.endswith(("L", "W")):
            raise CronError(f"{where}: {text!r} is not supported; use numbers{hint}")
        raise CronError(f"{where}: {text!r} is not a number from {spec.low} to {spec.high}{hint}")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise CronError(f"{where}: {value} is outside {spec.low}-{spec.high}")
    return value
