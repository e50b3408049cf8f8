"""The reader on crafted snapshots: the as-of book after each update, a side missing at the start, a day crossing midnight WIB, gaps masked, and the same tables from CSV, .csv.gz and Parquet."""

from __future__ import annotations

import gzip
import math
from datetime import UTC, datetime, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import obpipe
from obpipe import tables
from obpipe.files import span
from pipeline.days import DayError
from pipeline.layout import GAPS, ORDERBOOK, PRICES, TRADES, Layout, gap_file, ticker_file
from pipeline.rows import BOOK_HEADER, GAP_HEADER, TRADE_HEADER

DAY = "2026-03-02"
NEXT = "2026-03-03"
PRICE_HEADER = (
    "timestamp,price,open,high,low,prev_close,lots,total_value,frequency,average,"
    "foreign_buy,foreign_sell,received_at,sequence\n"
)
Level = tuple[int, int, int]
"""(price, lots, orders)"""


def stamp(day: str, clock: str) -> str:
    """A file timestamp: ``DAY`` at ``HH:MM:SS.ffffff`` Jakarta time."""
    return f"{day}T{clock}+07:00"


def snapshot(day: str, clock: str, side: str, seq: int, levels: list[Level]) -> str:
    """The rows of one side snapshot, as the writer writes them (total_value = price × shares)."""
    at = stamp(day, clock)
    return "".join(
        f"{at},{price},{lots},{price * lots * 100},{side},{n},{orders},{seq},{at}\n"
        for n, (price, lots, orders) in enumerate(levels, 1)
    )


def write(root: Path, relpath: str, header: str, body: str) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + body)
    return path


def write_book(root: Path, day: str, code: str, *snaps: str) -> Path:
    return write(root, ticker_file(ORDERBOOK, day, code), BOOK_HEADER, "".join(snaps))


@pytest.fixture
def book_day(data_dir: Path) -> Path:
    """BBCA: an OFFER first (no bid yet), then alternating sides; the bid shrinks to one level."""
    write_book(
        data_dir,
        DAY,
        "BBCA",
        snapshot(DAY, "09:00:00.000001", "OFFER", 1, [(8225, 5, 1), (8250, 7, 2)]),
        snapshot(DAY, "09:00:00.500000", "OFFER", 2, [(8225, 6, 2), (8250, 7, 2)]),
        snapshot(DAY, "09:00:01.000000", "BID", 1, [(8200, 10, 2), (8175, 20, 3)]),
        snapshot(DAY, "09:00:02.000000", "OFFER", 3, [(8250, 8, 1), (8275, 9, 4)]),
        snapshot(DAY, "09:00:03.000000", "BID", 2, [(8225, 4, 1)]),
    )
    return data_dir


def test_top_of_book_is_the_state_after_each_update(book_day: Path) -> None:
    tob = obpipe.top_of_book(DAY, "BBCA", data_dir=book_day)
    assert list(tob.side.astype(str)) == ["OFFER", "OFFER", "BID", "OFFER", "BID"]
    assert list(tob.seq) == [1, 2, 1, 3, 2]
    # The side that did not change is carried forward, never joined on equal timestamps.
    assert tob.bid.tolist()[2:] == [8200, 8200, 8225]
    assert tob.ask.tolist() == [8225, 8225, 8225, 8250, 8250]
    assert tob.ask_lots.tolist() == [5, 6, 6, 8, 8]
    assert tob.bid_orders.tolist()[2:] == [2, 2, 1]
    assert tob.spread.tolist()[2:] == [25, 50, 25]
    assert tob.mid.tolist()[2:] == [8212.5, 8225, 8237.5]
    assert str(tob.timestamp.dt.tz) == "Asia/Jakarta"
    assert tob.timestamp.iloc[0] == pd.Timestamp(stamp(DAY, "09:00:00.000001"))
    assert tob.bid_time.iloc[3] == pd.Timestamp(stamp(DAY, "09:00:01"))
    assert tob.ask_time.iloc[4] == pd.Timestamp(stamp(DAY, "09:00:02"))


