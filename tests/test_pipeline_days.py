"""The Jakarta day is parsed strictly (YYYY-MM-DD only) and taken from instants in WIB, whatever the machine's zone."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from pipeline.days import (
    WIB,
    DayError,
    age_days,
    bounds,
    check_day,
    day_of,
    day_of_stamp,
    days_in,
    is_day,
    parse_day,
    start_of,
    today,
)


@pytest.mark.parametrize("good", ["2026-03-02", "2024-02-29", "1999-12-31"])
def test_a_day_in_the_one_form(good: str) -> None:
    assert parse_day(good) == date.fromisoformat(good)
    assert check_day(good) == good and is_day(good)


@pytest.mark.parametrize(
    "bad",
    [
        "20260302",  # basic format: date.fromisoformat takes it on 3.11
        "2026-W10-1",  # week date: the same
        "2026-03-02T00:00",
        "2026-03-02\n",
        " 2026-03-02",
        "2026-3-2",
        "",
        "٢٠٢٦-٠٣-٠٢",  # non-ASCII digits
        "2026/03/02",
    ],
)
def test_other_forms_are_refused_naming_the_expected_one(bad: str) -> None:
    with pytest.raises(DayError, match=r"expected YYYY-MM-DD"):
        parse_day(bad)
    assert not is_day(bad)


@pytest.mark.parametrize("unreal", ["2025-02-29", "2026-13-01", "2026-04-31", "0000-01-01"])
def test_unreal_dates_are_refused(unreal: str) -> None:
    with pytest.raises(DayError, match="not a real date"):
        parse_day(unreal)


def test_day_error_is_a_value_error() -> None:
    # Callers that catch ValueError (argparse types, older code) keep working.
    assert issubclass(DayError, ValueError)


def test_midnight_wib_splits_days() -> None:
    before = datetime(2026, 3, 2, 23, 59, 59, 999999, tzinfo=WIB)
    after = before + timedelta(microseconds=1)
    assert day_of(before) == "2026-03-02"
    assert day_of(after) == "2026-03-03"
    # The same instants in UTC: 16:59:59.999999 and 17:00 of 2 March.
    assert day_of(before.astimezone(UTC)) == "2026-03-02"
    assert day_of(after.astimezone(UTC)) == "2026-03-03"
    assert day_of(after.astimezone(timezone(timedelta(hours=-5)))) == "2026-03-03"


def test_naive_instants_have_no_day() -> None:
    with pytest.raises(ValueError, match="naive"):
        day_of(datetime(2026, 3, 2, 12))


@pytest.fixture
def machine_in_utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.mark.usefixtures("machine_in_utc")
def test_a_utc_machine_gets_the_jakarta_day() -> None:
    # 18:00 UTC on 2 March is 01:00 WIB on 3 March: the machine's own date would be wrong.
    moment = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)
    assert datetime.fromtimestamp(moment.timestamp()).date().isoformat() == "2026-03-02"
    assert today(moment) == "2026-03-03"
    assert start_of("2026-03-03") == datetime(2026, 3, 2, 17, 0, tzinfo=UTC)


def test_bounds_and_ages() -> None:
    start, end = bounds("2026-03-02")
    assert start == datetime(2026, 3, 2, tzinfo=WIB)
    assert end - start == timedelta(days=1)
    assert start_of(date(2026, 3, 2)) == start
    assert age_days("2026-03-02", datetime(2026, 3, 2, 23, 59, tzinfo=WIB)) == 0
    assert age_days("2026-03-02", datetime(2026, 3, 2, 17, 0, tzinfo=UTC)) == 1
    with pytest.raises(DayError):
        bounds("20260302")


def test_stamps_and_ranges() -> None:
    assert day_of_stamp("2026-03-02T23:59:59.999999+07:00") == "2026-03-02"
    assert list(days_in("2026-02-27", "2026-03-02")) == [
        "2026-02-27",
        "2026-02-28",
        "2026-03-01",
        "2026-03-02",
    ]
    with pytest.raises(DayError, match="before"):
        list(days_in("2026-03-02", "2026-03-01"))
