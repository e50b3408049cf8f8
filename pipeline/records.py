"""Stream records: what the ingestor appends to Redis and the writer reads back (pure).

A book entry carries the decoded frame compactly, not expanded rows (ARCHITECTURE.md §4)::

    k=b  c=BBCA  s=B|O  q=<seq>  t=<exchange time>  l=<level text>  r=<received at>  i=<ingestor>

A trade entry (one per print)::

    k=t  c=BBCA  n=<trade number>  p=<price>  v=<shares>  a=<0|1|2>  o=<board>  x=<value>
    t=<trade time>  r=<received at>  i=<ingestor>

A live-price entry (one per LivePrice message, the day's figures so far)::

    k=p  c=BBCA  p=<last>  o=<open>  h=<high>  l=<low>  y=<previous close>  v=<shares>
    x=<turnover>  f=<trade count>  a=<average>  b=<foreign buy>  s=<foreign sell>
    [q=<field 19>]  t=<exchange time (field 11)>  r=<received at>  i=<ingestor>

``v``, ``x`` and ``f`` are cumulative over the day, ``v`` in shares as on the wire; ``q`` is
present only when the message carried field 19. Numbers are written as the wire's doubles
(whole numbers without ``.0``).

Times are already normalised to ISO-8601 in Jakarta time with microseconds
(``2026-03-02T10:15:30.123456+07:00``), so the writer copies them into rows as they are and
takes the file's day from their first ten characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pipeline.days import day_of_stamp
from stockbit.book import split_header
from stockbit.errors import ProtocolError
from stockbit.messages import LivePrice, OrderBook, RunningTrade
from stockbit.timestamps import wib_iso

BOOK = "b"
TRADE = "t"
PRICE = "p"
SIDE_CODES = {"BID": "B", "OFFER": "O"}
SIDE_NAMES = {"B": "BID", "O": "OFFER"}


class RecordError(ValueError):
    """A stream entry that is not a valid record (missing or malformed field)."""


@dataclass(frozen=True, slots=True)
class BookRecord:
    """One side snapshot as stored in a partition stream."""

    code: str
    side: str
    """``BID`` or ``OFFER``."""
    seq: int
    time: str
    levels: str
    """``price;orders;shares|...``, best first."""
    received: str
    source: str

    @property
    def day(self) -> str:
        """The Jakarta trading day (``YYYY-MM-DD``) of the exchange time."""
        return day_of_stamp(self.time)

    def fields(self) -> dict[str, str]:
        """The stream entry fields."""
        return {
            "k": BOOK,
            "c": self.code,
            "s": SIDE_CODES[self.side],
            "q": str(self.seq),
            "t": self.time,
            "l": self.levels,
            "r": self.received,
            "i": self.source,
        }


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """One print as stored in a partition stream."""

    code: str
    trade_number: int
    price: float
    shares: float
    action: int
    board: int
    value: float
    time: str
    received: str
    source: str

    @property
    def day(self) -> str:
        """The Jakarta trading day of the print."""
        return day_of_stamp(self.time)

    def fields(self) -> dict[str, str]:
        """The stream entry fields."""
        return {
            "k": TRADE,
            "c": self.code,
            "n": str(self.trade_number),
            "p": _number(self.price),
            "v": _number(self.shares),
            "a": str(self.action),
            "o": str(self.board),
            "x": _number(self.value),
            "t": self.time,
            "r": self.received,
            "i": self.source,
        }


@dataclass(frozen=True, slots=True)
class PriceRecord:
    """One LivePrice message as stored in a partition stream: the day's figures so far."""

    code: str
    last: float
    open: float
    high: float
    low: float
    previous: float
    shares: float
    """Cumulative volume in shares (lots = shares / 100)."""
    value: float
    """Cumulative turnover in rupiah."""
    frequency: float
    """Cumulative number of trades (a double on the wire)."""
    average: float
    foreign_buy: float
    foreign_sell: float
    sequence: int | None
    """LivePrice field 19 when the message carried it."""
    time: str
    received: str
    source: str

    @property
    def day(self) -> str:
        """The Jakarta trading day of the exchange time (field 11)."""
        return day_of_stamp(self.time)

    def fields(self) -> dict[str, str]:
        """The stream entry fields (``q`` only when the message had field 19)."""
        out = {
            "k": PRICE,
            "c": self.code,
            "p": _number(self.last),
            "o": _number(self.open),
            "h": _number(self.high),
            "l": _number(self.low),
            "y": _number(self.previous),
            "v": _number(self.shares),
            "x": _number(self.value),
            "f": _number(self.frequency),
            "a": _number(self.average),
            "b": _number(self.foreign_buy),
            "s": _number(self.foreign_sell),
        }
        if self.sequence is not None:
            out["q"] = str(self.sequence)
        out["t"] = self.time
        out["r"] = self.received
        out["i"] = self.source
        return out


Record = BookRecord | TradeRecord | PriceRecord


def _number(value: float) -> str:
    # Prices, shares and values are whole numbers in practice; keep them free of ".0".
    return str(int(value)) if value.is_integer() else repr(value)