def test_a_side_missing_at_the_start_is_nan_not_zero(book_day: Path) -> None:
    tob = obpipe.top_of_book(DAY, "BBCA", data_dir=book_day)
    first = tob.iloc[:2]
    assert first.bid.isna().all() and first.spread.isna().all() and first.mid.isna().all()
    assert first.bid_time.isna().all() and first.ask.notna().all()
    early = obpipe.book_at(DAY, "BBCA", "09:00:00.7", data_dir=book_day)
    assert early.bid_price.isna().all() and early.ask_price.tolist() == [8225, 8250]
    assert early.attrs["bid_time"] is None
    assert early.attrs["ask_time"] == pd.Timestamp(stamp(DAY, "09:00:00.5"))
    before = obpipe.book_at(DAY, "BBCA", time(8, 59), data_dir=book_day)
    assert before.empty


def test_the_naive_pivot_on_timestamp_pairs_nothing(book_day: Path) -> None:
    # The README's old example: BID and OFFER are separate messages with their own times.
    book = pd.read_csv(book_day / ticker_file(ORDERBOOK, DAY, "BBCA"), parse_dates=["timestamp"])
    top = book[book.level == 1].pivot_table(index="timestamp", columns="side", values="price")
    assert (top.OFFER - top.BID).dropna().empty
    assert obpipe.top_of_book(DAY, "BBCA", data_dir=book_day).spread.notna().sum() == 3


def test_wide_book_carries_the_other_side_and_clears_vanished_levels(book_day: Path) -> None:
    wide = obpipe.book(DAY, "BBCA", levels=2, wide=True, data_dir=book_day)
    expected = ["timestamp", "side", "seq"] + [
        f"{side}_{field}_{n}"
        for side in ("bid", "ask")
        for field in ("price", "lots", "orders")
        for n in (1, 2)
    ]
    assert list(wide.columns) == expected
    assert len(wide) == 5
    row = wide.iloc[3]  # OFFER 3, with BID 1 carried
    assert (row.bid_price_1, row.bid_price_2, row.bid_lots_2, row.bid_orders_2) == (
        8200,
        8175,
        20,
        3,
    )
    assert (row.ask_price_1, row.ask_lots_1, row.ask_price_2, row.ask_orders_2) == (
        8250,
        8,
        8275,
        4,
    )
    last = wide.iloc[4]  # BID 2 has one level: level 2 is gone, not carried
    assert last.bid_price_1 == 8225 and math.isnan(last.bid_price_2)
    assert last.ask_price_2 == 8275
    assert wide.iloc[:2].filter(like="bid_").isna().all().all()
    every = obpipe.book(DAY, "BBCA", levels=None, wide=True, data_dir=book_day)
    assert "ask_price_2" in every and "ask_price_3" not in every


def test_long_book_is_the_file_rows_in_time_order(book_day: Path) -> None:
    rows = obpipe.book(DAY, "BBCA", levels=1, data_dir=book_day)
    assert list(rows.columns) == tables.SCHEMAS[ORDERBOOK].names
    assert (rows.level == 1).all() and len(rows) == 5
    assert set(rows.code.astype(str)) == {"BBCA"}
    assert rows.total_value.dtype == np.int64 and rows.lots.dtype == np.float64
    assert len(obpipe.book(DAY, "BBCA", data_dir=book_day)) == 9


