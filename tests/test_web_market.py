"""The status API's market state follows the IDX trading calendar, holidays and HOLIDAYS_FILE."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from pipeline.calendar import TradingCalendar
from pipeline.keys import Keys
from pipeline.settings import Settings
from stockbit.timestamps import WIB
from tests.conftest import Clock
from web.app import create_app
from web.freshness import AMBER, CLOSED, FRESH, NO_DATA, RED, freshness

KEYS = Keys()
NYEPI = datetime(2026, 3, 19, 10, 0, tzinfo=WIB)
"""Thursday 19 March 2026, the Day of Silence: a weekday that would be in session 1."""


def status(
    fake: fakeredis.FakeRedis,
    moment: datetime,
    data_dir: Path,
    *,
    holidays_file: Path | None = None,
    calendar: TradingCalendar | None = None,
) -> dict[str, Any]:
    """``/api/status`` at ``moment`` with one ticker updated 30 s earlier."""
    fake.hset(
        KEYS.ticker("BBCA"),
        mapping={"frames": 5, "last_update": (moment - timedelta(seconds=30)).isoformat()},
    )
    fake.sadd(KEYS.desired_tickers, "BBCA")
    settings = Settings(data_dir=data_dir, holidays_file=holidays_file)
    app = create_app(settings, redis_client=fake, clock=Clock(moment), calendar=calendar)
    response = app.test_client().get("/api/status")
    assert response.status_code == 200
    doc: dict[str, Any] = response.get_json()
    return doc


def test_market_is_closed_on_a_holiday(fake: fakeredis.FakeRedis, data_dir: Path) -> None:
    doc = status(fake, NYEPI, data_dir)
    assert doc["market"] == {
        "open": False,
        "session": None,
        "phase": "closed",
        "continuous": False,
        # Nyepi 19th, Eid joint leave 20th, the weekend, Eid joint leave 23rd–24th.
        "next_change_at": "2026-03-25T08:45:00+07:00",
        "next_phase": "pre_opening",
        "holiday": "Day of Silence",
    }
    assert doc["tickers"]["BBCA"]["freshness"] == CLOSED  # a quiet holiday is not "stale"


def test_same_hour_on_a_trading_day_is_open(fake: fakeredis.FakeRedis, data_dir: Path) -> None:
    doc = status(fake, NYEPI - timedelta(days=2), data_dir)  # Tuesday 17 March
    assert doc["market"]["open"] is True and doc["market"]["phase"] == "session_1"
    assert doc["market"]["holiday"] is None
    assert doc["tickers"]["BBCA"]["freshness"] == AMBER


def test_call_auctions_are_open_but_not_continuous(
    fake: fakeredis.FakeRedis, data_dir: Path
) -> None:
    market = status(fake, datetime(2026, 3, 2, 8, 50, tzinfo=WIB), data_dir)["market"]
    assert market["open"] is True and market["continuous"] is False
    assert market["session"] == "Pre-opening"
    assert market["next_change_at"] == "2026-03-02T09:00:00+07:00"


def test_holidays_file_from_settings_closes_the_page(
    fake: fakeredis.FakeRedis, data_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "holidays.txt"
    path.write_text("2026-03-17 closed  # regional election\n", encoding="utf-8")
    doc = status(fake, NYEPI - timedelta(days=2), data_dir, holidays_file=path)
    assert doc["market"]["open"] is False and doc["market"]["holiday"] == "regional election"
    assert doc["market"]["next_change_at"] == "2026-03-25T08:45:00+07:00"


def test_an_injected_calendar_wins_over_the_settings(
    fake: fakeredis.FakeRedis, data_dir: Path
) -> None:
    reopened = TradingCalendar({NYEPI.date(): None})
    doc = status(fake, NYEPI, data_dir, calendar=reopened)
    assert doc["market"]["phase"] == "session_1" and doc["market"]["holiday"] is None


@pytest.mark.parametrize(
    ("age", "trading", "expected"),
    [
        (None, True, NO_DATA),
        (None, False, NO_DATA),
        (3.0, True, FRESH),
        (14.9, True, FRESH),
        (15.0, True, AMBER),
        (59.9, True, AMBER),
        (60.0, True, RED),
        (3600.0, False, CLOSED),  # quiet outside continuous trading is normal
    ],
)
def test_freshness(age: float | None, trading: bool, expected: str) -> None:
    assert freshness(age, trading) == expected
