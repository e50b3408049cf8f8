"""The IDX trading calendar gives the right closed days, phases, next open and trading time."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from pipeline.calendar import (
    YEAR_END_REASON,
    HolidaysFileError,
    Phase,
    TradingCalendar,
    load_calendar,
    parse_holidays_file,
)
from pipeline.days import WIB
from pipeline.settings import Settings, SettingsError

CAL = TradingCalendar()


def wib(month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A moment of 2026 in Jakarta time (2 March is a Monday, 6 March a Friday)."""
    return datetime(2026, month, day, hour, minute, second, tzinfo=WIB)


def days(*spans: tuple[int, int, int]) -> list[date]:
    """``(month, first, last)`` spans of 2026 → every date in them."""
    return [date(2026, m, d) for m, first, last in spans for d in range(first, last + 1)]


def test_2026_weekday_closures_are_exactly_the_idx_list() -> None:
    # Public holidays + joint leave (cuti bersama) from the holidays package, plus 31 Dec.
    expected = days(
        (1, 1, 1), (1, 16, 16), (2, 16, 17), (3, 18, 20), (3, 23, 24), (4, 3, 3),
        (5, 1, 1), (5, 14, 15), (5, 27, 28), (6, 1, 1), (6, 16, 16), (8, 17, 17),
        (8, 25, 25), (12, 24, 25), (12, 31, 31),
    )  # fmt: skip
    assert CAL.closed_weekdays(2026) == expected
    assert all(not CAL.is_trading_day(day) for day in expected)
    assert CAL.closure_reason("2026-12-31") == YEAR_END_REASON
    assert CAL.closure_reason(date(2026, 3, 23)) == "Eid al-Fitr Joint Holiday"
    assert CAL.closure_reason("2026-03-02") is None
    # Weekends are not "closures" but are never trading days.
    assert not CAL.is_trading_day("2026-03-07") and not CAL.is_trading_day("2026-03-08")
    assert CAL.is_trading_day("2026-03-02") and CAL.is_trading_day(wib(3, 2, 3))


@pytest.mark.parametrize(
    ("moment", "phase"),
    [
        (wib(3, 2, 8, 44, 59), Phase.CLOSED),
        (wib(3, 2, 8, 45), Phase.PRE_OPENING),
        (wib(3, 2, 8, 59, 59), Phase.PRE_OPENING),
        (wib(3, 2, 9, 0), Phase.SESSION_1),
        (wib(3, 2, 11, 59, 59), Phase.SESSION_1),
        (wib(3, 2, 12, 0), Phase.LUNCH_BREAK),  # Mon–Thu lunch 12:00–13:30
        (wib(3, 2, 13, 29, 59), Phase.LUNCH_BREAK),
        (wib(3, 2, 13, 30), Phase.SESSION_2),
        (wib(3, 5, 15, 49, 59), Phase.SESSION_2),  # Thursday
        (wib(3, 5, 15, 50), Phase.PRE_CLOSING),
        (wib(3, 5, 16, 0, 59), Phase.PRE_CLOSING),
        (wib(3, 5, 16, 1), Phase.POST_TRADING),
        (wib(3, 5, 16, 14, 59), Phase.POST_TRADING),
        (wib(3, 5, 16, 15), Phase.CLOSED),
        (wib(3, 6, 11, 29, 59), Phase.SESSION_1),  # Friday: session 1 ends at 11:30
        (wib(3, 6, 11, 30), Phase.LUNCH_BREAK),
        (wib(3, 6, 13, 30), Phase.LUNCH_BREAK),  # ... still lunch where Mon–Thu trades
        (wib(3, 6, 13, 59, 59), Phase.LUNCH_BREAK),
        (wib(3, 6, 14, 0), Phase.SESSION_2),  # ... and session 2 starts only at 14:00
        (wib(3, 7, 10, 0), Phase.CLOSED),  # Saturday
        (wib(3, 8, 10, 0), Phase.CLOSED),  # Sunday
        (wib(3, 19, 10, 0), Phase.CLOSED),  # Day of Silence (Nyepi), a Thursday
    ],
)
def test_phase_at_boundaries(moment: datetime, phase: Phase) -> None:
    assert CAL.phase_at(moment) is phase
    assert CAL.is_continuous(moment) is (phase in (Phase.SESSION_1, Phase.SESSION_2))


def test_fridays_lunch_is_1130_to_1400() -> None:
    friday = {span.phase: (span.start, span.end) for span in CAL.phases("2026-03-06")}
    assert friday[Phase.LUNCH_BREAK] == (wib(3, 6, 11, 30), wib(3, 6, 14, 0))
    monday = {span.phase: (span.start, span.end) for span in CAL.phases("2026-03-02")}
    assert monday[Phase.LUNCH_BREAK] == (wib(3, 2, 12, 0), wib(3, 2, 13, 30))
    assert CAL.phases("2026-03-07") == () and CAL.phases("2026-03-19") == ()


