"""Stream entries → what to append where (pure): the day file, the dedup key, the CSV text.

Entries arrive as raw ``[name, value, name, value, ...]`` byte lists (the writer reads
undecoded replies, which is much cheaper than redis-py's per-entry dicts). A book entry in the
layout :class:`pipeline.records.BookRecord` writes is taken apart positionally; anything else
(trades, other field orders) goes through :func:`pipeline.records.parse`, the one definition
of the entry format. Whatever cannot become rows raises :class:`EntryError` for the
dead-letter stream.

File layout under ``DATA_DIR`` (the day always from the record's Jakarta time, never the
machine's clock)::

    orderbook/YYYY-MM-DD_CODE.csv   trades/YYYY-MM-DD_CODE.csv   gaps/YYYY-MM-DD.csv
"""

from __future__ import annotations

from typing import NamedTuple

from pipeline.records import (
    BOOK,
    SIDE_NAMES,
    BookRecord,
    GapRecord,
    RecordError,
    TradeRecord,
    parse,
)
from pipeline.ticker import TickerError, normalize
from writer.rows import (
    BOOK_HEADER,
    GAP_HEADER,
    TRADE_HEADER,
    RowError,
    book_rows,
    gap_row,
    normalise_time,
    trade_row,
)

ORDERBOOK = "orderbook"
TRADES = "trades"
GAPS = "gaps"
HEADERS = {ORDERBOOK: BOOK_HEADER, TRADES: TRADE_HEADER, GAPS: GAP_HEADER}
"""Folder under DATA_DIR → the header line its files start with."""

DedupKey = tuple[str, str, str] | str | None
"""Book: (side, seq, time); trade: the trade number; gap: None (never deduplicated)."""


class EntryError(ValueError):
    """A stream entry that cannot be written (it goes to the dead-letter stream)."""


class Rendered(NamedTuple):
    """One entry's contribution to one file."""

    path: str
    """Relative to DATA_DIR, e.g. ``orderbook/2026-03-02_BBCA.csv``."""
    key: DedupKey
    text: str
    rows: int


def book_path(day: str, code: str) -> str:
    """``orderbook/YYYY-MM-DD_CODE.csv``."""
    return f"{ORDERBOOK}/{day}_{code}.csv"


def trade_path(day: str, code: str) -> str:
    """``trades/YYYY-MM-DD_CODE.csv``."""
    return f"{TRADES}/{day}_{code}.csv"


def gap_path(day: str) -> str:
    """``gaps/YYYY-MM-DD.csv``."""
    return f"{GAPS}/{day}.csv"


def folder_of(path: str) -> str:
    """The folder (kind) of a relative path."""
    return path.split("/", 1)[0]


_BOOK_NAMES = [
    name.encode() for name in BookRecord("X", "BID", 0, "", "", "", "").fields()
]  # the layout records.py writes: k c s q t l r i
_SIDES = {code.encode(): name for code, name in SIDE_NAMES.items()}
_BOOK_KIND = BOOK.encode()
_codes: set[str] = set()  # codes already validated (a path component: must be a ticker)


def _code(text: str) -> str:
    if text in _codes:
        return text
    try:
        if normalize(text) != text:
            raise EntryError(f"ticker {text[:20]!r} is not in canonical form")
    except TickerError as exc:
        raise EntryError(str(exc)) from None
    if len(_codes) < 100_000:
        _codes.add(text)
    return text


def render(fields: list[bytes]) -> Rendered:
    """One partition-stream entry → its rows; EntryError if it cannot be written."""
    try:
        if fields[0::2] == _BOOK_NAMES and fields[1] == _BOOK_KIND:
            # Fast path: the layout BookRecord.fields() writes, taken apart positionally.
            code_b, side_b, seq_b, time_b, levels_b, received_b = fields[3:15:2]
            side = _SIDES.get(side_b)
            if side is None or not seq_b.isdigit():
                raise EntryError(f"bad side {side_b[:8]!r} or seq {seq_b[:20]!r}")
            return _book(
                code=_code(code_b.decode()),
                side=side,
                seq=str(int(seq_b)),
                time=time_b.decode(),
                levels=levels_b.decode(),
                received=received_b.decode(),
            )
        record = parse(_decoded(fields))
        if isinstance(record, BookRecord):
            return _book(
                code=_code(record.code),
                side=record.side,
                seq=str(record.seq),
                time=record.time,
                levels=record.levels,
                received=record.received,
            )
        return _trade(record)
    except (RecordError, RowError, UnicodeDecodeError, IndexError) as exc:
        raise EntryError(str(exc)) from None


def _book(*, code: str, side: str, seq: str, time: str, levels: str, received: str) -> Rendered:
    time = normalise_time(time)
    text, rows = book_rows(time, side, seq, normalise_time(received), levels)
    return Rendered(book_path(time[:10], code), (side, seq, time), text, rows)


def _decoded(fields: list[bytes]) -> dict[str, str]:
    return {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)}


def _trade(record: TradeRecord) -> Rendered:
    if record.trade_number < 0:
        raise EntryError(f"negative trade number {record.trade_number}")
    time = normalise_time(record.time)
    text = trade_row(
        time=time,
        price=_number(record.price),
        shares=_number(record.shares),
        action=record.action,
        trade_number=record.trade_number,
        board=record.board,
        received=normalise_time(record.received),
    )
    return Rendered(trade_path(time[:10], _code(record.code)), str(record.trade_number), text, 1)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def render_gap(fields: list[bytes]) -> Rendered:
    """One gap-stream entry → its row in ``gaps/YYYY-MM-DD.csv``; EntryError if malformed."""
    try:
        gap = GapRecord.parse(_decoded(fields))
        row = gap_row(gap)
    except (RecordError, RowError, UnicodeDecodeError, IndexError) as exc:
        raise EntryError(str(exc)) from None
    return Rendered(gap_path(row[:10]), None, row, 1)
