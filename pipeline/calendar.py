"""The IDX trading calendar: which days the exchange trades, and its phases within a day (pure).

Every process that must know whether the market is trading asks this one module. It is pure
in the sense that matters for tests and replays: every question takes the instant (or the
day) as an argument; nothing here reads the clock or the environment. The only I/O is
reading ``HOLIDAYS_FILE`` once, when the calendar is built (:func:`load_calendar`).

**Phases** (regular market, WIB = UTC+7, BEI Kep-00055/BEI/03-2023, in force since
3 April 2023; ``shared/stockbit-protocol.md`` §6.1). Every phase is a half-open interval
``[start, end)``, so the exchange's inclusive ``…:59`` ends become the next second:

=============  ===============  ===============
phase          Mon–Thu          Friday
=============  ===============  ===============
pre-opening    08:45 – 09:00    08:45 – 09:00
session 1      09:00 – 12:00    09:00 – 11:30
lunch break    12:00 – 13:30    11:30 – 14:00
session 2      13:30 – 15:50    14:00 – 15:50
pre-closing    15:50 – 16:01    15:50 – 16:01
post-trading   16:01 – 16:15    16:01 – 16:15
=============  ===============  ===============

Outside these, on Saturdays, Sundays and closed days, the phase is ``closed``. Continuous
trading is sessions 1 and 2 only; pre-opening and pre-closing are call auctions, and
post-trading only matches at the closing price.

**Closed days**: Indonesia's holidays from the ``holidays`` package, categories ``public``
*and* ``government`` (the latter holds the joint-leave days, *cuti bersama*, on which IDX
also closes), plus IDX's own year-end closure on 31 December, then the additions and
removals of an optional ``HOLIDAYS_FILE`` (format in :func:`parse_holidays_file`). Islamic
holidays of years the package has no decree for are estimates (named "(estimated)"), and
joint-leave days are only known once the government publishes them; ``HOLIDAYS_FILE`` is
how an operator corrects either without a code change.

**Next open** is the start of the next *pre-opening* (08:45 WIB), not of session 1: that is
when the exchange takes orders again and the feed starts sending books, so anything that
must be connected for the open has to be ready by then.
"""

from __future__ import annotations

import enum
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import holidays

from pipeline.days import WIB, DayError, parse_day

if TYPE_CHECKING:
    from pipeline.settings import Settings

__all__ = [
    "AFTER_CLOSE",
    "CONTINUOUS",
    "HOLIDAY_CATEGORIES",
    "YEAR_END_REASON",
    "HolidaysFileError",
    "MarketState",
    "Phase",
    "PhaseSpan",
    "TradingCalendar",
    "check_holidays_file",
    "load_calendar",
    "parse_holidays_file",
]

HOLIDAY_CATEGORIES = ("public", "government")
"""The ``holidays`` categories IDX closes on: national holidays and joint-leave days."""
YEAR_END_REASON = "IDX year-end closure"
"""Why 31 December is closed: the exchange's own rule, not a national holiday."""
_FILE_REASON = "closed by HOLIDAYS_FILE"

AFTER_CLOSE = timedelta(minutes=30)
"""How long after post-trading ends a trading day's capture counts as over (16:45 WIB)."""

_LOOKAHEAD_DAYS = 3660
"""How far :meth:`TradingCalendar.next_change` searches for a trading day before giving up.
Every year has weekdays that are not holidays, so only an absurd ``HOLIDAYS_FILE`` (years of
closures) reaches it; then a clear error beats an endless loop."""


class Phase(enum.StrEnum):
    """A phase of the IDX regular market; the value is the name the JSON API carries."""

    CLOSED = "closed"
    PRE_OPENING = "pre_opening"
    SESSION_1 = "session_1"
    LUNCH_BREAK = "lunch_break"
    SESSION_2 = "session_2"
    PRE_CLOSING = "pre_closing"
    POST_TRADING = "post_trading"

    @property
    def label(self) -> str:
        """How a person reads it ("Session 1", "Lunch break")."""
        return _LABELS[self]

    @property
    def continuous(self) -> bool:
        """Whether this is a continuous-trading session (1 or 2)."""
        return self in CONTINUOUS

    @property
    def open(self) -> bool:
        """Whether the exchange takes part in trading: any phase but lunch and closed."""
        return self not in (Phase.CLOSED, Phase.LUNCH_BREAK)


