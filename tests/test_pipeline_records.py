"""Stream records: frames → entries → records, times in WIB, bad entries refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.keys import Keys, partition_of
from pipeline.records import (
    BookRecord,
    GapRecord,
    PriceRecord,
    RecordError,
    TradeRecord,
    from_book,
    from_liveprice,
    from_trade,
    parse,
)
from stockbit import ProtocolError
from stockbit.messages import LivePrice, OrderBook, RunningTrade
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


def live(sequence: int | None = None, time: datetime | None = RECEIVED) -> LivePrice:
    return LivePrice(
        code="BBCA", last=8225.0, shares=1_234_500.0, high=8250.0, low=8150.0, open=8175.0,
        frequency=321.0, previous=8175.0, value=10_123_450_000.0, time=time,
        average=8200.4567, foreign_buy=400_000.0, foreign_sell=350_000.5, sequence=sequence,
    )  # fmt: skip


def test_price_record_is_compact_and_round_trips() -> None:
    record = from_liveprice(live(), RECEIVED, "ing-1")
    assert record.time == "2026-03-02T23:59:59.950000+07:00" and record.day == "2026-03-02"
    entry = record.fields()
    assert entry == {
        "k": "p", "c": "BBCA", "p": "8225", "o": "8175", "h": "8250", "l": "8150",
        "y": "8175", "v": "1234500", "x": "10123450000", "f": "321", "a": "8200.4567",
        "b": "400000", "s": "350000.5", "t": "2026-03-02T23:59:59.950000+07:00",
        "r": "2026-03-02T23:59:59.950000+07:00", "i": "ing-1",
    }  # fmt: skip
    assert "q" not in entry, "field 19 absent: no q"
    assert parse(entry) == record and isinstance(record, PriceRecord)
    with_sequence = from_liveprice(live(sequence=77), RECEIVED, "ing-1")
    assert with_sequence.fields()["q"] == "77"
    assert parse(with_sequence.fields()) == with_sequence


def test_price_record_needs_the_exchange_time() -> None:
    with pytest.raises(ProtocolError, match="field 11"):
        from_liveprice(live(time=None), RECEIVED, "x")
    entry = from_liveprice(live(), RECEIVED, "x").fields()
    with pytest.raises(RecordError):
        parse({**entry, "f": "many"})
    with pytest.raises(RecordError):
        parse({k: v for k, v in entry.items() if k != "y"})


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
