"""Client frames, byte-exact against the worked examples in stockbit-protocol.md §2.3 and §1.4."""

from __future__ import annotations

import pytest

from stockbit import ProtocolError, request
from stockbit.messages import Channel, Request

USER = "1234567"
KEY = "A" * 43 + "="
TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJkYXRhIjp7InVpZCI6MTIzNDU2N30sImlhdCI6MTc2"
    "NzIyNTYwMCwiZXhwIjoxNzY3MzEyMDAwfQ.c2ln"
)
CREDS = bytes.fromhex("0a07") + USER.encode()
KEY_FIELD = bytes.fromhex("1a2c") + KEY.encode()
TOKEN_FIELD = bytes.fromhex("2a78") + TOKEN.encode()
TICKERS = ("BBCA", "TLKM")


def test_ping_is_the_captured_constant() -> None:
    assert request.PING == bytes.fromhex("22 06 0a 04 70 69 6e 67")
    assert request.encode(Request(ping="ping")) == request.PING


def test_auth_frame_is_177_bytes_byte_exact() -> None:
    frame = request.auth(USER, KEY, TOKEN)
    assert len(TOKEN) == 120
    assert frame == CREDS + KEY_FIELD + TOKEN_FIELD
    assert len(frame) == 177


def test_subscribe_book_and_tape_203_bytes() -> None:
    frame = request.subscribe(USER, KEY, TOKEN, TICKERS, TICKERS)
    channel = bytes.fromhex(
        "12 18 12 04 42 42 43 41 12 04 54 4c 4b 4d 2a 04 42 42 43 41 2a 04 54 4c 4b 4d"
    )
    assert frame == CREDS + channel + KEY_FIELD + TOKEN_FIELD
    assert len(frame) == 203


@pytest.mark.parametrize(
    ("channel", "hex_body"),
    [
        (
            Channel(order_book=TICKERS, liveprice=TICKERS, iepiev=TICKERS, best_bid_offer=TICKERS),
            "12 30 12 04 42 42 43 41 12 04 54 4c 4b 4d 32 04 42 42 43 41 32 04 54 4c 4b 4d"
            "3a 04 42 42 43 41 3a 04 54 4c 4b 4d 4a 04 42 42 43 41 4a 04 54 4c 4b 4d",
        ),
        (
            Channel(
                order_book=TICKERS, running_trade_batch=TICKERS, liveprice=TICKERS, iepiev=TICKERS
            ),
            "12 30 12 04 42 42 43 41 12 04 54 4c 4b 4d 2a 04 42 42 43 41 2a 04 54 4c 4b 4d"
            "32 04 42 42 43 41 32 04 54 4c 4b 4d 3a 04 42 42 43 41 3a 04 54 4c 4b 4d",
        ),
        (Channel(running_trade=TICKERS), "12 0c 1a 04 42 42 43 41 1a 04 54 4c 4b 4d"),
        (Channel(running_trade_batch=("*",)), "12 03 2a 01 2a"),
        (Channel(), "12 00"),
    ],
)
def test_channel_variants_match_the_notes(channel: Channel, hex_body: str) -> None:
    frame = request.encode(Request(user_id=USER, channel=channel, key=KEY, access_token=TOKEN))
    assert frame == CREDS + bytes.fromhex(hex_body) + KEY_FIELD + TOKEN_FIELD


BBCA = "42 42 43 41"
TLKM = "54 4c 4b 4d"


def test_book_subscription_is_variant_a_byte_exact() -> None:
    # §2.3 variant A: order_book, liveprice, iepiev, best_bid_offer per ticker, fields
    # ascending and each channel's entries grouped, as the browser writes them.
    frame = request.subscribe_books(USER, KEY, TOKEN, TICKERS, trades=False)
    body = bytes.fromhex(
        f"12 30 12 04 {BBCA} 12 04 {TLKM} 32 04 {BBCA} 32 04 {TLKM}"
        f"3a 04 {BBCA} 3a 04 {TLKM} 4a 04 {BBCA} 4a 04 {TLKM}"
    )
    assert frame == CREDS + body + KEY_FIELD + TOKEN_FIELD
    assert len(frame) == 227


def test_book_subscription_with_trades_adds_field_5_in_its_place() -> None:
    # Variant A + running_trade_batch (5), which sorts between order_book (2) and liveprice (6).
    frame = request.subscribe_books(USER, KEY, TOKEN, TICKERS, trades=True)
    body = bytes.fromhex(
        f"12 3c 12 04 {BBCA} 12 04 {TLKM} 2a 04 {BBCA} 2a 04 {TLKM} 32 04 {BBCA} 32 04 {TLKM}"
        f"3a 04 {BBCA} 3a 04 {TLKM} 4a 04 {BBCA} 4a 04 {TLKM}"
    )
    assert frame == CREDS + body + KEY_FIELD + TOKEN_FIELD
    assert len(frame) == 239
    assert request.decode(frame).channel == request.book_channel(TICKERS)
    assert request.subscribe_books(USER, KEY, TOKEN, ("BBCA", "TLKM"), True) == frame


def test_real_sized_token_uses_two_byte_length() -> None:
    token = "x" * 838
    frame = request.auth(USER, KEY, token)
    assert frame[len(CREDS) + len(KEY_FIELD) :][:3] == bytes.fromhex("2a c6 06")
    # silenccy's observed sizes: 922 bytes with four channels of one symbol, 916 with three.
    four = Channel(
        order_book=("BBCA",), running_trade_batch=("BBCA",), liveprice=("BBCA",), iepiev=("BBCA",)
    )
    three = Channel(order_book=("BBCA",), running_trade_batch=("BBCA",), liveprice=("BBCA",))
    assert len(request.encode(Request(USER, four, KEY, None, token))) == 922
    assert len(request.encode(Request(USER, three, KEY, None, token))) == 916


def test_decode_round_trip() -> None:
    original = Request(
        user_id=USER,
        channel=Channel(order_book=TICKERS, running_trade_batch=("*",)),
        key=KEY,
        access_token=TOKEN,
    )
    assert request.decode(request.encode(original)) == original
    assert request.decode(request.PING) == Request(ping="ping")
    assert (
        request.decode(bytes.fromhex("0a07") + USER.encode() + bytes.fromhex("1200")).channel
        == Channel()
    )


def test_repr_hides_credentials() -> None:
    text = repr(request.decode(request.auth(USER, KEY, TOKEN)))
    assert KEY not in text and TOKEN not in text and USER in text


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x0a",
        b"\x0a\x05abc",
        b"\x08",
        b"\x0a\x02\xff\xfe",
        b"\x12\x02\x12\x05",
        b"\x00\x00",
        b"\x0f",
    ],
)
def test_malformed_requests_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        request.decode(data)
