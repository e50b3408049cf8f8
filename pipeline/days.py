"""The Jakarta (WIB) trading day: the one place that parses a day, dates an instant, bounds a day.

A day is always written ``YYYY-MM-DD`` and is always the calendar day in Jakarta (UTC+7, no
daylight saving), never the machine's zone. Every module that reads a day from a user, a file
name or a Redis key, or takes the day of an exchange timestamp, calls this one (pure: the clock
is always passed in).

Why a pattern before ``date.fromisoformat``: on Python 3.11 it also accepts ``20260302`` and
week dates such as ``2026-W10-1``, which would then name keys and files the writers never use.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta

from stockbit.timestamps import WIB

__all__ = [
    "DAY_FORM",
    "WIB",
    "DayError",
    "age_days",
    "bounds",
    "day_of",
    "day_of_stamp",
    "days_in",
    "is_day",
    "parse_day",
    "start_of",
    "today",
]

DAY_FORM = "YYYY-MM-DD"
"""How a day is written everywhere: file names, Redis keys, the CLI, the API."""

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


class DayError(ValueError):
    """Text that is not a day written ``YYYY-MM-DD`` (the message names the expected form)."""


def parse_day(text: str) -> date:
    """The date ``text`` names; :class:`DayError` unless it is exactly ``YYYY-MM-DD`` and real."""
    if not isinstance(text, str) or not _DAY.match(text):
        raise DayError(f"not a day: {str(text)[:40]!r} (expected {DAY_FORM}, e.g. 2026-03-02)")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise DayError(f"not a real date: {text!r} (expected {DAY_FORM})") from None


def check_day(text: str) -> str:
    """``text`` itself if it is a valid day (for keys and paths); :class:`DayError` otherwise."""
    parse_day(text)
    return text


def is_day(text: str) -> bool:
    """Whether :func:`parse_day` accepts ``text``."""
    try:
        parse_day(text)
    except DayError:
        return False
    return True


def day_of(moment: datetime) -> str:
    """The Jakarta day of an aware instant; ``ValueError`` for a naive one (its zone is unknown)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a naive datetime has no Jakarta day; give it a time zone")
    return moment.astimezone(WIB).date().isoformat()


def day_of_stamp(stamp: str) -> str:
    """The day of a normalised exchange timestamp (``YYYY-MM-DDTHH:MM:SS.ffffff+07:00``).

    The records and rows carry times already converted to WIB, so their day is their first ten
    characters; this is the writer's hot path, hence no parsing.
    """
    return stamp[:10]


def today(now: datetime) -> str:
    """The Jakarta day at ``now`` (aware)."""
    return day_of(now)


def start_of(day: str | date) -> datetime:
    """Midnight WIB at the start of ``day``."""
    the_day = parse_day(day) if isinstance(day, str) else day
    return datetime.combine(the_day, time.min, WIB)


def bounds(day: str | date) -> tuple[datetime, datetime]:
    """``[start, end)`` of ``day`` in WIB: midnight to the next midnight."""
    start = start_of(day)
    return start, start + timedelta(days=1)


def age_days(day: str | date, now: datetime) -> int:
    """Whole Jakarta days from ``day`` to the day of ``now`` (0 today, 1 yesterday)."""
    the_day = parse_day(day) if isinstance(day, str) else day
    return (parse_day(day_of(now)) - the_day).days


def days_in(start: str, end: str) -> Iterator[str]:
    """Every day from ``start`` to ``end`` inclusive; :class:`DayError` if ``end`` is earlier."""
    first, last = parse_day(start), parse_day(end)
    if last < first:
        raise DayError(f"{end} is before {start}")
    for offset in range((last - first).days + 1):
        yield (first + timedelta(days=offset)).isoformat()
