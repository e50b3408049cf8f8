"""Client frames: ``WebsocketRequest`` encode (the ingestor) and decode (the simulator).

Fields are written in ascending number order with each channel's repeated entries grouped,
as the web app's protobuf-es encoder does, so frames are byte-identical to browser captures.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from stockbit import wire
from stockbit.errors import ProtocolError
from stockbit.messages import CHANNEL_FIELDS, Channel, Request

PING = bytes.fromhex("22060a0470696e67")
"""The application-level ping every client sends: ``ping{message: "ping"}``."""

_CHANNEL_ATTR = dict(CHANNEL_FIELDS)


def encode_channel(channel: Channel) -> bytes:
    """Encode a ``WebsocketChannel`` message body."""
    out = bytearray()
    for number, attr in CHANNEL_FIELDS:
        for code in getattr(channel, attr):
            out += wire.str_field(number, code)
    return bytes(out)


def encode(request: Request) -> bytes:
    """Encode a ``WebsocketRequest``."""
    out = bytearray()
    if request.user_id is not None:
        out += wire.str_field(1, request.user_id)
    if request.channel is not None:
        out += wire.len_field(2, encode_channel(request.channel))
    if request.key is not None:
        out += wire.str_field(3, request.key)
    if request.ping is not None:
        out += wire.len_field(4, wire.str_field(1, request.ping))
    if request.access_token is not None:
        out += wire.str_field(5, request.access_token)
    return bytes(out)


def auth(user_id: str, key: str, token: str) -> bytes:
    """The auth frame: credentials and no channel."""
    return encode(Request(user_id=user_id, key=key, access_token=token))


def subscribe(
    user_id: str,
    key: str,
    token: str,
    order_book: Iterable[str] = (),
    running_trade_batch: Iterable[str] = (),
    *,
    liveprice: Iterable[str] = (),
    iepiev: Iterable[str] = (),
    best_bid_offer: Iterable[str] = (),
) -> bytes:
    """A subscribe frame carrying the complete desired set (empty lists clear it).

    A client that wants order books should use :func:`subscribe_books`: ``order_book``
    alone is believed to stream nothing from the real server (stockbit-protocol.md §2.4).
    """
    channel = Channel(
        order_book=tuple(order_book),
        running_trade_batch=tuple(running_trade_batch),
        liveprice=tuple(liveprice),
        iepiev=tuple(iepiev),
        best_bid_offer=tuple(best_bid_offer),
    )
    return encode(Request(user_id=user_id, channel=channel, key=key, access_token=token))


def book_channel(codes: Iterable[str], trades: bool = True) -> Channel:
    """The browser's subscription for the books of ``codes`` (+ their tape when ``trades``).

    ``order_book`` (2) with its three companions ``liveprice`` (6), ``iepiev`` (7) and
    ``best_bid_offer`` (9) for every code — variant A of stockbit-protocol.md §2.2, what the
    stock page sends — plus ``running_trade_batch`` (5) when ``trades``. One source states,
    "verified upstream", that the book only streams while the three companions ride along on
    the same connection (§2.4), so a book client never sends 2 alone.
    """
    wanted = tuple(codes)
    return Channel(
        order_book=wanted,
        running_trade_batch=wanted if trades else (),
        liveprice=wanted,
        iepiev=wanted,
        best_bid_offer=wanted,
    )


def subscribe_books(
    user_id: str, key: str, token: str, codes: Iterable[str], trades: bool = True
) -> bytes:
    """The subscribe frame of :func:`book_channel` (fields ascending, each channel grouped)."""
    channel = book_channel(codes, trades)
    return encode(Request(user_id=user_id, channel=channel, key=key, access_token=token))


def _decode_channel(buf: bytes, start: int, end: int) -> Channel:
    lists: dict[str, list[str]] = {}
    for number, wire_type, pos in wire.fields(buf, start, end):
        attr = _CHANNEL_ATTR.get(number)
        if attr is None:
            continue
        wire.expect(wire_type, wire.LEN, f"channel field {number}")
        lo, hi = wire.read_length(buf, pos, end)
        lists.setdefault(attr, []).append(wire.text(buf, lo, hi))
    return Channel(**{attr: tuple(codes) for attr, codes in lists.items()})


def decode(data: bytes) -> Request:
    """Decode a ``WebsocketRequest``; raise :class:`ProtocolError` for anything malformed."""
    try:
        return _decode(bytes(data))
    except ProtocolError:
        raise
    except (IndexError, ValueError, struct.error):
        raise ProtocolError("truncated or malformed request frame") from None


def _decode(buf: bytes) -> Request:
    end = len(buf)
    if end == 0:
        raise ProtocolError("empty request frame")
    strings: dict[int, str] = {}
    channel: Channel | None = None
    ping: str | None = None
    for number, wire_type, pos in wire.fields(buf, 0, end):
        if number in (1, 3, 5):
            wire.expect(wire_type, wire.LEN, f"request field {number}")
            lo, hi = wire.read_length(buf, pos, end)
            strings[number] = wire.text(buf, lo, hi)
        elif number == 2:
            wire.expect(wire_type, wire.LEN, "channel")
            lo, hi = wire.read_length(buf, pos, end)
            channel = _decode_channel(buf, lo, hi)
        elif number == 4:
            wire.expect(wire_type, wire.LEN, "ping")
            lo, hi = wire.read_length(buf, pos, end)
            ping = ""
            for sub, sub_type, sub_pos in wire.fields(buf, lo, hi):
                if sub == 1:
                    wire.expect(sub_type, wire.LEN, "ping message")
                    a, b = wire.read_length(buf, sub_pos, hi)
                    ping = wire.text(buf, a, b)
    return Request(
        user_id=strings.get(1),
        channel=channel,
        key=strings.get(3),
        ping=ping,
        access_token=strings.get(5),
    )
