"""Stream entries → file, dedup key and rows (pure); the day always from the record."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.layout import PRICES
from pipeline.records import BookRecord, GapRecord, PriceRecord, TradeRecord, from_book
from pipeline.schema import (
    COLUMNS,
    HEADERS,
    WINDOWS,
    EntryError,
    Recent,
    price_keys,
    render,
    render_gap,
)
from stockbit.messages import OrderBook
from stockbit.timestamps import parse_iso


def raw(fields: dict[str, str]) -> list[bytes]:
    out: list[bytes] = []
    for name, value in fields.items():
        out += [name.encode(), value.encode()]
    return out


def book(time: str, code: str = "BBCA", seq: int = 1, side: str = "BID") -> BookRecord:
    return BookRecord(code, side, seq, time, "8200;1;100", "2026-03-02T23:59:59.950000+07:00", "i")


def price(
    time: str = "2026-03-02T10:15:30.123000+07:00",
    frequency: float = 321.0,
    shares: float = 1_234_500.0,
    sequence: int | None = None,
    source: str = "ing-1",
) -> PriceRecord:
    return PriceRecord(
        code="BBCA", last=8225.0, open=8175.0, high=8250.0, low=8150.0, previous=8175.0,
        shares=shares, value=10_123_450_000.0, frequency=frequency, average=8200.4567,
        foreign_buy=400_000.0, foreign_sell=350_050.0, sequence=sequence, time=time,
        received="2026-03-02T10:15:30.200000+07:00", source=source,
    )  # fmt: skip


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
        {**price().fields(), "p": "nan"},
        {**price().fields(), "v": "-100"},
        {**price().fields(), "c": "bbca!"},
        {**price().fields(), "t": "later"},
    ],
)
def test_bad_entries_raise_entry_error(fields: dict[str, str]) -> None:
    with pytest.raises(EntryError):
        render(raw(fields))
    with pytest.raises(EntryError):
        render([b"k", b"b", b"c", b"\xff\xfe"])


def test_prices_rows() -> None:
    assert COLUMNS[PRICES] == [
        "timestamp", "price", "open", "high", "low", "prev_close", "lots", "total_value",
        "frequency", "average", "foreign_buy", "foreign_sell", "received_at", "sequence",
    ]  # fmt: skip
    assert HEADERS[PRICES].endswith("received_at,sequence\n")
    out = render(raw(price().fields()))
    assert out.path == "prices/2026-03-02_BBCA.csv" and out.rows == 1
    # lots = shares / 100; total_value in rupiah; foreign figures as the wire gives them.
    assert out.text == (
        "2026-03-02T10:15:30.123000+07:00,8225,8175,8250,8150,8175,12345,10123450000,321,"
        "8200.4567,400000,350050,2026-03-02T10:15:30.200000+07:00,\n"
    )
    odd = render(raw(price(shares=1_234_550.0, sequence=42).fields()))
    assert ",12345.5," in odd.text and odd.text.endswith(",42\n")
    # The day is the exchange time's (field 11), in Jakarta.
    late = render(raw(price(time="2026-03-02T17:00:00.5Z").fields()))
    assert late.path == "prices/2026-03-03_BBCA.csv"
    assert late.text.startswith("2026-03-03T00:00:00.500000+07:00,")


def test_prices_dedup_key_is_time_frequency_volume_or_field_19() -> None:
    one = render(raw(price().fields()))
    replica = render(raw(price(source="ing-2").fields()))
    assert one.key == replica.key == ("2026-03-02T10:15:30.123000+07:00", "321", "12345")
    # Another update of the same instant differs in its trade count or volume.
    assert render(raw(price(frequency=322.0).fields())).key != one.key
    assert render(raw(price(shares=1_234_600.0).fields())).key != one.key
    # With field 19 the sequence alone is the identity.
    a = render(raw(price(sequence=7).fields()))
    b = render(raw(price(sequence=7, frequency=400.0).fields()))
    assert a.key == b.key == "#7" and render(raw(price(sequence=8).fields())).key != a.key
    # Seeded from the file's tail, the window knows the keys of the rows already written.
    tail = "\n" + HEADERS[PRICES] + one.text + a.text + "2026-03-02T10:15"  # torn last line
    assert price_keys(tail) == [one.key, a.key]
    window = Recent(WINDOWS[PRICES], price_keys(tail))
    assert not window.add(replica.key) and not window.add(b.key)
    assert window.add(render(raw(price(frequency=322.0).fields())).key)


def test_gap_entries() -> None:
    gap = GapRecord(
        "2026-03-02T23:59:00.000000+07:00", "2026-03-03T00:00:05.000000+07:00", "disconnect",
        ("BBCA",), "ing-1",
    )  # fmt: skip
    out = render_gap(raw(gap.fields()))
    assert out.path == "gaps/2026-03-02.csv" and out.key is None and out.rows == 1
    with pytest.raises(EntryError):
        render_gap(raw({"start": "x"}))
