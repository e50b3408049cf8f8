"""Coverage in the manifest: captured trades against the exchange's own LivePrice volume and
trade count — 100 % on a clean run, below it and flagged when trade frames are dropped,
"unknown" (never a number) without LivePrice or without trades."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from bench.stack import Stack, wait_for
from jobs.finalize import finalize_day
from jobs.manifest import COVERAGE_FLOOR, UNKNOWN, build, coverage
from pipeline.layout import PRICES, Layout
from pipeline.schema import HEADERS
from stockbit.timestamps import WIB
from web.days import summarize

DAY = "2026-03-02"
LATER = datetime(2026, 3, 5, 12, tzinfo=WIB)
TRADE_HEADER = "timestamp,price,lots,total_value,side,trade_number,board,received_at\n"
BOOK_HEADER = "timestamp,price,lots,total_value,side,level,orders,seq,received_at\n"


def stamp(second: int) -> str:
    return f"{DAY}T10:00:{second:02d}.000000+07:00"


def trades(data: Path, code: str, *lots: int) -> None:
    lines = [
        f"{stamp(i)},8200,{n},{8200 * n * 100},BUY,{100 + i},RG,{stamp(i)}\n"
        for i, n in enumerate(lots)
    ]
    path = data / "trades" / f"{DAY}_{code}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TRADE_HEADER + "".join(lines))


def prices(data: Path, code: str, *figures: tuple[int, int]) -> None:
    """LivePrice rows, one per (cumulative lots, cumulative trade count), in the documented
    columns (written by name, so the column order is the header's)."""
    columns = HEADERS[PRICES].rstrip("\n").split(",")
    lines = []
    for i, (lots, frequency) in enumerate(figures):
        row: dict[str, Any] = dict.fromkeys(columns, "8200")
        row.update(
            timestamp=stamp(i), received_at=stamp(i), lots=lots, frequency=frequency,
            total_value=lots * 820_000, sequence="",
        )  # fmt: skip
        lines.append(",".join(str(row[c]) for c in columns) + "\n")
    path = data / "prices" / f"{DAY}_{code}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADERS[PRICES] + "".join(lines))


def books(data: Path, code: str) -> None:
    path = data / "orderbook" / f"{DAY}_{code}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BOOK_HEADER + f"{stamp(0)},8200,10,8200000,BID,1,2,1,{stamp(0)}\n")


def test_coverage_per_ticker_and_for_the_day(data_dir: Path) -> None:
    trades(data_dir, "BBCA", 10, 30)
    prices(data_dir, "BBCA", (10, 1), (40, 2))  # everything captured
    trades(data_dir, "TLKM", 50)
    prices(data_dir, "TLKM", (50, 1), (100, 3), (90, 2))  # a late row out of order
    books(data_dir, "GOTO")  # no LivePrice: unknown
    prices(data_dir, "ASII", (20, 1))  # traded, but no print captured
    prices(data_dir, "UNVR", (0, 0))  # nothing traded, nothing missed
    doc = build(Layout(data_dir), DAY, {}, [])
    tickers = doc["tickers"]
    assert tickers["BBCA"]["exchange_lots"] == 40 and tickers["BBCA"]["exchange_trades"] == 2
    assert (tickers["BBCA"]["lots"], tickers["BBCA"]["trades"]) == (40, 2)
    assert tickers["BBCA"]["volume_coverage_pct"] == 100.0
    assert tickers["TLKM"]["exchange_lots"] == 100 and tickers["TLKM"]["exchange_trades"] == 3
    assert tickers["TLKM"]["volume_coverage_pct"] == 50.0
    assert tickers["GOTO"]["volume_coverage_pct"] == UNKNOWN
    assert tickers["GOTO"]["exchange_lots"] is None
    assert tickers["ASII"]["volume_coverage_pct"] == 0.0
    assert tickers["UNVR"]["volume_coverage_pct"] == 100.0
    assert doc["coverage"] == {
        "volume_coverage_pct": 56.25,  # (40 + 50) / (40 + 100 + 20)
        "floor_pct": COVERAGE_FLOOR,
        "below": ["ASII", "TLKM"],
        "unknown": ["GOTO"],
        "trades_captured": True,
    }
    assert doc["ok"], doc["problems"]


def test_a_day_without_trades_is_unknown_never_a_number(data_dir: Path) -> None:
    books(data_dir, "BBCA")
    prices(data_dir, "BBCA", (40, 2))  # SUBSCRIBE_TRADES=false: no trades file at all
    doc = build(Layout(data_dir), DAY, {}, [])
    assert doc["tickers"]["BBCA"]["volume_coverage_pct"] == UNKNOWN
    assert doc["coverage"]["volume_coverage_pct"] == UNKNOWN
    assert doc["coverage"]["trades_captured"] is False and doc["coverage"]["below"] == []
    assert summarize(doc)["coverage"]["pct"] == "unknown"
    assert summarize(doc)["coverage"]["flagged"] is False


def test_just_under_the_floor_is_flagged(data_dir: Path) -> None:
    trades(data_dir, "BBCA", 9_989)
    prices(data_dir, "BBCA", (10_000, 2))
    doc = build(Layout(data_dir), DAY, {}, [])
    assert doc["tickers"]["BBCA"]["volume_coverage_pct"] == 99.89
    shown = summarize(doc)["coverage"]
    assert shown["flagged"] is True and shown["below"] == ["BBCA"] and shown["pct"] == 99.89
    doc["tickers"]["BBCA"]["exchange_lots"] = 9_990  # 99.9 exactly: not under
    assert coverage(doc)["below"] == []


def test_finalize_day_writes_coverage_into_the_manifest(data_dir: Path) -> None:
    trades(data_dir, "BBCA", 10, 30)
    prices(data_dir, "BBCA", (40, 2))
    client = fakeredis.FakeRedis()
    result = finalize_day(DAY, str(data_dir), connection=client, now=LATER)
    saved = json.loads(Layout(data_dir).manifest(DAY).read_text())
    assert saved["coverage"] == result["coverage"]
    assert saved["coverage"]["volume_coverage_pct"] == 100.0
    assert saved["tickers"]["BBCA"]["volume_coverage_pct"] == 100.0
    # What the Days page gets from it.
    assert summarize(saved)["coverage"] == {
        "pct": 100.0, "flagged": False, "floor": COVERAGE_FLOOR, "below": [], "below_count": 0,
        "unknown": 0,
    }  # fmt: skip


# ---- end to end: the simulator's own LivePrice against what was captured -------------------


def captured_day(tmp_path: Path, *sim_args: str) -> dict[str, Any]:
    """Run simulator → ingestor → writer for a while, stop cleanly, finalize the day."""
    stack = Stack(tmp_path, tickers="BBCA,TLKM,GOTO", sim_args=("--rate", "6", *sim_args))
    stack.start()
    try:
        wait_for(stack.ready, 30, "the pipeline")
        assert stack.client is not None
        client = stack.client
        time.sleep(6)
        wait_for(stack.settled, 30, "the writer to catch up")
        assert stack.sim is not None
        stack.sim.stop()  # the feed first, so the last LivePrice follows the last print
        wait_for(
            lambda: sum(client.xlen(f"obpipe:stream:{p}") for p in range(16)) == 0,
            30,
            "every entry committed",
        )
    finally:
        stack.stop()
    (day,) = {p.name[:10] for p in (stack.data_dir / "trades").glob("*.csv")}
    stack.redis.start()
    try:
        connection = redis.Redis.from_url(stack.redis.url)
        later = datetime.fromisoformat(day).replace(tzinfo=WIB) + timedelta(days=2)
        result: dict[str, Any] = finalize_day(
            day, str(stack.data_dir), connection=connection, now=later
        )
        connection.close()
    finally:
        stack.redis.stop()
    result["journal"] = stack.sim.journal_path
    return result


@pytest.mark.e2e
@pytest.mark.redis
@pytest.mark.timeout(240)
def test_coverage_is_complete_on_a_clean_run_and_flagged_when_trades_are_dropped(
    tmp_path: Path,
) -> None:
    clean = captured_day(tmp_path / "clean")
    assert clean["ok"], clean["problems"]
    for code in ("BBCA", "TLKM", "GOTO"):
        ticker = clean["tickers"][code]
        assert ticker["exchange_trades"] == ticker["trades"] > 0
        assert ticker["volume_coverage_pct"] == 100.0
    assert clean["coverage"]["volume_coverage_pct"] == 100.0 and clean["coverage"]["below"] == []
    assert summarize(clean)["coverage"]["flagged"] is False

    lossy = captured_day(tmp_path / "lossy", "--drop-trades-every", "3")
    journal = [json.loads(line) for line in lossy["journal"].read_text().splitlines()]
    assert sum(1 for line in journal if line["kind"] == "dropped") > 5
    below = lossy["coverage"]["below"]
    assert below, lossy["coverage"]
    for code in below:
        ticker = lossy["tickers"][code]
        assert ticker["volume_coverage_pct"] < COVERAGE_FLOOR
        assert ticker["trades"] < ticker["exchange_trades"]
    assert lossy["coverage"]["volume_coverage_pct"] < COVERAGE_FLOOR
    shown = summarize(lossy)["coverage"]
    assert shown["flagged"] is True and shown["below"] == below
