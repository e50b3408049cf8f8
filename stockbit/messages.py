"""Typed values for the Stockbit frames (both directions).

Field numbers follow ``securities.transactional.datafeed.v1`` as reconstructed in
``stockbit/datafeed.proto``. Quantities are kept in **shares**, as on the wire; lots are
derived (1 lot = 100 shares) by whoever formats them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

LOT = 100
"""Shares per lot on IDX since 6 January 2014."""


@dataclass(frozen=True, slots=True)
class Channel:
    """``WebsocketChannel``: which tickers to stream on which channel.

    A request carrying a channel replaces the socket's whole subscription; an empty channel
    (all tuples empty) clears it.
    """

    watchlist: tuple[str, ...] = ()
    order_book: tuple[str, ...] = ()
    running_trade: tuple[str, ...] = ()
    running_trade_batch: tuple[str, ...] = ()
    liveprice: tuple[str, ...] = ()
    iepiev: tuple[str, ...] = ()
    intraday: tuple[str, ...] = ()
    best_bid_offer: tuple[str, ...] = ()


CHANNEL_FIELDS: tuple[tuple[int, str], ...] = (
    (1, "watchlist"),
    (2, "order_book"),
    (3, "running_trade"),
    (5, "running_trade_batch"),
    (6, "liveprice"),
    (7, "iepiev"),
    (8, "intraday"),
    (9, "best_bid_offer"),
)
"""(field number, attribute) of the repeated-string channels, in wire order."""


@dataclass(frozen=True, slots=True)
class Request:
    """``WebsocketRequest``, the only client→server message.

    An auth frame carries ``user_id``, ``key`` and ``access_token``; a subscribe frame adds
    ``channel``; a ping frame carries only ``ping``.
    """

    user_id: str | None = None
    channel: Channel | None = None
    key: str | None = None
    ping: str | None = None
    access_token: str | None = None

    def __repr__(self) -> str:
        # The key and token are credentials: never let a log line or traceback show them.
        hidden = "<hidden>"
        return (
            f"Request(user_id={self.user_id!r}, channel={self.channel!r}, "
            f"key={hidden if self.key else None}, ping={self.ping!r}, "
            f"access_token={hidden if self.access_token else None})"
        )


@dataclass(frozen=True, slots=True)
class OrderBook:
    """Wrapper field 10: one side of one ticker's book, as a full snapshot.

    ``body`` is kept as the raw text (``#O|CODE|SIDE|price;orders;shares|...``); split it with
    :func:`stockbit.book.parse_body` only where rows are needed.
    """

    code: str
    body: str
    seq: int
    book_id: int
    time: datetime | None
    board: int = 0
    itch_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class RunningTrade:
    """One print of the running-trade tape (shares, rupiah, aggressor side)."""

    time: datetime | None
    code: str
    price: float
    shares: float
    action: int = 0
    """1 = buyer-initiated, 2 = seller-initiated, 0 = none (auctions, negotiated trades)."""
    trade_number: int = 0
    board: int = 0
    """1 = RG (regular), 2 = TN (cash), 3 = NG (negotiated)."""
    value: float = 0.0


@dataclass(frozen=True, slots=True)
class TradeBatch:
    """Wrapper field 8: a batch of prints (usually 1–3, about 40 on reconnect backfill)."""

    trades: tuple[RunningTrade, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class LivePrice:
    """Wrapper field 9: session statistics of one ticker (the fields this project reads).

    Cumulative over the trading day: ``shares`` (field 3, shares, not lots), ``frequency``
    (field 7, the trade count, a double on the wire), ``value`` (field 14, turnover in
    rupiah). ``time`` is field 11, the exchange time of the update. ``sequence`` is field 19,
    known from the web bundle's descriptor only (no capture shows it set): None when absent.
    """

    code: str
    last: float = 0.0
    shares: float = 0.0
    high: float = 0.0
    low: float = 0.0
    open: float = 0.0
    frequency: float = 0.0
    previous: float = 0.0
    value: float = 0.0
    time: datetime | None = None
    average: float = 0.0
    """Field 10, the exchange's average price (VWAP) of the day."""
    foreign_buy: float = 0.0
    """Field 8, as the wire gives it; its unit is not attested (believed shares)."""
    foreign_sell: float = 0.0
    """Field 9, as :attr:`foreign_buy`."""
    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class IepIev:
    """Wrapper field 11: indicative equilibrium price and volume (auctions only).

    Only the code is decoded, from field 1 by analogy with the other messages: no source
    gives this message's fields, so the rest is unattested and ignored. ``code`` is empty
    when field 1 is not a string.
    """

    code: str = ""


@dataclass(frozen=True, slots=True)
class BestBidOffer:
    """Wrapper field 13: the best bid and offer of one ticker.

    As :class:`IepIev`: field 1 is assumed to be the code (unattested); nothing else is
    decoded.
    """

    code: str = ""


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """Wrapper field 7: the server refusing something (401 = not authorized)."""

    code: int
    message: str


UNAUTHORIZED = 401
BAD_REQUEST = 400


@dataclass(frozen=True, slots=True)
class Pong:
    """Wrapper field 2: the answer to an application-level ping."""

    message: str = "pong"


@dataclass(frozen=True, slots=True)
class Unknown:
    """A wrapper field this codec does not decode (watchlist, intraday, v3 messages, ...)."""

    field_number: int


ServerFrame = (
    OrderBook
    | TradeBatch
    | RunningTrade
    | LivePrice
    | IepIev
    | BestBidOffer
    | ErrorFrame
    | Pong
    | Unknown
)