def test_continuous_trading_is_off_at_lunch_and_on_holidays() -> None:
    assert CAL.is_continuous(wib(3, 2, 10, 0))
    assert not CAL.is_continuous(wib(3, 2, 12, 30))
    assert not CAL.is_continuous(wib(3, 6, 13, 45))  # Friday's longer lunch
    assert not CAL.is_continuous(wib(3, 20, 10, 0))  # Eid al-Fitr joint leave
    assert not CAL.is_continuous(wib(12, 31, 10, 0))  # IDX's year-end closure
    assert not CAL.is_continuous(wib(3, 2, 8, 50))  # the opening call auction


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (wib(3, 2, 7, 0), wib(3, 2, 8, 45)),  # same day, before the pre-opening
        (wib(3, 2, 8, 45), wib(3, 3, 8, 45)),  # strictly after: at the open, the next day's
        (wib(3, 2, 10, 0), wib(3, 3, 8, 45)),
        (wib(3, 6, 16, 15), wib(3, 9, 8, 45)),  # Friday close → Monday, across the weekend
        (wib(3, 7, 12, 0), wib(3, 9, 8, 45)),  # Saturday
        # Tue 17 Mar → Nyepi joint leave 18–19, Eid 20–24 (with the weekend) → Wed 25 Mar.
        (wib(3, 17, 16, 30), wib(3, 25, 8, 45)),
        (wib(12, 30, 17, 0), datetime(2027, 1, 4, 8, 45, tzinfo=WIB)),  # 31 Dec, 1 Jan closed
    ],
)
def test_next_open_skips_weekends_and_holidays(moment: datetime, expected: datetime) -> None:
    assert CAL.next_open(moment) == expected


@pytest.mark.parametrize(
    ("moment", "at", "phase"),
    [
        (wib(3, 2, 8, 0), wib(3, 2, 8, 45), Phase.PRE_OPENING),
        (wib(3, 2, 9, 0), wib(3, 2, 12, 0), Phase.LUNCH_BREAK),  # at a start: its end
        (wib(3, 2, 12, 30), wib(3, 2, 13, 30), Phase.SESSION_2),
        (wib(3, 6, 11, 45), wib(3, 6, 14, 0), Phase.SESSION_2),  # Friday's longer break
        (wib(3, 6, 16, 5), wib(3, 6, 16, 15), Phase.CLOSED),
        (wib(3, 6, 16, 15), wib(3, 9, 8, 45), Phase.PRE_OPENING),  # Friday close → Monday
        (wib(2, 13, 17, 0), wib(2, 18, 8, 45), Phase.PRE_OPENING),  # Lunar New Year 16–17 Feb
    ],
)
def test_next_change(moment: datetime, at: datetime, phase: Phase) -> None:
    assert CAL.next_change(moment) == (at, phase)


def test_market_state() -> None:
    state = CAL.market_state(wib(3, 6, 14, 30))
    assert state.open and state.continuous and state.phase is Phase.SESSION_2
    assert (state.next_change_at, state.next_phase) == (wib(3, 6, 15, 50), Phase.PRE_CLOSING)
    auction = CAL.market_state(wib(3, 6, 15, 55))
    assert auction.open and not auction.continuous and auction.phase.label == "Pre-closing"
    lunch = CAL.market_state(wib(3, 2, 12, 30))
    assert not lunch.open and lunch.next_change_at == wib(3, 2, 13, 30)
    holiday = CAL.market_state(wib(3, 19, 10, 0))
    assert not holiday.open and holiday.phase is Phase.CLOSED
    assert holiday.next_change_at == wib(3, 25, 8, 45)


def test_trading_time_elapsed_counts_only_continuous_sessions() -> None:
    monday = CAL.trading_elapsed_s
    assert monday(wib(3, 2, 8, 59)) == 0
    assert monday(wib(3, 2, 10, 0)) == 3600
    assert monday(wib(3, 2, 13, 0)) == 3 * 3600  # lunch adds nothing
    assert monday(wib(3, 2, 14, 0)) == 3 * 3600 + 1800
    assert monday(wib(3, 2, 23, 0)) == CAL.trading_seconds("2026-03-02") == 19_200  # 5 h 20
    assert monday(wib(3, 6, 23, 0)) == CAL.trading_seconds("2026-03-06") == 15_600  # Fri 4 h 20
    assert monday(wib(3, 19, 15, 0)) == 0 and CAL.trading_seconds("2026-03-19") == 0
    spans = CAL.continuous_intervals("2026-03-06")
    assert [(s.phase, s.start, s.end) for s in spans] == [
        (Phase.SESSION_1, wib(3, 6, 9, 0), wib(3, 6, 11, 30)),
        (Phase.SESSION_2, wib(3, 6, 14, 0), wib(3, 6, 15, 50)),
    ]


