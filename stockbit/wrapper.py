"""Server frames: ``WebsocketWrapMessageChannel`` decode (the ingestor) and encode (the simulator).

A frame is one protobuf message whose single set field says what it carries: 2 pong,
7 error, 8 running-trade batch, 9 live price, 10 order book, 1 a single print, 11 IEP/IEV,
13 best bid/offer. Other fields decode to :class:`~stockbit.messages.Unknown`; unknown
sub-fields are skipped. For 11 and 13 no source gives the message's fields: only field 1 is
read, as the code (the position every other message of the feed gives it), and a field 1 that
is not a string leaves the code empty rather than failing the frame.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from datetime import datetime

from stockbit import wire
from stockbit.errors import ProtocolError
from stockbit.messages import (
    BestBidOffer,
    ErrorFrame,
    IepIev,
    LivePrice,
    OrderBook,
    Pong,
    RunningTrade,
    ServerFrame,
    TradeBatch,
    Unknown,
)
from stockbit.timestamps import from_epoch, parse_iso, to_epoch, wib_iso

F_TRADE = 1
F_PONG = 2
F_ERROR = 7
F_TRADE_BATCH = 8
F_LIVEPRICE = 9
F_ORDERBOOK = 10
F_IEPIEV = 11
F_BEST_BID_OFFER = 13

PONG = bytes.fromhex("12060a04706f6e67")


def decode(data: bytes) -> ServerFrame:
    """Decode one server frame; raise :class:`ProtocolError` for anything malformed."""
    buf = bytes(data)
    try:
        return _decode(buf)
    except ProtocolError:
        raise
    except (IndexError, ValueError, struct.error, OverflowError):
        raise ProtocolError("truncated or malformed server frame") from None


def _decode(buf: bytes) -> ServerFrame:
    end = len(buf)
    if end == 0:
        raise ProtocolError("empty server frame")
    key, pos = wire.read_varint(buf, 0)
    number, wire_type = key >> 3, key & 7
    if number == 0:
        raise ProtocolError("field number 0")
    if wire_type != wire.LEN:
        wire.skip(buf, pos, end, wire_type)
        return Unknown(number)
    lo, hi = wire.read_length(buf, pos, end)
    if hi != end:
        # A wrapper carries exactly one message; trailing bytes mean a framing error.
        raise ProtocolError(f"{end - hi} trailing bytes after wrapper field {number}")
    if number == F_ORDERBOOK:
        return _orderbook(buf, lo, hi)
    if number == F_TRADE_BATCH:
        return _trade_batch(buf, lo, hi)
    if number == F_TRADE:
        return _trade(buf, lo, hi)
    if number == F_LIVEPRICE:
        return _liveprice(buf, lo, hi)
    if number == F_ERROR:
        return _error(buf, lo, hi)
    if number == F_IEPIEV:
        return IepIev(_code_only(buf, lo, hi))
    if number == F_BEST_BID_OFFER:
        return BestBidOffer(_code_only(buf, lo, hi))
    if number == F_PONG:
        return _pong(buf, lo, hi)
    return Unknown(number)


def _orderbook(buf: bytes, pos: int, end: int) -> OrderBook:
    # The hot path: walked inline rather than through wire.fields for speed.
    read_varint = wire.read_varint
    code = body = ""
    time_text = itch_text = None
    seq = book_id = board = 0
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(buf, pos)
        number = key >> 3
        wire_type = key & 7
        if wire_type == wire.LEN:
            length = buf[pos]
            if length < 0x80:
                pos += 1
            else:
                length, pos = read_varint(buf, pos)
            stop = pos + length
            if stop > end:
                raise ProtocolError("order-book field runs past the end of the message")
            if number == 2:
                body = buf[pos:stop].decode()
            elif number == 1:
                code = buf[pos:stop].decode()
            elif number == 5:
                time_text = buf[pos:stop].decode()
            elif number == 9:
                itch_text = buf[pos:stop].decode()
            pos = stop
        elif wire_type == wire.VARINT:
            value, pos = read_varint(buf, pos)
            if number == 3:
                seq = value
            elif number == 4:
                book_id = value
            elif number == 8:
                board = value
        elif number == 0:
            raise ProtocolError("field number 0")
        else:
            pos = wire.skip(buf, pos, end, wire_type)
    if not code or not body:
        raise ProtocolError("order book without code or body")
    return OrderBook(
        code=code,
        body=body,
        seq=seq,
        book_id=book_id,
        time=parse_iso(time_text) if time_text else None,
        board=board,
        itch_time=parse_iso(itch_text) if itch_text else None,
    )


def _timestamp(buf: bytes, start: int, end: int) -> datetime:
    seconds = nanos = 0
    for number, wire_type, pos in wire.fields(buf, start, end):
        if number in (1, 2):
            wire.expect(wire_type, wire.VARINT, "Timestamp field")
            value = wire.read_varint(buf, pos)[0]
            if value >= 1 << 63:
                value -= 1 << 64
            if number == 1:
                seconds = value
            else:
                nanos = value
    return from_epoch(seconds, nanos)


def _trade(buf: bytes, start: int, end: int) -> RunningTrade:
    time: datetime | None = None
    code = ""
    price = shares = value = 0.0
    action = trade_number = board = 0
    for number, wire_type, pos in wire.fields(buf, start, end):
        if number == 1:
            wire.expect(wire_type, wire.LEN, "trade time")
            time = _timestamp(buf, *wire.read_length(buf, pos, end))
        elif number == 2:
            wire.expect(wire_type, wire.LEN, "trade code")
            code = wire.text(buf, *wire.read_length(buf, pos, end))
        elif number in (3, 4, 11):
            wire.expect(wire_type, wire.FIXED64, f"trade field {number}")
            number_value = wire.read_double(buf, pos, end)
            if number == 3:
                price = number_value
            elif number == 4:
                shares = number_value
            else:
                value = number_value
        elif number in (5, 9, 10):
            wire.expect(wire_type, wire.VARINT, f"trade field {number}")
            int_value = wire.read_varint(buf, pos)[0]
            if number == 5:
                action = int_value
            elif number == 9:
                trade_number = int_value
            else:
                board = int_value
    if not code:
        raise ProtocolError("trade without a stock code")
    return RunningTrade(time, code, price, shares, action, trade_number, board, value)


def _trade_batch(buf: bytes, start: int, end: int) -> TradeBatch:
    trades = []
    for number, wire_type, pos in wire.fields(buf, start, end):
        if number == 1:
            wire.expect(wire_type, wire.LEN, "batch entry")
            trades.append(_trade(buf, *wire.read_length(buf, pos, end)))
    return TradeBatch(tuple(trades))


_LIVEPRICE_DOUBLES = {
    2: "last",
    3: "shares",
    4: "high",
    5: "low",
    6: "open",
    7: "frequency",
    8: "foreign_buy",
    9: "foreign_sell",
    10: "average",
    13: "previous",
    14: "value",
}
_LIVEPRICE_SEQUENCE = 19
"""``sequence_number``, int64 in the two descriptor-derived field lists (rfkih, axiom-feed)."""


def _liveprice(buf: bytes, start: int, end: int) -> LivePrice:
    code = ""
    doubles: dict[str, float] = {}
    time: datetime | None = None
    sequence: int | None = None
    for number, wire_type, pos in wire.fields(buf, start, end):
        if number == 1:
            wire.expect(wire_type, wire.LEN, "liveprice code")
            code = wire.text(buf, *wire.read_length(buf, pos, end))
        elif number in _LIVEPRICE_DOUBLES:
            wire.expect(wire_type, wire.FIXED64, f"liveprice field {number}")
            doubles[_LIVEPRICE_DOUBLES[number]] = wire.read_double(buf, pos, end)
        elif number == 11:
            wire.expect(wire_type, wire.LEN, "liveprice date")
            time = parse_iso(wire.text(buf, *wire.read_length(buf, pos, end)))
        elif number == _LIVEPRICE_SEQUENCE:
            wire.expect(wire_type, wire.VARINT, "liveprice sequence")
            sequence = wire.read_varint(buf, pos)[0]
            if sequence >= 1 << 63:
                sequence -= 1 << 64  # int64, two's complement
    if not code:
        raise ProtocolError("live price without a stock code")
    return LivePrice(code=code, time=time, sequence=sequence, **doubles)


def _code_only(buf: bytes, start: int, end: int) -> str:
    # The layout of these messages is unknown: a field 1 that is not valid text is not an
    # error (the frame is only counted), but bytes that do not parse as protobuf still are.
    code = ""
    for number, wire_type, pos in wire.fields(buf, start, end):
        if number == 1 and wire_type == wire.LEN and not code:
            lo, hi = wire.read_length(buf, pos, end)
            try:
                code = buf[lo:hi].decode()
            except UnicodeDecodeError:
                code = ""
    return code


def _error(buf: bytes, start: int, end: int) -> ErrorFrame:
    code = 0
    message = ""
    for number, wire_type, pos in wire.fields(buf, start, end):
        if number == 1:
            wire.expect(wire_type, wire.VARINT, "error code")
            code = wire.read_varint(buf, pos)[0]
        elif number == 2:
            wire.expect(wire_type, wire.LEN, "error message")
            message = wire.text(buf, *wire.read_length(buf, pos, end))
    return ErrorFrame(code, message)


def _pong(buf: bytes, start: int, end: int) -> Pong:
    message = ""
    for number, wire_type, pos in wire.fields(buf, start, end):
        if number == 1:
            wire.expect(wire_type, wire.LEN, "pong message")
            message = wire.text(buf, *wire.read_length(buf, pos, end))
    return Pong(message)


# ---- encoders (the simulator's side) -------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else wib_iso(moment)


def encode_orderbook(
    book: OrderBook, time_text: str | None = None, itch_text: str | None = None
) -> bytes:
    """Encode wrapper field 10.

    ``time_text`` and ``itch_text`` give the exact strings to send (e.g. with nanoseconds);
    otherwise the datetimes are formatted in WIB with microseconds.
    """
    out = bytearray()
    out += wire.str_field(1, book.code)
    out += wire.str_field(2, book.body)
    out += wire.varint_field(3, book.seq)
    out += wire.varint_field(4, book.book_id)
    stamp = time_text if time_text is not None else _iso(book.time)
    if stamp is not None:
        out += wire.str_field(5, stamp)
    if book.board:
        out += wire.varint_field(8, book.board)
    itch = itch_text if itch_text is not None else _iso(book.itch_time)
    if itch is not None:
        out += wire.str_field(9, itch)
    return wire.len_field(F_ORDERBOOK, bytes(out))


def _encode_timestamp(moment: datetime) -> bytes:
    seconds, nanos = to_epoch(moment)
    return wire.varint_field(1, seconds) + (wire.varint_field(2, nanos) if nanos else b"")


def encode_trade(trade: RunningTrade) -> bytes:
    """Encode one ``RunningTrade`` message body."""
    out = bytearray()
    if trade.time is not None:
        out += wire.len_field(1, _encode_timestamp(trade.time))
    out += wire.str_field(2, trade.code)
    out += wire.double_field(3, trade.price)
    out += wire.double_field(4, trade.shares)
    if trade.action:
        out += wire.varint_field(5, trade.action)
    out += wire.varint_field(9, trade.trade_number)
    if trade.board:
        out += wire.varint_field(10, trade.board)
    out += wire.double_field(11, trade.value)
    return bytes(out)


def encode_trade_batch(trades: Iterable[RunningTrade]) -> bytes:
    """Encode wrapper field 8."""
    body = b"".join(wire.len_field(1, encode_trade(t)) for t in trades)
    return wire.len_field(F_TRADE_BATCH, body)


def encode_liveprice(price: LivePrice, time_text: str | None = None) -> bytes:
    """Encode wrapper field 9 (the fields :class:`LivePrice` carries), in field order.

    ``time_text`` gives the exact field-11 string to send; otherwise ``time`` is formatted
    in WIB with microseconds. Field 19 is written only when ``sequence`` is set.
    """
    out = bytearray(wire.str_field(1, price.code))
    stamp = time_text if time_text is not None else _iso(price.time)
    for number, attr in sorted(_LIVEPRICE_DOUBLES.items()):
        if number == 13 and stamp is not None:
            out += wire.str_field(11, stamp)  # field 11 sits between 10 and 13
        out += wire.double_field(number, getattr(price, attr))
    if price.sequence is not None:
        out += wire.varint_field(_LIVEPRICE_SEQUENCE, price.sequence)
    return wire.len_field(F_LIVEPRICE, bytes(out))


def encode_iepiev(code: str) -> bytes:
    """Encode wrapper field 11 with field 1 = code and nothing else (the rest is unattested)."""
    return wire.len_field(F_IEPIEV, wire.str_field(1, code))


def encode_best_bid_offer(code: str) -> bytes:
    """Encode wrapper field 13 with field 1 = code and nothing else (the rest is unattested)."""
    return wire.len_field(F_BEST_BID_OFFER, wire.str_field(1, code))


def encode_error(code: int, message: str) -> bytes:
    """Encode wrapper field 7."""
    return wire.len_field(F_ERROR, wire.varint_field(1, code) + wire.str_field(2, message))


def encode_pong(message: str = "pong") -> bytes:
    """Encode wrapper field 2."""
    return wire.len_field(F_PONG, wire.str_field(1, message))