_LABELS = {
    Phase.CLOSED: "Closed",
    Phase.PRE_OPENING: "Pre-opening",
    Phase.SESSION_1: "Session 1",
    Phase.LUNCH_BREAK: "Lunch break",
    Phase.SESSION_2: "Session 2",
    Phase.PRE_CLOSING: "Pre-closing",
    Phase.POST_TRADING: "Post-trading",
}
CONTINUOUS = frozenset({Phase.SESSION_1, Phase.SESSION_2})
"""The continuous-trading phases."""


def _schedule(lunch: time, afternoon: time) -> tuple[tuple[Phase, time, time], ...]:
    return (
        (Phase.PRE_OPENING, time(8, 45), time(9, 0)),
        (Phase.SESSION_1, time(9, 0), lunch),
        (Phase.LUNCH_BREAK, lunch, afternoon),
        (Phase.SESSION_2, afternoon, time(15, 50)),
        (Phase.PRE_CLOSING, time(15, 50), time(16, 1)),
        (Phase.POST_TRADING, time(16, 1), time(16, 15)),
    )


_MON_THU = _schedule(time(12, 0), time(13, 30))
_FRIDAY = _schedule(time(11, 30), time(14, 0))
_SCHEDULE = {0: _MON_THU, 1: _MON_THU, 2: _MON_THU, 3: _MON_THU, 4: _FRIDAY}
"""Phases by ``date.weekday()`` (Monday = 0); Saturday and Sunday have none."""


@dataclass(frozen=True, slots=True)
class PhaseSpan:
    """One phase of one trading day: ``[start, end)`` as aware WIB instants."""

    phase: Phase
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class MarketState:
    """The market at one instant, as the status page shows it."""

    phase: Phase
    next_change_at: datetime
    """The next instant (WIB) at which the phase changes; when closed, that is the next open
    (the next pre-opening, or session 2 at the end of the lunch break)."""
    next_phase: Phase
    """The phase that starts at :attr:`next_change_at`."""

    @property
    def open(self) -> bool:
        """Any phase from pre-opening to post-trading except the lunch break."""
        return self.phase.open

    @property
    def continuous(self) -> bool:
        """Whether continuous trading (session 1 or 2) is on."""
        return self.phase.continuous


class HolidaysFileError(ValueError):
    """``HOLIDAYS_FILE`` cannot be read or has a bad line; the message names file and line."""


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        # A naive time could be read in the machine's zone; the calendar must never guess.
        raise ValueError("the trading calendar needs a timezone-aware datetime")
    return moment.astimezone(WIB)


def _day(when: datetime | date | str) -> date:
    """The Jakarta day an instant falls in, a date itself, or a ``YYYY-MM-DD`` text."""
    if isinstance(when, datetime):  # checked first: a datetime is also a date
        return _aware(when).date()
    if isinstance(when, date):
        return when
    return parse_day(when)


_LINE = re.compile(r"(?P<day>\S+)\s+(?P<action>\S+)\Z")