def test_utc_and_wib_instants_give_the_same_answers() -> None:
    new_york = timezone(timedelta(hours=-5))
    for moment in (wib(3, 2, 9, 0), wib(3, 6, 11, 45), wib(3, 19, 10, 0), wib(3, 9, 0, 30)):
        for other in (moment.astimezone(UTC), moment.astimezone(new_york)):
            assert CAL.phase_at(other) is CAL.phase_at(moment)
            assert CAL.is_trading_day(other) is CAL.is_trading_day(moment)
            assert CAL.next_open(other) == CAL.next_open(moment)
            assert CAL.market_state(other) == CAL.market_state(moment)
            assert CAL.trading_elapsed_s(other) == CAL.trading_elapsed_s(moment)
    # 02:00 UTC on Monday is 09:00 WIB; 00:30 WIB Monday is still Sunday in UTC.
    assert CAL.phase_at(datetime(2026, 3, 2, 2, 0, tzinfo=UTC)) is Phase.SESSION_1
    assert CAL.is_trading_day(datetime(2026, 3, 8, 17, 30, tzinfo=UTC))
    assert CAL.next_open(datetime(2026, 3, 2, 1, 44, tzinfo=UTC)) == wib(3, 2, 8, 45)


def test_naive_datetimes_are_refused() -> None:
    for ask in (CAL.phase_at, CAL.is_trading_day, CAL.next_open, CAL.trading_elapsed_s):
        with pytest.raises(ValueError, match="timezone-aware"):
            ask(datetime(2026, 3, 2, 10, 0))


def test_holidays_file_adds_and_removes_days(tmp_path: Path) -> None:
    path = tmp_path / "holidays.txt"
    path.write_text(
        "# IDX changes announced after the release\n"
        "\n"
        "2026-03-02 closed   # general election\n"
        "2026-03-03 CLOSED\n"
        "2026-12-31 open     # trades on the last day this year\n"
        "2026-03-07 closed   # a Saturday: harmless\n",
        encoding="utf-8",
    )
    cal = load_calendar(path)
    assert not cal.is_trading_day("2026-03-02")
    assert cal.closure_reason("2026-03-02") == "general election"
    assert cal.closure_reason("2026-03-03") == "closed by HOLIDAYS_FILE"
    assert cal.phase_at(wib(3, 2, 10, 0)) is Phase.CLOSED
    assert cal.next_open(wib(3, 1, 12, 0)) == wib(3, 4, 8, 45)
    assert cal.is_trading_day("2026-12-31") and cal.phase_at(wib(12, 31, 10)) is Phase.SESSION_1
    added, removed = {date(2026, 3, 2), date(2026, 3, 3)}, {date(2026, 12, 31)}
    assert cal.closed_weekdays(2026) == sorted({*CAL.closed_weekdays(2026), *added} - removed)
    # The built-in calendar is not touched by another instance's file.
    assert CAL.is_trading_day("2026-03-02") and not CAL.is_trading_day("2026-12-31")


def test_calendar_from_settings_reads_holidays_file(tmp_path: Path) -> None:
    path = tmp_path / "holidays.txt"
    path.write_text("2026-03-04 closed\n", encoding="utf-8")
    settings = Settings.from_env({"HOLIDAYS_FILE": str(path)})
    assert settings.holidays_file == path
    assert not TradingCalendar.from_settings(settings).is_trading_day("2026-03-04")
    assert TradingCalendar.from_settings(Settings()).is_trading_day("2026-03-04")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("2026-3-2 closed", "not a day"),
        ("2026-02-30 closed", "not a real date"),
        ("2026-03-02 shut", "expected 'closed' or 'open'"),
        ("2026-03-02", "expected 'YYYY-MM-DD closed'"),
        ("2026-03-02 closed early", "expected 'YYYY-MM-DD closed'"),
        ("2026-03-07 open", "is a Saturday"),
        ("2026-03-02 open", "already listed on line 2"),
    ],
)
def test_bad_holidays_file_lines_name_file_and_line(
    tmp_path: Path, line: str, problem: str
) -> None:
    path = tmp_path / "holidays.txt"
    path.write_text(f"# header\n2026-03-02 closed\n{line}\n", encoding="utf-8")
    where = re.escape(f"{path}:3: ")
    with pytest.raises(HolidaysFileError, match=f"{where}.*{problem}"):
        load_calendar(path)
    # Settings reports it at start-up, with the variable's name.
    with pytest.raises(SettingsError, match=f"HOLIDAYS_FILE: {where}.*{problem}"):
        Settings.from_env({"HOLIDAYS_FILE": str(path)})


def test_missing_holidays_file_is_a_settings_problem(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(SettingsError, match=re.escape(f"HOLIDAYS_FILE: {missing}: cannot read")):
        Settings.from_env({"HOLIDAYS_FILE": str(missing)})
    with pytest.raises(HolidaysFileError, match="cannot read"):
        load_calendar(missing)


def test_parse_holidays_file_defaults_its_source_name() -> None:
    assert parse_holidays_file("2026-03-02 open # not closed anyway\n") == {date(2026, 3, 2): None}
    with pytest.raises(HolidaysFileError, match="HOLIDAYS_FILE:1: "):
        parse_holidays_file("tomorrow closed")