def test_book_at_an_instant(book_day: Path) -> None:
    exact = obpipe.book_at(DAY, "BBCA", "09:00:02", data_dir=book_day)  # inclusive
    assert exact.index.name == "level" and list(exact.index) == [1, 2]
    assert exact.to_numpy().tolist() == [[8200, 10, 2, 8250, 8, 1], [8175, 20, 3, 8275, 9, 4]]
    assert exact.attrs["instant"] == pd.Timestamp(stamp(DAY, "09:00:02"))
    just_before = obpipe.book_at(DAY, "BBCA", "09:00:01.999999", data_dir=book_day)
    assert just_before.loc[1, "ask_price"] == 8225
    utc = datetime(2026, 3, 2, 2, 0, 3, tzinfo=UTC)  # 09:00:03 WIB
    later = obpipe.book_at(DAY, "BBCA", utc, levels=2, data_dir=book_day)
    assert later.bid_price.iloc[0] == 8225 and pd.isna(later.bid_price.iloc[1])
    same = obpipe.book_at(DAY, "BBCA", f"{DAY}T09:00:03", levels=2, data_dir=book_day)
    pd.testing.assert_frame_equal(later, same)
    with pytest.raises(ValueError, match="not on 2026-03-02"):
        obpipe.book_at(DAY, "BBCA", f"{NEXT}T09:00:00", data_dir=book_day)


def test_a_day_crossing_midnight_wib(data_dir: Path) -> None:
    write_book(
        data_dir,
        DAY,
        "BBCA",
        snapshot(DAY, "23:59:59.500000", "BID", 7, [(8200, 1, 1)]),
        snapshot(DAY, "23:59:59.900000", "OFFER", 7, [(8225, 1, 1)]),
    )
    # 00:00:00.1 WIB is still 2 March in UTC: it belongs to the Jakarta day of 3 March.
    write_book(
        data_dir,
        NEXT,
        "BBCA",
        snapshot(NEXT, "00:00:00.100000", "OFFER", 8, [(8250, 2, 1)]),
        snapshot(NEXT, "00:00:00.300000", "BID", 8, [(8175, 2, 1)]),
    )
    write(
        data_dir,
        ticker_file(TRADES, NEXT, "BBCA"),
        TRADE_HEADER,
        f"{stamp(NEXT, '00:00:00.050000')},8225,1,822500,BUY,11,RG,{stamp(NEXT, '00:00:00.060000')}\n",
    )
    write(
        data_dir,
        ticker_file(TRADES, DAY, "BBCA"),
        TRADE_HEADER,
        f"{stamp(DAY, '23:59:59.950000')},8200,1,820000,SELL,10,RG,{stamp(DAY, '23:59:59.960000')}\n",
    )
    both = obpipe.top_of_book(f"{DAY}..{NEXT}", "BBCA", data_dir=data_dir)
    assert both.timestamp.is_monotonic_increasing and len(both) == 4
    assert both.timestamp.dt.date.astype(str).tolist() == [DAY, DAY, NEXT, NEXT]
    # IDX orders are day orders: nothing is carried across midnight WIB.
    assert both.spread.tolist()[1] == 25
    assert math.isnan(both.bid.iloc[2]) and both.ask.iloc[2] == 8250
    assert both.spread.iloc[3] == 75
    alone = obpipe.top_of_book(NEXT, "BBCA", data_dir=data_dir)
    pd.testing.assert_frame_equal(alone, both.iloc[2:].reset_index(drop=True))
    ranged = obpipe.top_of_book(start=DAY, end=NEXT, code="BBCA", data_dir=data_dir)
    pd.testing.assert_frame_equal(ranged, both)
    just_after = datetime(2026, 3, 2, 17, 0, 0, 200_000, tzinfo=UTC)  # 00:00:00.2 WIB
    at = obpipe.book_at(NEXT, "BBCA", just_after, data_dir=data_dir)
    assert pd.isna(at.bid_price.iloc[0]) and at.ask_price.iloc[0] == 8250
    prints = obpipe.trades(start=DAY, end=NEXT, code="BBCA", data_dir=data_dir)
    assert prints.trade_number.tolist() == [10, 11]
    assert prints.timestamp.dt.date.astype(str).tolist() == [DAY, NEXT]


