"""Server-frame bytes: market values → protobuf payloads → websocket frames.

Normal mode encodes through :mod:`stockbit.wrapper`. Max-rate mode cannot afford that per frame
(the target is ~100 000 book frames/s from one Python process), so :class:`BookPress` prebuilds
the code-and-body part of each frame once per ladder variant and splices only the seq and the
two time strings; its output is byte-identical to :func:`stockbit.wrapper.encode_orderbook`
(a test holds it to that).
"""

from __future__ import annotations

import random

from simulator.market import BookSnapshot, Indicative, LiveFigures, Market, Quote, Tape
from stockbit import wire
from stockbit.messages import LivePrice, OrderBook, RunningTrade
from stockbit.wrapper import (
    F_ORDERBOOK,
    encode_best_bid_offer,
    encode_iepiev,
    encode_liveprice,
    encode_orderbook,
    encode_trade_batch,
)

_BINARY_FIN = 0x82
"""First byte of an unfragmented binary websocket frame (FIN + opcode 2)."""

_BOOK_TAG = wire.tag(F_ORDERBOOK, wire.LEN)
_SEQ_TAG = wire.tag(3, wire.VARINT)
_BOOK_ID_TAG = wire.tag(4, wire.VARINT)
_TIME_TAG = wire.tag(5, wire.LEN)
_BOARD_RG = wire.varint_field(8, 1)
_ITCH_TAG = wire.tag(9, wire.LEN)


def websocket_header(length: int) -> bytes:
    """The header of an unmasked (server → client) binary websocket frame of ``length`` bytes.

    The server writes frames straight to the transport in max-rate mode, so it frames them
    itself (RFC 6455 §5.2; no extensions are negotiated, so no RSV bits).
    """
    if length < 126:
        return bytes((_BINARY_FIN, length))
    if length < 65_536:
        return bytes((_BINARY_FIN, 126)) + length.to_bytes(2, "big")
    return bytes((_BINARY_FIN, 127)) + length.to_bytes(8, "big")


def encode_book(snapshot: BookSnapshot) -> bytes:
    """Wrapper field 10 for one side snapshot, with the snapshot's exact time strings."""
    book = OrderBook(
        code=snapshot.code,
        body=snapshot.body,
        seq=snapshot.seq,
        book_id=snapshot.book_id,
        time=None,
        board=snapshot.board,
    )
    return encode_orderbook(book, time_text=snapshot.time, itch_text=snapshot.itch_time)


def encode_tape(tape: Tape) -> bytes:
    """Wrapper field 8 (running-trade batch) for a batch of prints."""
    return encode_trade_batch(
        RunningTrade(
            time=p.time,
            code=p.code,
            price=float(p.price),
            shares=float(p.shares),
            action=p.action,
            trade_number=p.trade_number,
            board=p.board,
            value=float(p.value),
        )
        for p in tape.prints
    )


def encode_live(figures: LiveFigures) -> bytes:
    """Wrapper field 9 (LivePrice) with the figures' exact field-11 time string.

    Field 19 (``sequence_number``) is left out: no capture shows the real feed setting it, so
    the pipeline must identify a LivePrice without it (by time, trade count and volume).
    """
    price = LivePrice(
        code=figures.code,
        last=float(figures.last),
        shares=float(figures.shares),
        high=float(figures.high),
        low=float(figures.low),
        open=float(figures.open),
        frequency=float(figures.frequency),
        previous=float(figures.previous),
        value=float(figures.value),
        average=figures.average,
        foreign_buy=float(figures.foreign_buy),
        foreign_sell=float(figures.foreign_sell),
    )
    return encode_liveprice(price, time_text=figures.time)


def encode_indicative(indicative: Indicative) -> bytes:
    """Wrapper field 11 (IEP/IEV): field 1 = code only, the message's other fields being
    unattested (no source gives them)."""
    return encode_iepiev(indicative.code)


def encode_quote(quote: Quote) -> bytes:
    """Wrapper field 13 (best bid/offer): field 1 = code only, as :func:`encode_indicative`."""
    return encode_best_bid_offer(quote.code)


def garbage(rng: random.Random) -> bytes:
    """Bytes that look like an order-book frame but fail :func:`stockbit.wrapper.decode`.

    The wrapper claims a 1 000-byte payload and carries 24: a length past the end, which the
    decoder must reject with ``ProtocolError``.
    """
    return _BOOK_TAG + wire.varint(1_000) + rng.randbytes(24)


class BookPress:
    """Max-rate book frames: prebuilt ``code``+``body`` heads, spliced with seq and times."""

    def __init__(self, market: Market, variants: int = 16) -> None:
        self._market = market
        self._variants = variants
        self._heads: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
        self._turns: dict[tuple[str, str], int] = {}

    def press(self, code: str, side: str) -> tuple[bytes, BookSnapshot]:
        """The next frame payload of (code, side) and the snapshot it carries."""
        key = (code, side)
        heads = self._heads.get(key)
        if heads is None:
            heads = [
                (body, wire.str_field(1, code) + wire.str_field(2, body))
                for body in self._market.bodies(code, side, self._variants)
            ]
            self._heads[key] = heads
        # Cycling through the variants (not pure repetition) keeps consecutive frames of one
        # side different in their levels as well as in seq and time.
        turn = self._turns.get(key, 0) + 1
        self._turns[key] = turn
        body, head = heads[turn % len(heads)]
        snapshot = self._market.stamp(code, side, body)
        time = snapshot.time.encode()
        itch = snapshot.itch_time.encode()
        # Time strings are ~35 bytes, so their length prefix is a single byte.
        inner = b"".join(
            (
                head,
                _SEQ_TAG,
                wire.varint(snapshot.seq),
                _BOOK_ID_TAG,
                wire.varint(snapshot.book_id),
                _TIME_TAG,
                bytes((len(time),)),
                time,
                _BOARD_RG,
                _ITCH_TAG,
                bytes((len(itch),)),
                itch,
            )
        )
        return _BOOK_TAG + wire.varint(len(inner)) + inner, snapshot
