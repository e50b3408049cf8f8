"""Stream entries → file, dedup key and rows (pure); the day always from the record."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.records import BookRecord, GapRecord, TradeRecord, from_book
from pipeline.schema import EntryError, render, render_gap
from stockbit.messages import OrderBook
from stockbit.timestamps import parse_iso


def raw(fields: dict[str, str]) -> list[bytes]:
    out: list[bytes] = []
    for name, value in fields.items():
        out += [name.encode(), value.encode()]
    return out


def book(time: str, code: str = "BBCA", seq: int = 1, side: str = "BID") -> BookRecord:
    return BookRecord(code, side, seq, time, "8200;1;100", "2026-03-02T23:59:59.950000+07:00", "i")


def test_day_comes_from_the_exchange_time_in_jakarta() -> None:
    before = render(raw(book("2026-03-02T23:59:59.900000+07:00").fields()))
    after = render(raw(book("2026-03-03T00:00:00.100000+07:00", seq=2).fields()))
    assert before.path == "orderbook/2026-03-02_BBCA.csv"
    assert after.path == "orderbook/2026-03-03_BBCA.csv"
    assert before.key == ("BID", "1", "2026-03-02T23:59:59.900000+07:00")
    # A record written with a UTC time (another ingestor version) still lands in the WIB day.
    utc = render(raw(book("2026-03-02T17:00:00.1Z").fields()))
    assert utc.path == "orderbook/2026-03-03_BBCA.csv"
    assert utc.text.startswith("2026-03-03T00:00:00.100000+07:00,8200,1,820000,BID,1,1,1,")


def test_from_a_decoded_frame() -> None:
    frame = OrderBook(
        "TLKM", "#O|TLKM|OFFER|3300;2;1000|3310;1;50", 9, 1,
        parse_iso("2026-03-02T10:15:30.1234567+07:00"),
    )  # fmt: skip
    record = from_book(frame, datetime(2026, 3, 2, 3, 15, 31, tzinfo=UTC), "ing-1")
    out = render(raw(record.fields()))
    assert out.rows == 2
    assert out.text == (
        "2026-03-02T10:15:30.123456+07:00,3300,10,3300000,OFFER,1,2,9,2026-03-02T10:15:31.000000+07:00\n"
        "2026-03-02T10:15:30.123456+07:00,3310,0.5,165500,OFFER,2,1,9,2026-03-02T10:15:31.000000+07:00\n"
    )


def test_other_field_order_and_trades_go_through_records_parse() -> None:
    fields = dict(reversed(book("2026-03-02T10:00:00.000000+07:00").fields().items()))
    assert render(raw(fields)).rows == 1
    trade = TradeRecord(
        "BBCA", 77, 8200.0, 500.0, 2, 1, 4_100_000.0,
        "2026-03-02T10:00:00.000000+07:00", "2026-03-02T10:00:00.100000+07:00", "i",
    )  # fmt: skip
    out = render(raw(trade.fields()))
    assert out.path == "trades/2026-03-02_BBCA.csv" and out.key == "77"
    assert out.text == (
        "2026-03-02T10:00:00.000000+07:00,8200,5,4100000,SELL,77,RG,2026-03-02T10:00:00.100000+07:00\n"
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"k": "b", "c": "BBCA"},
        {**book("2026-03-02T10:00:00.000000+07:00").fields(), "c": "../../etc"},
        {**book("2026-03-02T10:00:00.000000+07:00").fields(), "s": "X"},
        {**book("2026-03-02T10:00:00.000000+07:00").fields(), "q": "-1"},
        {**book("2026-03-02T10:00:00.000000+07:00").fields(), "t": "soon"},
        {**book("2026-03-02T10:00:00.000000+07:00").fields(), "l": "1;2"},
        {"k": "z"},
    ],
)
def test_bad_entries_raise_entry_error(fields: dict[str, str]) -> None:
    with pytest.raises(EntryError):
        render(raw(fields))
    with pytest.raises(EntryError):
        render([b"k", b"b", b"c", b"\xff\xfe"])


def test_gap_entries() -> None:
    gap = GapRecord(
        "2026-03-02T23:59:00.000000+07:00", "2026-03-03T00:00:05.000000+07:00", "disconnect",
        ("BBCA",), "ing-1",
    )  # fmt: skip
    out = render_gap(raw(gap.fields()))
    assert out.path == "gaps/2026-03-02.csv" and out.key is None and out.rows == 1
    with pytest.raises(EntryError):
        render_gap(raw({"start": "x"}))