def test_gaps_mask_rows_a_hole_may_have_falsified(data_dir: Path) -> None:
    write_book(
        data_dir,
        DAY,
        "BBCA",
        snapshot(DAY, "09:59:50.000000", "BID", 1, [(8200, 1, 1)]),
        snapshot(DAY, "09:59:55.000000", "OFFER", 1, [(8225, 1, 1)]),
        # 10:00:00–10:00:30 not captured
        snapshot(DAY, "10:00:40.000000", "BID", 2, [(8175, 1, 1)]),  # the ask predates the gap
        snapshot(DAY, "10:00:45.000000", "OFFER", 2, [(8200, 1, 1)]),  # both sides fresh again
        snapshot(DAY, "10:10:00.000000", "BID", 3, [(8175, 2, 1)]),
    )
    write(
        data_dir,
        gap_file(DAY),
        GAP_HEADER,
        f'{stamp(DAY, "10:00:00.000000")},{stamp(DAY, "10:00:30.000000")},disconnect,"BBCA,TLKM",ing-1,close 1006\n'
        f"{stamp(DAY, '10:05:00.000000')},{stamp(DAY, '10:06:00.000000')},ticker_moved,TLKM,ing-2,\n"
        f"{stamp(DAY, '10:09:00.000000')},,overflow,TLKM,ing-2,still open\n",
    )
    gaps = obpipe.gaps(DAY, data_dir=data_dir)
    assert gaps.cause.astype(str).tolist() == ["disconnect", "ticker_moved", "overflow"]
    assert gaps.tickers.iloc[0] == "BBCA,TLKM" and pd.isna(gaps.end.iloc[2])
    tob = obpipe.top_of_book(DAY, "BBCA", data_dir=data_dir)
    assert obpipe.gap_mask(tob, gaps, "BBCA").tolist() == [False, False, True, False, False]
    # TLKM's own gaps mask TLKM rows only; the open one runs on.
    assert obpipe.gap_mask(tob, gaps, "TLKM").tolist() == [False, False, True, False, True]
    assert obpipe.gap_mask(tob, gaps).tolist() == [False, False, True, False, True]
    clean = tob[~obpipe.gap_mask(tob, gaps, "BBCA")]
    assert len(clean) == 4
    write(
        data_dir,
        ticker_file(TRADES, DAY, "BBCA"),
        TRADE_HEADER,
        f"{stamp(DAY, '10:00:10.000000')},8200,1,820000,BUY,1,RG,{stamp(DAY, '10:00:10.000000')}\n"
        f"{stamp(DAY, '10:00:50.000000')},8200,1,820000,,2,NG,{stamp(DAY, '10:00:50.000000')}\n",
    )
    prints = obpipe.trades(DAY, "BBCA", data_dir=data_dir)
    assert obpipe.gap_mask(prints, gaps, "BBCA").tolist() == [True, False]
    assert pd.isna(prints.side.iloc[1]) and prints.board.astype(str).tolist() == ["RG", "NG"]
    assert obpipe.gaps(NEXT, data_dir=data_dir).empty


def test_parquet_csv_and_gzip_read_the_same(book_day: Path, tmp_path: Path) -> None:
    layout = Layout(book_day)
    csv_path = book_day / ticker_file(ORDERBOOK, DAY, "BBCA")
    from_csv = obpipe.top_of_book(DAY, "BBCA", data_dir=book_day)
    rows_csv = obpipe.book(DAY, "BBCA", levels=None, data_dir=book_day)
    gz_root = tmp_path / "gz"
    gz_path = gz_root / ticker_file(ORDERBOOK, DAY, "BBCA")
    gz_path.parent.mkdir(parents=True)
    gz_path.with_name(gz_path.name + ".gz").write_bytes(gzip.compress(csv_path.read_bytes()))
    pd.testing.assert_frame_equal(obpipe.top_of_book(DAY, "BBCA", data_dir=gz_root), from_csv)
    tables.write_parquet(
        tables.read_csv(csv_path, ORDERBOOK, "BBCA"), layout.parquet(ORDERBOOK, DAY, "BBCA")
    )
    csv_path.unlink()  # now only the Parquet twin can answer
    pd.testing.assert_frame_equal(obpipe.top_of_book(DAY, "BBCA", data_dir=book_day), from_csv)
    pd.testing.assert_frame_equal(
        obpipe.book(DAY, "BBCA", levels=None, data_dir=book_day), rows_csv
    )


