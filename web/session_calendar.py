"""IDX trading sessions in Jakarta time, and how fresh a ticker's data should be (pure).

The regular market of the Indonesia Stock Exchange trades in two sessions a day, in WIB
(UTC+7, no daylight saving):

========  ===============  ===============
day       session 1        session 2
========  ===============  ===============
Mon–Thu   09:00–12:00      13:30–16:00
Fri       09:00–11:30      14:00–16:00
========  ===============  ===============

Public holidays are not known here: on a holiday the page treats the market as open and may
colour quiet tickers as stale. That is a display hint only; nothing is captured differently.

Every function takes the moment as an argument (never reads the clock), so the web app passes
its injectable clock and the tests pass fixed instants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

from stockbit.timestamps import WIB

FRESH = "ok"
AMBER = "amber"
RED = "red"
CLOSED = "closed"
NO_DATA = "none"

STALE_AMBER_S = 15.0
"""A ticker without a book update for this long during a session is shown amber."""
STALE_RED_S = 60.0
"""... and red after this long."""


@dataclass(frozen=True, slots=True)
class Session:
    """One trading session: a name and its WIB wall-clock bounds (start inclusive, end not)."""

    name: str
    start: time
    end: time


_MON_THU = (
    Session("Session 1", time(9, 0), time(12, 0)),
    Session("Session 2", time(13, 30), time(16, 0)),
)
_FRI = (
    Session("Session 1", time(9, 0), time(11, 30)),
    Session("Session 2", time(14, 0), time(16, 0)),
)
SCHEDULE: dict[int, tuple[Session, ...]] = {
    0: _MON_THU,
    1: _MON_THU,
    2: _MON_THU,
    3: _MON_THU,
    4: _FRI,
}
"""Sessions by ``datetime.weekday()`` (Monday = 0); Saturday and Sunday have none."""


@dataclass(frozen=True, slots=True)
class MarketState:
    """Whether the market is in a session at a moment, and when that next changes."""

    open: bool
    session: str | None
    next_change_at: datetime
    """The next instant (WIB) at which a session starts (if closed) or ends (if open)."""


def _wib(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        # A naive time could be read in the machine's zone; the calendar must never guess.
        raise ValueError("the session calendar needs a timezone-aware datetime")
    return moment.astimezone(WIB)


def session_at(moment: datetime) -> Session | None:
    """The session in progress at ``moment``, or None between sessions and on weekends."""
    local = _wib(moment)
    clock = local.time().replace(tzinfo=None)
    for session in SCHEDULE.get(local.weekday(), ()):
        if session.start <= clock < session.end:
            return session
    return None


def is_open(moment: datetime) -> bool:
    """True while a regular session is in progress."""
    return session_at(moment) is not None


def next_change(moment: datetime) -> datetime:
    """The next session start or end strictly after ``moment`` (WIB)."""
    local = _wib(moment)
    day = local.date()
    # A week always holds a session, so eight days of look-ahead always finds the next bound.
    for offset in range(8):
        date = day + timedelta(days=offset)
        for session in SCHEDULE.get(date.weekday(), ()):
            for bound in (session.start, session.end):
                instant = datetime.combine(date, bound, tzinfo=WIB)
                if instant > local:
                    return instant
    raise AssertionError("unreachable: the schedule has a session every week")


def market_state(moment: datetime) -> MarketState:
    """Open or closed at ``moment``, the session's name, and the next change."""
    session = session_at(moment)
    return MarketState(
        open=session is not None,
        session=session.name if session else None,
        next_change_at=next_change(moment),
    )


def freshness(age_s: float | None, market_open: bool) -> str:
    """How the page colours a ticker's last-update age.

    ``none`` when the ticker never updated, ``closed`` outside sessions (quiet is normal
    then), otherwise ``ok`` / ``amber`` / ``red`` by :data:`STALE_AMBER_S` and
    :data:`STALE_RED_S`.
    """
    if age_s is None:
        return NO_DATA
    if not market_open:
        return CLOSED
    if age_s >= STALE_RED_S:
        return RED
    if age_s >= STALE_AMBER_S:
        return AMBER
    return FRESH
