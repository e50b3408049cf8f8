"""Server frames: worked examples of stockbit-protocol.md §3, round trips, malformed input."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from stockbit import ProtocolError, wrapper
from stockbit.book import parse_body
from stockbit.messages import (
    BestBidOffer,
    ErrorFrame,
    IepIev,
    LivePrice,
    OrderBook,
    Pong,
    RunningTrade,
    TradeBatch,
    Unknown,
)
from stockbit.timestamps import WIB

BODY = "#O|BBCA|BID|8200;123;4567800|8175;88;1203400|8150;301;9876500"
BOOK_FRAME = (
    bytes.fromhex("52 94 01 0a 04 42 42 43 41 12 3d")
    + BODY.encode()
    + bytes.fromhex("18 87 ad 4b 20 2a 2a 20")
    + b"2026-03-02T10:15:30.123456+07:00"
    + bytes.fromhex("40 01 4a 23")
    + b"2026-03-02T10:15:30.118734201+07:00"
)
TRADE_FRAME = bytes.fromhex(
    "42 58 0a 56"
    "0a 0b 08 d2 81 94 cd 06 10 c0 a9 d3 3a"
    "12 04 42 42 43 41"
    "19 00 00 00 00 00 04 c0 40"
    "21 00 00 00 00 00 6a e8 40"
    "28 01"
    "3a 0b 08 d2 81 94 cd 06 10 80 9c 9c 39"
    "42 12 09 00 00 00 00 00 00 39 40 11 a7 79 c7 29 3a 92 d3 3f"
    "48 d2 09"
    "50 01"
    "59 00 00 00 80 1a 70 b8 41"
)
ERROR_FRAME = bytes.fromhex("3a 1b 08 91 03 12 16") + b"you are not authorized"


def test_worked_order_book_frame() -> None:
    assert len(BOOK_FRAME) == 151
    book = wrapper.decode(BOOK_FRAME)
    assert isinstance(book, OrderBook)
    assert (book.code, book.seq, book.book_id, book.board) == ("BBCA", 1234567, 42, 1)
    assert book.body == BODY
    assert book.time == datetime(2026, 3, 2, 10, 15, 30, 123456, tzinfo=WIB)
    # nanoseconds are truncated to microseconds, never rounded up
    assert book.itch_time == datetime(2026, 3, 2, 10, 15, 30, 118734, tzinfo=WIB)


def test_book_units_are_price_orders_shares() -> None:
    body = parse_body(BODY)
    assert (body.code, body.side) == ("BBCA", "BID")
    best = body.levels[0]
    assert (best.price, best.orders, best.shares) == (8200, 123, 4567800)
    assert best.lots == 45678
    assert best.value == 8200 * 4567800


def test_book_encode_is_byte_exact_with_original_strings() -> None:
    book = wrapper.decode(BOOK_FRAME)
    assert isinstance(book, OrderBook)
    again = wrapper.encode_orderbook(
        book, "2026-03-02T10:15:30.123456+07:00", "2026-03-02T10:15:30.118734201+07:00"
    )
    assert again == BOOK_FRAME


def test_worked_trade_frame() -> None:
    assert len(TRADE_FRAME) == 90
    batch = wrapper.decode(TRADE_FRAME)
    assert isinstance(batch, TradeBatch)
    (trade,) = batch.trades
    assert trade.code == "BBCA"
    assert trade.time == datetime(2026, 3, 2, 3, 15, 30, 123000, tzinfo=UTC)
    assert (trade.price, trade.shares, trade.action) == (8200.0, 50000.0, 1)
    assert (trade.trade_number, trade.board, trade.value) == (1234, 1, 410_000_000.0)


def test_trade_round_trip() -> None:
    trade = RunningTrade(
        datetime(2026, 3, 2, 3, 15, 30, 123000, tzinfo=UTC),
        "TLKM",
        3300.0,
        1200.0,
        2,
        99,
        3,
        3960000.0,
    )
    decoded = wrapper.decode(wrapper.encode_trade_batch([trade, trade]))
    assert decoded == TradeBatch((trade, trade))


def test_error_and_pong() -> None:
    assert len(ERROR_FRAME) == 29
    assert wrapper.decode(ERROR_FRAME) == ErrorFrame(401, "you are not authorized")
    assert wrapper.encode_error(401, "you are not authorized") == ERROR_FRAME
    assert wrapper.PONG == bytes.fromhex("12 06 0a 04 70 6f 6e 67")
    assert wrapper.decode(wrapper.PONG) == Pong("pong")
    assert wrapper.encode_pong() == wrapper.PONG


def test_liveprice_round_trip() -> None:
    price = LivePrice(
        code="BBCA", last=8200.0, shares=1e7, high=8250.0, low=8100.0, open=8150.0,
        frequency=1234.0, previous=8125.0, value=8.2e10,
        time=datetime(2026, 3, 2, 10, 15, 30, tzinfo=WIB),
    )  # fmt: skip
    assert wrapper.decode(wrapper.encode_liveprice(price)) == price


def _double(number: int, value: float) -> bytes:
    return bytes([number << 3 | 1]) + struct.pack("<d", value)


def _liveprice_frame(body: bytes) -> bytes:
    # Wrapper field 9; bodies here are 128..16383 bytes: a two-byte length varint.
    assert 128 <= len(body) < 16384
    return bytes([0x4A, 0x80 | (len(body) & 0x7F), len(body) >> 7]) + body


def test_liveprice_fields_by_number() -> None:
    # Built by hand from §3.4's numbers, not by the encoder: 1 code, 2 last, 3 volume (shares),
    # 4 high, 5 low, 6 open, 7 frequency, 8/9 foreign buy/sell, 10 average, 11 date,
    # 12 close (not read), 13 prev, 14 value, 19 sequence_number (varint), 28 lot (not read).
    stamp = b"2026-03-02T10:15:30.1234+07:00"
    body = (
        bytes.fromhex("0a 04") + b"BBCA"
        + _double(2, 8225.0) + _double(3, 1_234_500.0) + _double(4, 8250.0)
        + _double(5, 8150.0) + _double(6, 8175.0) + _double(7, 321.0)
        + _double(8, 400_000.0) + _double(9, 350_000.0) + _double(10, 8200.5)
        + bytes([0x5A, len(stamp)]) + stamp
        + _double(12, 8225.0) + _double(13, 8175.0) + _double(14, 10_123_450_000.0)
        + bytes.fromhex("98 01 e7 07")  # 19: 999
        + bytes.fromhex("e1 01") + struct.pack("<d", 12_345.0)  # 28 lot, skipped
    )  # fmt: skip
    price = wrapper.decode(_liveprice_frame(body))
    assert price == LivePrice(
        code="BBCA", last=8225.0, shares=1_234_500.0, high=8250.0, low=8150.0, open=8175.0,
        frequency=321.0, previous=8175.0, value=10_123_450_000.0,
        time=datetime(2026, 3, 2, 10, 15, 30, 123400, tzinfo=WIB), average=8200.5,
        foreign_buy=400_000.0, foreign_sell=350_000.0, sequence=999,
    )  # fmt: skip
    # Without field 19 the sequence is None, not 0 (it is the dedup identity when present).
    without = body[: body.index(bytes.fromhex("98 01"))] + body[-10:]
    decoded = wrapper.decode(_liveprice_frame(without))
    assert isinstance(decoded, LivePrice) and decoded.sequence is None
    assert wrapper.decode(wrapper.encode_liveprice(price)) == price
    assert wrapper.decode(wrapper.encode_liveprice(decoded)) == decoded


def test_iepiev_and_best_bid_offer_decode_the_code_only() -> None:
    assert wrapper.decode(bytes.fromhex("5a 06 0a 04") + b"BBCA") == IepIev("BBCA")
    assert wrapper.decode(bytes.fromhex("6a 06 0a 04") + b"TLKM") == BestBidOffer("TLKM")
    assert wrapper.encode_iepiev("BBCA") == bytes.fromhex("5a 06 0a 04") + b"BBCA"
    assert wrapper.encode_best_bid_offer("TLKM") == bytes.fromhex("6a 06 0a 04") + b"TLKM"
    # Their other fields are unattested: skipped, whatever their type.
    extra = bytes.fromhex("0a 04") + b"BBCA" + _double(2, 8200.0) + bytes.fromhex("18 05")
    assert wrapper.decode(bytes([0x5A, len(extra)]) + extra) == IepIev("BBCA")
    # A field 1 that is not text leaves the code empty rather than failing the frame...
    assert wrapper.decode(bytes.fromhex("6a 02 08 01")) == BestBidOffer("")
    assert wrapper.decode(bytes.fromhex("6a 04 0a 02 ff fe")) == BestBidOffer("")
    # ...but bytes that are not protobuf still are an error.
    with pytest.raises(ProtocolError):
        wrapper.decode(bytes.fromhex("5a 04 0a 09 41 41"))


def test_unknown_fields_are_skipped() -> None:
    # Wrapper field 12 (intraday) is not decoded: reported as Unknown, not an error.
    assert wrapper.decode(bytes.fromhex("62 02 0a 00")) == Unknown(12)
    # An unknown sub-field (6, varint; 7, fixed32) inside an order book is passed over.
    inner = BOOK_FRAME[3:] + bytes.fromhex("30 05 3d 01 02 03 04")
    frame = bytes.fromhex("52") + bytes([0x80 | (len(inner) & 0x7F), len(inner) >> 7]) + inner
    book = wrapper.decode(frame)
    assert isinstance(book, OrderBook) and book.seq == 1234567


@pytest.mark.parametrize(
    "data",
    [
        b"",
        BOOK_FRAME[:-1],
        BOOK_FRAME + b"\x00",
        bytes.fromhex("52 03 0a 01 ff"),  # invalid UTF-8 code
        bytes.fromhex("52 02 18 01"),  # no code/body
        bytes.fromhex("52 06 0a 01 41 12 01 41 2a"),
        bytes.fromhex("52 04 0a 01 41 0f"),  # wire type 7
        bytes.fromhex("3a 02 08"),  # truncated varint in error
        bytes.fromhex("42 03 0a 01 08"),
        bytes.fromhex("52 ff ff ff ff ff ff ff ff ff ff 01"),
    ],
)
def test_malformed_frames_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        wrapper.decode(data)


def test_bad_timestamp_in_book_is_protocol_error() -> None:
    book = OrderBook("BBCA", BODY, 1, 1, None)
    frame = wrapper.encode_orderbook(book, "yesterday at noon")
    with pytest.raises(ProtocolError, match="ISO-8601"):
        wrapper.decode(frame)