def from_book(book: OrderBook, received: datetime, source: str) -> BookRecord:
    """Turn a decoded order-book frame into its record; ProtocolError if it cannot be placed."""
    code, side, levels = split_header(book.body)
    if code != book.code:
        raise ProtocolError(f"book code {book.code!r} disagrees with its body's {code!r}")
    if book.time is None:
        raise ProtocolError("book without an exchange time cannot be placed in a day file")
    return BookRecord(
        code=code,
        side=side,
        seq=book.seq,
        time=wib_iso(book.time),
        levels=levels,
        received=wib_iso(received),
        source=source,
    )


def from_trade(trade: RunningTrade, received: datetime, source: str) -> TradeRecord:
    """Turn a decoded print into its record; ProtocolError if it has no time."""
    if trade.time is None:
        raise ProtocolError("trade without a time cannot be placed in a day file")
    return TradeRecord(
        code=trade.code,
        trade_number=trade.trade_number,
        price=trade.price,
        shares=trade.shares,
        action=trade.action,
        board=trade.board,
        value=trade.value,
        time=wib_iso(trade.time),
        received=wib_iso(received),
        source=source,
    )


def from_liveprice(price: LivePrice, received: datetime, source: str) -> PriceRecord:
    """Turn a decoded LivePrice into its record; ProtocolError if it has no exchange time."""
    if price.time is None:
        raise ProtocolError("live price without a date (field 11) cannot be placed in a day file")
    return PriceRecord(
        code=price.code,
        last=price.last,
        open=price.open,
        high=price.high,
        low=price.low,
        previous=price.previous,
        shares=price.shares,
        value=price.value,
        frequency=price.frequency,
        average=price.average,
        foreign_buy=price.foreign_buy,
        foreign_sell=price.foreign_sell,
        sequence=price.sequence,
        time=wib_iso(price.time),
        received=wib_iso(received),
        source=source,
    )


def _get(entry: dict[str, str], name: str) -> str:
    try:
        return entry[name]
    except KeyError:
        raise RecordError(f"stream entry lacks field {name!r}") from None


def parse(entry: dict[str, str]) -> Record:
    """Read a stream entry (decoded to ``str``) back into a record; RecordError if malformed."""
    kind = entry.get("k")
    try:
        if kind == BOOK:
            side = SIDE_NAMES.get(_get(entry, "s"))
            if side is None:
                raise RecordError(f"bad side {entry.get('s')!r}")
            return BookRecord(
                code=_get(entry, "c"),
                side=side,
                seq=int(_get(entry, "q")),
                time=_get(entry, "t"),
                levels=_get(entry, "l"),
                received=_get(entry, "r"),
                source=entry.get("i", ""),
            )
        if kind == TRADE:
            return TradeRecord(
                code=_get(entry, "c"),
                trade_number=int(_get(entry, "n")),
                price=float(_get(entry, "p")),
                shares=float(_get(entry, "v")),
                action=int(_get(entry, "a")),
                board=int(_get(entry, "o")),
                value=float(_get(entry, "x")),
                time=_get(entry, "t"),
                received=_get(entry, "r"),
                source=entry.get("i", ""),
            )
        if kind == PRICE:
            sequence = entry.get("q")
            return PriceRecord(
                code=_get(entry, "c"),
                last=float(_get(entry, "p")),
                open=float(_get(entry, "o")),
                high=float(_get(entry, "h")),
                low=float(_get(entry, "l")),
                previous=float(_get(entry, "y")),
                shares=float(_get(entry, "v")),
                value=float(_get(entry, "x")),
                frequency=float(_get(entry, "f")),
                average=float(_get(entry, "a")),
                foreign_buy=float(_get(entry, "b")),
                foreign_sell=float(_get(entry, "s")),
                sequence=int(sequence) if sequence else None,
                time=_get(entry, "t"),
                received=_get(entry, "r"),
                source=entry.get("i", ""),
            )
    except ValueError as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError(f"bad number in stream entry: {exc}") from None
    raise RecordError(f"unknown record kind {kind!r}")


@dataclass(frozen=True, slots=True)
class GapRecord:
    """A time span during which some tickers were (possibly) not captured, and why."""

    start: str
    end: str
    cause: str
    """``disconnect``, ``auth_failed``, ``overflow``, ``ticker_moved``, ``stall``, ..."""
    tickers: tuple[str, ...]
    ingestor: str
    detail: str = ""

    @property
    def day(self) -> str:
        """The Jakarta day the gap started on."""
        return day_of_stamp(self.start)

    def fields(self) -> dict[str, str]:
        """The gap stream entry fields."""
        return {
            "start": self.start,
            "end": self.end,
            "cause": self.cause,
            "tickers": ",".join(self.tickers),
            "ingestor": self.ingestor,
            "detail": self.detail,
        }

    @classmethod
    def parse(cls, entry: dict[str, str]) -> GapRecord:
        """Read a gap stream entry back."""
        try:
            tickers = entry["tickers"]
            return cls(
                start=entry["start"],
                end=entry["end"],
                cause=entry["cause"],
                tickers=tuple(t for t in tickers.split(",") if t),
                ingestor=entry["ingestor"],
                detail=entry.get("detail", ""),
            )
        except KeyError as exc:
            raise RecordError(f"gap entry lacks field {exc.args[0]!r}") from None
