"""Timestamps: ISO-8601 with 0–9 fractional digits and offsets; protobuf Timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from stockbit import ProtocolError
from stockbit.timestamps import from_epoch, parse_iso, to_epoch, wib_iso


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("2026-03-02T10:15:30+07:00", 0),
        ("2026-03-02T10:15:30.1+07:00", 100000),
        ("2026-02-09T14:49:51.3663+07:00", 366300),
        ("2026-03-02T10:15:30.123456+07:00", 123456),
        ("2026-03-02T10:15:30.1234567+07:00", 123456),
        ("2026-03-02T10:15:30.12345678+07:00", 123456),
        ("2026-03-02T10:15:30.999999999+07:00", 999999),
    ],
)
def test_fraction_digits(text: str, micro: int) -> None:
    moment = parse_iso(text)
    assert moment.microsecond == micro
    assert moment.utcoffset() == timedelta(hours=7)


def test_offsets() -> None:
    assert parse_iso("2026-03-02T03:15:30Z") == datetime(2026, 3, 2, 3, 15, 30, tzinfo=UTC)
    assert parse_iso("2026-03-02T03:15:30+0000") == datetime(2026, 3, 2, 3, 15, 30, tzinfo=UTC)
    minus = parse_iso("2026-03-01T22:15:30-05:00")
    assert minus.utcoffset() == timedelta(hours=-5)
    # no offset: Jakarta time, as the feed means it
    assert parse_iso("2026-03-02 10:15:30").utcoffset() == timedelta(hours=7)


def test_truncation_never_crosses_midnight() -> None:
    moment = parse_iso("2026-03-02T23:59:59.999999999+07:00")
    assert wib_iso(moment) == "2026-03-02T23:59:59.999999+07:00"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10:15:30",
        "2026-13-02T10:15:30+07:00",
        "2026-03-02T25:00:00+07:00",
        "2026-03-02T10:15:30.+07:00",
        "x" * 50,
    ],
)
def test_bad_iso(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_iso(text)


def test_epoch_round_trip_and_wib_format() -> None:
    moment = from_epoch(1772421330, 123_456_789)
    assert moment == datetime(2026, 3, 2, 3, 15, 30, 123456, tzinfo=UTC)
    assert to_epoch(moment) == (1772421330, 123_456_000)
    assert wib_iso(moment) == "2026-03-02T10:15:30.123456+07:00"
    assert (
        wib_iso(datetime(2026, 3, 2, 17, 0, 0, 100000, tzinfo=UTC))
        == "2026-03-03T00:00:00.100000+07:00"
    )
    other = datetime(2026, 3, 2, 5, tzinfo=timezone(timedelta(hours=-5)))
    assert wib_iso(other) == "2026-03-02T17:00:00.000000+07:00"


@pytest.mark.parametrize(("seconds", "nanos"), [(0, -1), (0, 10**9), (10**15, 0)])
def test_bad_epoch(seconds: int, nanos: int) -> None:
    with pytest.raises(ProtocolError):
        from_epoch(seconds, nanos)
