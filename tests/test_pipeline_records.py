"""Stream records: frames → entries → records, times in WIB, bad entries refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.keys import Keys, partition_of
from pipeline.records import (
    BookRecord,
    GapRecord,
    RecordError,
    TradeRecord,
    from_book,
    from_trade,
    parse,
)
from stockbit import ProtocolError
from stockbit.messages import OrderBook, RunningTrade
from stockbit.timestamps import parse_iso

RECEIVED = datetime(2026, 3, 2, 16, 59, 59, 950000, tzinfo=UTC)


def test_book_record_round_trip_in_jakarta_time() -> None:
    book = OrderBook(
        "BBCA", "#O|BBCA|OFFER|8225;5;50000|8250;7;120000", 17, 4,
        parse_iso("2026-03-02T16:59:59.9+00:00"),
    )  # fmt: skip
    record = from_book(book, RECEIVED, "ing-1")
    assert record == BookRecord(
        "BBCA", "OFFER", 17, "2026-03-02T23:59:59.900000+07:00",
        "8225;5;50000|8250;7;120000", "2026-03-02T23:59:59.950000+07:00", "ing-1",
    )  # fmt: skip
    assert record.day == "2026-03-02"
    entry = record.fields()
    assert entry["s"] == "O" and entry["k"] == "b"
    assert parse(entry) == record


def test_book_record_refuses_mismatch_and_missing_time() -> None:
    with pytest.raises(ProtocolError):
        from_book(OrderBook("TLKM", "#O|BBCA|BID|1;1;100", 1, 1, RECEIVED), RECEIVED, "x")
    with pytest.raises(ProtocolError):
        from_book(OrderBook("BBCA", "#O|BBCA|BID|1;1;100", 1, 1, None), RECEIVED, "x")


def test_trade_record_round_trip() -> None:
    trade = RunningTrade(RECEIVED, "BBCA", 8200.0, 50000.0, 1, 1234, 1, 410_000_000.0)
    record = from_trade(trade, RECEIVED, "ing-1")
    assert record.time == "2026-03-02T23:59:59.950000+07:00"
    assert record.fields()["p"] == "8200" and record.fields()["x"] == "410000000"
    assert parse(record.fields()) == record
    assert isinstance(record, TradeRecord)


@pytest.mark.parametrize(
    "entry",
    [{}, {"k": "z"}, {"k": "b", "c": "BBCA"}, {"k": "b", "c": "X", "s": "Q", "q": "1", "t": "", "l": "", "r": ""},
     {"k": "b", "c": "X", "s": "B", "q": "one", "t": "", "l": "", "r": ""}],
)  # fmt: skip
def test_bad_entries(entry: dict[str, str]) -> None:
    with pytest.raises(RecordError):
        parse(entry)


def test_gap_round_trip() -> None:
    gap = GapRecord(
        "2026-03-02T10:00:00.000000+07:00",
        "2026-03-02T10:00:03.000000+07:00",
        "disconnect",
        ("BBCA", "TLKM"),
        "ing-1",
    )
    assert GapRecord.parse(gap.fields()) == gap and gap.day == "2026-03-02"
    with pytest.raises(RecordError):
        GapRecord.parse({"start": "x"})


def test_partitions_are_stable_and_prefixed() -> None:
    keys = Keys("obpipe:", 16)
    assert keys.stream_for("BBCA") == f"obpipe:stream:{partition_of('BBCA', 16)}"
    assert partition_of("BBCA", 16) == partition_of("BBCA", 16)
    assert len({partition_of(f"T{i}", 16) for i in range(200)}) == 16
    assert all(
        k.startswith("obpipe:")
        for k in [keys.gaps, keys.lease(1), keys.ticker("X"), keys.writer("w")]
    )