def test_prices(data_dir: Path) -> None:
    at = stamp(DAY, "09:00:01.000000")
    write(
        data_dir,
        ticker_file(PRICES, DAY, "BBCA"),
        PRICE_HEADER,
        f"{stamp(DAY, '09:00:02.000000')},8225,8200,8225,8200,8175,120,98700000,4,8212.5,50000,0,{at},\n"
        f"{at},8200,8200,8200,8200,8175,100,82000000,3,8200,0,0,{at},17\n",
    )
    frame = obpipe.prices(DAY, "BBCA", data_dir=data_dir)
    assert list(frame.columns) == tables.SCHEMAS[PRICES].names
    assert frame.frequency.tolist() == [3, 4]  # exchange-time order
    assert frame.price.dtype == np.float64 and frame.frequency.dtype == np.int64
    assert frame.average.tolist() == [8200.0, 8212.5]
    assert frame.sequence.iloc[0] == 17 and np.isnan(frame.sequence.iloc[1])  # field 19 or none


def test_every_ticker_when_no_code_is_given(book_day: Path) -> None:
    write_book(book_day, DAY, "TLKM", snapshot(DAY, "09:00:00.200000", "BID", 1, [(3300, 1, 1)]))
    rows = obpipe.book(DAY, "BBCA", data_dir=book_day)
    assert set(rows.code.astype(str)) == {"BBCA"}
    write(
        book_day,
        ticker_file(TRADES, DAY, "TLKM"),
        TRADE_HEADER,
        f"{stamp(DAY, '09:00:01.000000')},3300,1,330000,BUY,2,RG,{stamp(DAY, '09:00:01.000000')}\n",
    )
    write(
        book_day,
        ticker_file(TRADES, DAY, "BBCA"),
        TRADE_HEADER,
        f"{stamp(DAY, '09:00:00.000000')},8200,1,820000,BUY,1,RG,{stamp(DAY, '09:00:00.000000')}\n",
    )
    every = obpipe.trades(DAY, data_dir=book_day)
    assert every.code.astype(str).tolist() == ["BBCA", "TLKM"]


def test_where_the_files_are_looked_for(
    book_day: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_DIR", str(book_day))
    assert len(obpipe.top_of_book(DAY, "BBCA")) == 5
    monkeypatch.delenv("DATA_DIR")
    monkeypatch.chdir(book_day.parent)  # ./data
    assert len(obpipe.top_of_book(DAY, "bbca")) == 5
    with pytest.raises(FileNotFoundError, match="no orderbook file of TLKM for 2026-03-02"):
        obpipe.top_of_book(DAY, "TLKM")
    with pytest.raises(DayError):
        obpipe.trades("2026-3-2", "BBCA")
    with pytest.raises(ValueError, match="not both"):
        obpipe.trades(DAY, "BBCA", start=DAY)
    with pytest.raises(TypeError, match="ticker code"):
        obpipe.top_of_book(DAY)
    assert span("2026-03-06..2026-03-09") == [
        "2026-03-06",
        "2026-03-07",
        "2026-03-08",
        "2026-03-09",
    ]
    assert span(start="2026-03-02") == ["2026-03-02"]
    with pytest.raises(DayError):
        span("2026-03-09..2026-03-06")
    # A range whose days have no files at all is an error too; one with some files is not.
    with pytest.raises(FileNotFoundError):
        obpipe.top_of_book("2026-03-09..2026-03-10", "BBCA")
    assert len(obpipe.top_of_book("2026-02-27..2026-03-03", "BBCA")) == 5
    assert tmp_path.exists()


def test_gaps_file_schema() -> None:
    assert tables.csv_columns(GAPS) == GAP_HEADER.strip().split(",")
