"""The IDX session calendar and the staleness colours (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from stockbit.timestamps import WIB
from web.session_calendar import (
    AMBER,
    CLOSED,
    FRESH,
    NO_DATA,
    RED,
    freshness,
    is_open,
    market_state,
    next_change,
    session_at,
)


def wib(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A moment in March 2026 (the 2nd is a Monday, the 6th a Friday)."""
    return datetime(2026, 3, day, hour, minute, second, tzinfo=WIB)


@pytest.mark.parametrize(
    ("moment", "session"),
    [
        (wib(2, 8, 59, 59), None),
        (wib(2, 9, 0), "Session 1"),
        (wib(2, 11, 59, 59), "Session 1"),
        (wib(2, 12, 0), None),  # Mon–Thu lunch break 12:00–13:30
        (wib(2, 13, 29, 59), None),
        (wib(2, 13, 30), "Session 2"),
        (wib(5, 15, 59, 59), "Session 2"),  # Thursday
        (wib(5, 16, 0), None),
        (wib(6, 11, 29, 59), "Session 1"),  # Friday: session 1 ends at 11:30
        (wib(6, 11, 30), None),
        (wib(6, 13, 30), None),  # ... and session 2 starts only at 14:00
        (wib(6, 14, 0), "Session 2"),
        (wib(7, 10, 0), None),  # Saturday
        (wib(8, 10, 0), None),  # Sunday
    ],
)
def test_session_bounds(moment: datetime, session: str | None) -> None:
    found = session_at(moment)
    assert (found.name if found else None) == session
    assert is_open(moment) is (session is not None)


def test_other_zones_are_converted_to_jakarta_time() -> None:
    # 02:00 UTC is 09:00 WIB; 22:00 on Sunday in New York (UTC-5) is 10:00 Monday WIB.
    assert is_open(datetime(2026, 3, 2, 2, 0, tzinfo=UTC))
    assert is_open(datetime(2026, 3, 1, 22, 0, tzinfo=timezone(timedelta(hours=-5))))
    assert not is_open(datetime(2026, 3, 2, 1, 59, tzinfo=UTC))


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        session_at(datetime(2026, 3, 2, 10, 0))


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (wib(2, 8, 0), wib(2, 9, 0)),
        (wib(2, 9, 0), wib(2, 12, 0)),  # at the opening instant the next change is the close
        (wib(2, 12, 30), wib(2, 13, 30)),
        (wib(6, 11, 45), wib(6, 14, 0)),  # Friday's longer break
        (wib(6, 16, 0), wib(9, 9, 0)),  # Friday close → Monday open
        (wib(7, 12, 0), wib(9, 9, 0)),  # Saturday
    ],
)
def test_next_change(moment: datetime, expected: datetime) -> None:
    assert next_change(moment) == expected


def test_market_state_summary() -> None:
    state = market_state(wib(6, 14, 30))
    assert state.open and state.session == "Session 2"
    assert state.next_change_at == wib(6, 16, 0)
    closed = market_state(wib(8, 9, 0))
    assert not closed.open and closed.session is None and closed.next_change_at == wib(9, 9, 0)


@pytest.mark.parametrize(
    ("age", "market_open", "expected"),
    [
        (None, True, NO_DATA),
        (None, False, NO_DATA),
        (3.0, True, FRESH),
        (14.9, True, FRESH),
        (15.0, True, AMBER),
        (59.9, True, AMBER),
        (60.0, True, RED),
        (3600.0, False, CLOSED),  # quiet outside sessions is normal
    ],
)
def test_freshness(age: float | None, market_open: bool, expected: str) -> None:
    assert freshness(age, market_open) == expected