def parse_holidays_file(text: str, source: str = "HOLIDAYS_FILE") -> dict[date, str | None]:
    """The overrides a ``HOLIDAYS_FILE`` text declares: day → closure reason, or None = open.

    The format, one day per line::

        # comments start with '#', on their own line or after an entry; blank lines are fine
        2026-03-02 closed   # an extra closure; the comment becomes the reason shown
        2026-12-31 open     # IDX trades on a day the built-in calendar closes

    A day is ``YYYY-MM-DD`` (parsed by :func:`pipeline.days.parse_day`), the word is
    ``closed`` or ``open`` (any case). ``open`` applies the weekday's normal phases, so it is
    refused on a Saturday or Sunday (they have no schedule); ``closed`` on a weekend is
    accepted and changes nothing. A day may appear once. Anything else raises
    :class:`HolidaysFileError` naming ``source`` and the line number.
    """
    overrides: dict[date, str | None] = {}
    seen: dict[date, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        body, _, comment = line.partition("#")
        body = body.strip()
        if not body:
            continue
        where = f"{source}:{number}"
        match = _LINE.match(body)
        if match is None:
            raise HolidaysFileError(
                f"{where}: expected 'YYYY-MM-DD closed' or 'YYYY-MM-DD open', got {body[:60]!r}"
            )
        try:
            day = parse_day(match["day"])
        except DayError as exc:
            raise HolidaysFileError(f"{where}: {exc}") from None
        action = match["action"].lower()
        if action not in ("closed", "open"):
            raise HolidaysFileError(
                f"{where}: expected 'closed' or 'open' after the day, got {match['action'][:20]!r}"
            )
        if day in seen:
            raise HolidaysFileError(f"{where}: {day} is already listed on line {seen[day]}")
        if action == "open" and day.weekday() not in _SCHEDULE:
            raise HolidaysFileError(
                f"{where}: {day} is a {day:%A}; IDX has no weekend sessions to open"
            )
        seen[day] = number
        overrides[day] = (comment.strip() or _FILE_REASON) if action == "closed" else None
    return overrides


def _read_holidays_file(path: Path) -> dict[date, str | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise HolidaysFileError(f"{path}: cannot read: {reason}") from None
    return parse_holidays_file(text, str(path))


def check_holidays_file(value: str) -> Path:
    """``HOLIDAYS_FILE``'s path once its file reads and parses (for :class:`Settings`).

    So a bad file is reported at start-up with every other bad variable, by every process.
    """
    path = Path(value)
    _read_holidays_file(path)
    return path


class TradingCalendar:
    """The IDX calendar: built-in closures plus ``overrides``; answers for any instant.

    Build it once per process (:meth:`from_settings` or :func:`load_calendar`) and pass it
    down. It is safe to share between threads: the only state that changes is a cache of
    closed days per year, filled under a lock.
    """

    def __init__(self, overrides: Mapping[date, str | None] | None = None) -> None:
        """``overrides`` maps a day to a closure reason (closed) or None (open)."""
        self._overrides = dict(overrides or {})
        self._years: dict[int, dict[date, str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> TradingCalendar:
        """The calendar with ``settings.holidays_file`` applied (if set)."""
        return load_calendar(settings.holidays_file)

    def _closed_in(self, year: int) -> dict[date, str]:
        """Every closed day of ``year`` with its reason, weekends not included."""
        with self._lock:
            cached = self._years.get(year)
            if cached is not None:
                return cached
            found = holidays.country_holidays(
                "ID", years=year, categories=HOLIDAY_CATEGORIES, language="en_US"
            )
            closed = {day: str(name) for day, name in found.items()}
            closed[date(year, 12, 31)] = YEAR_END_REASON
            for day, reason in self._overrides.items():
                if day.year != year:
                    continue
                if reason is None:
                    closed.pop(day, None)
                else:
                    closed[day] = reason
            self._years[year] = {d: r for d, r in closed.items() if d.weekday() in _SCHEDULE}
            return self._years[year]

    def closure_reason(self, when: datetime | date | str) -> str | None:
        """Why the exchange is closed on that (week)day, or None on a trading day or weekend.

        ``when`` is an aware instant (its Jakarta day), a date, or a ``YYYY-MM-DD`` text.
        """
        day = _day(when)
        return self._closed_in(day.year).get(day)

    def is_trading_day(self, when: datetime | date | str) -> bool:
        """Whether the exchange trades on that Jakarta day (a weekday that is not closed)."""
        day = _day(when)
        return day.weekday() in _SCHEDULE and day not in self._closed_in(day.year)

    def closed_weekdays(self, year: int) -> list[date]:
        """The weekdays of ``year`` the exchange is closed, in order."""
        return sorted(self._closed_in(year))

    def phases(self, when: datetime | date | str) -> tuple[PhaseSpan, ...]:
        """That day's phases in order; empty when it is not a trading day."""
        day = _day(when)
        if not self.is_trading_day(day):
            return ()
        return tuple(
            PhaseSpan(phase, datetime.combine(day, start, WIB), datetime.combine(day, end, WIB))
            for phase, start, end in _SCHEDULE[day.weekday()]
        )

    def phase_at(self, moment: datetime) -> Phase:
        """The phase in progress at ``moment`` (aware; any zone)."""
        local = _aware(moment)
        for span in self.phases(local):
            if span.start <= local < span.end:
                return span.phase
        return Phase.CLOSED

    def is_continuous(self, moment: datetime) -> bool:
        """Whether continuous trading (session 1 or 2) is on at ``moment``."""
        return self.phase_at(moment).continuous

    def next_change(self, moment: datetime) -> tuple[datetime, Phase]:
        """The first phase change strictly after ``moment``: its instant (WIB) and new phase.

        At a phase's start instant the answer is that phase's end. After post-trading (or on
        a closed day) it is the next trading day's pre-opening.
        """
        local = _aware(moment)
        day = local.date()
        for offset in range(_LOOKAHEAD_DAYS):
            spans = self.phases(day + timedelta(days=offset))
            for index, span in enumerate(spans):
                if span.start > local:
                    return span.start, span.phase
                if span.end > local:
                    # The day's last phase ends into "closed"; the others into the next one.
                    following = spans[index + 1].phase if index + 1 < len(spans) else Phase.CLOSED
                    return span.end, following
        raise ValueError(f"no trading day within {_LOOKAHEAD_DAYS} days after {local:%Y-%m-%d}")

    def next_open(self, moment: datetime) -> datetime:
        """The start (08:45 WIB) of the first pre-opening strictly after ``moment``.

        Pre-opening, not session 1: see the module notes. During a trading day's phases this
        is the next trading day's pre-opening.
        """
        local = _aware(moment)
        day = local.date()
        for offset in range(_LOOKAHEAD_DAYS):
            spans = self.phases(day + timedelta(days=offset))
            if spans and spans[0].start > local:
                return spans[0].start
        raise ValueError(f"no trading day within {_LOOKAHEAD_DAYS} days after {local:%Y-%m-%d}")

    def market_state(self, moment: datetime) -> MarketState:
        """The phase at ``moment`` and when and into what it next changes."""
        at, following = self.next_change(moment)
        return MarketState(phase=self.phase_at(moment), next_change_at=at, next_phase=following)

    def after_close(
        self, when: datetime | date | str, margin: timedelta = AFTER_CLOSE
    ) -> datetime | None:
        """The end of that day's post-trading plus ``margin`` (16:15 + 30 min = 16:45 WIB):
        when the day's capture is over. The daily recap runs then, and the token refresher
        makes the access token last until then. None when it is not a trading day."""
        spans = self.phases(when)
        return spans[-1].end + margin if spans else None

    def continuous_intervals(self, when: datetime | date | str) -> tuple[PhaseSpan, ...]:
        """That day's continuous-trading sessions (empty when it is not a trading day)."""
        return tuple(span for span in self.phases(when) if span.phase.continuous)

    def trading_seconds(self, when: datetime | date | str) -> float:
        """The whole day's continuous-trading time in seconds (0 on a closed day)."""
        return sum((s.end - s.start).total_seconds() for s in self.continuous_intervals(when))

    def trading_elapsed_s(self, moment: datetime) -> float:
        """Seconds of continuous trading from the start of ``moment``'s Jakarta day to it.

        The denominator for "share of trading time covered so far": it grows only during
        sessions 1 and 2, stands still in the lunch break, and is 0 all day on a closed day.
        """
        local = _aware(moment)
        elapsed = 0.0
        for span in self.continuous_intervals(local):
            if local > span.start:
                elapsed += (min(local, span.end) - span.start).total_seconds()
        return elapsed


def load_calendar(path: Path | None) -> TradingCalendar:
    """The calendar with the ``HOLIDAYS_FILE`` at ``path`` applied (None: built-in only).

    Raises :class:`HolidaysFileError` (naming the file and line) if the file is unreadable
    or has a bad line.
    """
    return TradingCalendar(_read_holidays_file(path) if path is not None else None)
