"""The file schema, pure: which day file an entry goes to, its CSV rows, and the duplicate rule.

The writer, the end-of-day jobs and ``obpipe replay`` all render entries through this module, so
the same entries always give the same bytes. The row text itself is built by
:mod:`pipeline.rows` (the hot path); paths come from :mod:`pipeline.layout`; the day of a row is
always its record's Jakarta exchange time, never the machine's clock.

Entries arrive as raw ``[name, value, name, value, ...]`` byte lists (the writer reads
undecoded replies, which is much cheaper than redis-py's per-entry dicts). An entry in the
layout :class:`pipeline.records.BookRecord`, ``TradeRecord`` or ``PriceRecord`` writes is taken
apart positionally (trades and prices only when every field has its usual shape, with integer
arithmetic instead of Decimal); anything else (other field orders, odd numbers, errors) goes
through :func:`pipeline.records.parse`, the one definition of the entry format
(:func:`render_general`, which the fast paths are tested against). Whatever cannot become rows
raises :class:`EntryError` for the dead-letter stream.

**Duplicates.** With ``REPLICATION`` > 1 the same snapshot (code, side, seq, exchange time),
print (code, trade number, day) or LivePrice message reaches the stream once per ingestor, a
few entries apart. Each open day file keeps the keys of the last snapshots, prints or prices
written to it in a bounded window (:class:`Recent`); the file fixes code and day, so a book
key is (side, seq, time), a trade key its number, and a price key its field 19 when the
message had one, else (time, frequency, lots) — the cumulative trade count and volume tell
two updates of one instant apart. The window needs no persistence of its own: whoever opens a
file seeds it from the file's tail (:func:`book_keys`, :func:`trade_keys`, :func:`price_keys`),
which after recovery holds exactly the committed rows, so the rule survives kill -9 and
takeover; a duplicate further back than the window is the one thing it does not catch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import NamedTuple

from pipeline.days import day_of_stamp
from pipeline.layout import (
    GAPS,
    ORDERBOOK,
    PRICES,
    TRADES,
    book_file,
    gap_file,
    price_file,
    trade_file,
)
from pipeline.records import (
    BOOK,
    PRICE,
    SIDE_NAMES,
    TRADE,
    BookRecord,
    GapRecord,
    PriceRecord,
    RecordError,
    TradeRecord,
    parse,
)
from pipeline.rows import (
    BOOK_HEADER,
    GAP_HEADER,
    PRICE_HEADER,
    TRADE_HEADER,
    WIB_ISO_BYTES,
    RowError,
    book_rows,
    canonical_digits,
    fast_price_row,
    fast_trade_row,
    gap_row,
    normalise_time,
    price_row,
    trade_row,
)
from pipeline.ticker import TickerError, normalize

HEADERS = {
    ORDERBOOK: BOOK_HEADER,
    TRADES: TRADE_HEADER,
    PRICES: PRICE_HEADER,
    GAPS: GAP_HEADER,
}
"""Folder under DATA_DIR → the header line its files start with."""
COLUMNS = {kind: header.rstrip("\n").split(",") for kind, header in HEADERS.items()}
"""Folder under DATA_DIR → its column names, in order."""

DedupKey = tuple[str, str, str] | str | None
"""Book: (side, seq, time); trade: the trade number; price: (time, frequency, lots) or
``"#"`` + field 19; gap: None (never deduplicated)."""

BOOK_WINDOW = 64
"""Snapshot keys remembered per book file (both sides): replicas arrive within a few frames."""
TRADE_WINDOW = 4096
"""Trade numbers remembered per trade file: covers a reconnect backfill (~40 prints) easily."""
PRICE_WINDOW = 256
"""Price keys remembered per prices file: replicas arrive within a few entries, and the one
message a (re)subscribe may repeat is the latest."""
WINDOWS = {ORDERBOOK: BOOK_WINDOW, TRADES: TRADE_WINDOW, PRICES: PRICE_WINDOW}
"""Folder → the size of its files' duplicate window (gap files have none)."""


class EntryError(ValueError):
    """A stream entry that cannot be written (it goes to the dead-letter stream)."""


class Rendered(NamedTuple):
    """One entry's contribution to one file."""

    path: str
    """Relative to DATA_DIR, e.g. ``orderbook/2026-03-02_BBCA.csv``."""
    key: DedupKey
    text: str
    rows: int


class Recent:
    """The last ``size`` distinct keys seen, with O(1) membership: one file's duplicate window."""

    __slots__ = ("_order", "_seen", "size")

    def __init__(self, size: int, keys: Iterable[Hashable] = ()) -> None:
        self.size = size
        self._order: deque[Hashable] = deque()
        self._seen: set[Hashable] = set()
        for key in keys:
            self.add(key)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: Hashable) -> bool:
        """Remember ``key``; False if it was already in the window (a duplicate)."""
        if key in self._seen:
            return False
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self.size:
            self._seen.discard(self._order.popleft())
        return True


def book_keys(tail: str) -> list[tuple[str, str, str]]:
    """Distinct (side, seq, time) keys of the complete book rows in a file tail, oldest first.

    ``tail`` may start in the middle of a line (it is the end of a file): the first, possibly
    partial, line is skipped, and so is a header line.
    """
    keys: list[tuple[str, str, str]] = []
    last: tuple[str, str, str] | None = None
    for line in tail.split("\n")[1:]:
        cells = line.split(",")
        if len(cells) < 9 or cells[0] == "timestamp":
            continue
        key = (cells[4], cells[7], cells[0])
        if key != last:
            keys.append(key)
            last = key
    return keys


def trade_keys(tail: str) -> list[str]:
    """Trade numbers of the complete trade rows in a file tail, oldest first."""
    keys = []
    for line in tail.split("\n")[1:]:
        cells = line.split(",")
        if len(cells) >= 8 and cells[0] != "timestamp":
            keys.append(cells[5])
    return keys


_PRICE_WIDTH = len(PRICE_HEADER.split(","))


def price_key(time: str, frequency: str, lots: str, sequence: str) -> DedupKey:
    """A LivePrice's identity within its file, from its row's text: ``#`` + field 19 when the
    message had one, else (time, frequency, lots)."""
    return f"#{sequence}" if sequence else (time, frequency, lots)


def price_keys(tail: str) -> list[DedupKey]:
    """The keys of the complete price rows in a file tail, oldest first."""
    keys = []
    for line in tail.split("\n")[1:]:
        cells = line.split(",")
        if len(cells) >= _PRICE_WIDTH and cells[0] != "timestamp":
            keys.append(price_key(cells[0], cells[8], cells[6], cells[13]))
    return keys


def tail_keys(kind: str, tail: str) -> list[Hashable]:
    """The duplicate keys in the tail of a file of ``kind`` (none for gap files)."""
    if kind == ORDERBOOK:
        return list(book_keys(tail))
    if kind == TRADES:
        return list(trade_keys(tail))
    if kind == PRICES:
        return list(price_keys(tail))
    return []


_BOOK_NAMES = [
    name.encode() for name in BookRecord("X", "BID", 0, "", "", "", "").fields()
]  # the layout records.py writes: k c s q t l r i
_TRADE_NAMES = [
    name.encode() for name in TradeRecord("X", 0, 0.0, 0.0, 0, 0, 0.0, "", "", "").fields()
]  # k c n p v a o x t r i
_PRICE_NAMES = [
    name.encode()
    for name in PriceRecord(
        "X", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None, "", "", ""
    ).fields()
]  # k c p o h l y v x f a b s t r i
_PRICE_SEQ_NAMES = [*_PRICE_NAMES[:13], b"q", *_PRICE_NAMES[13:]]  # with field 19: ... s q t r i
_SIDES = {code.encode(): name for code, name in SIDE_NAMES.items()}
_BOOK_KIND = BOOK.encode()
_TRADE_KIND = TRADE.encode()
_PRICE_KIND = PRICE.encode()
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
        names = fields[0::2]
        if names == _BOOK_NAMES and fields[1] == _BOOK_KIND:
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
        # Trades and prices in the layouts records.py writes, when every field is in its usual
        # shape; they decline (None) anything else, which the general path decides.
        fast: Rendered | None = None
        if names == _TRADE_NAMES and fields[1] == _TRADE_KIND:
            fast = _fast_trade(fields)
        elif fields[1] == _PRICE_KIND and names in (_PRICE_NAMES, _PRICE_SEQ_NAMES):
            fast = _fast_price(fields)
        if fast is not None:
            return fast
    except (RecordError, RowError, UnicodeDecodeError, IndexError) as exc:
        raise EntryError(str(exc)) from None
    return render_general(fields)


def render_general(fields: list[bytes]) -> Rendered:
    """:func:`render` through :func:`pipeline.records.parse` alone, without the positional
    fast paths: the reference they must agree with (rows, key, path and errors)."""
    try:
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
        if isinstance(record, PriceRecord):
            return _price(record)
        return _trade(record)
    except (RecordError, RowError, UnicodeDecodeError, IndexError) as exc:
        raise EntryError(str(exc)) from None


def _book(*, code: str, side: str, seq: str, time: str, levels: str, received: str) -> Rendered:
    time = normalise_time(time)
    text, rows = book_rows(time, side, seq, normalise_time(received), levels)
    return Rendered(book_file(day_of_stamp(time), code), (side, seq, time), text, rows)


def _decoded(fields: list[bytes]) -> dict[str, str]:
    return {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)}


def _fast_trade(fields: list[bytes]) -> Rendered | None:
    """A trade entry in the layout TradeRecord.fields() writes, taken apart positionally.

    None (the general path decides, errors included) unless every field is in the usual
    shape; then the rows, key and path are those of :func:`_trade`. Whatever can still raise
    here (the ticker check) raises as it would there, every other check having passed.
    """
    if len(fields) != 2 * len(_TRADE_NAMES):
        return None  # a name without its value
    code_b, number_b, price_b, shares_b, action_b, board_b, value_b, time_b, received_b = fields[
        3:21:2
    ]
    if (
        not WIB_ISO_BYTES.fullmatch(time_b)
        or not WIB_ISO_BYTES.fullmatch(received_b)
        or not canonical_digits(number_b)
        or not value_b.isdigit()  # unused in the row, but parse() insists it is a number
        or not code_b.isascii()
        or not fields[21].isascii()  # the source: parse() decodes it
    ):
        return None
    time, number = time_b.decode(), number_b.decode()
    text = fast_trade_row(time, price_b, shares_b, action_b, number, board_b, received_b.decode())
    if text is None:
        return None
    return Rendered(trade_file(day_of_stamp(time), _code(code_b.decode())), number, text, 1)


def _fast_price(fields: list[bytes]) -> Rendered | None:
    """A LivePrice entry in the layout PriceRecord.fields() writes (with or without ``q``),
    taken apart positionally; None (the general path decides) unless in the usual shape.

    The key is built from the same cells as the row, as :func:`price_keys` reads them back.
    """
    numbers = fields[5:27:2]
    if len(fields) == 2 * len(_PRICE_NAMES):  # no field 19
        sequence = ""
        time_b, received_b, source_b = fields[27::2]
    elif len(fields) == 2 * len(_PRICE_SEQ_NAMES):
        sequence_b, time_b, received_b, source_b = fields[27::2]
        if sequence_b and not canonical_digits(sequence_b):
            return None
        sequence = sequence_b.decode()
    else:
        return None  # a name without its value
    code_b = fields[3]
    if (
        not WIB_ISO_BYTES.fullmatch(time_b)
        or not WIB_ISO_BYTES.fullmatch(received_b)
        or not code_b.isascii()
        or not source_b.isascii()
    ):
        return None
    time, received = time_b.decode(), received_b.decode()
    out = fast_price_row(numbers, time=time, received=received, sequence=sequence)
    if out is None:
        return None
    text, frequency, lots = out
    key = price_key(time, frequency, lots, sequence)
    return Rendered(price_file(day_of_stamp(time), _code(code_b.decode())), key, text, 1)


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
    return Rendered(
        trade_file(day_of_stamp(time), _code(record.code)), str(record.trade_number), text, 1
    )


def _price(record: PriceRecord) -> Rendered:
    time = normalise_time(record.time)
    text = price_row(record, time=time, received=normalise_time(record.received))
    # The key comes from the row's own cells, exactly as price_keys reads them back.
    cells = text.split(",")
    key = price_key(time, cells[8], cells[6], cells[13].rstrip("\n"))
    return Rendered(price_file(day_of_stamp(time), _code(record.code)), key, text, 1)


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def render_gap(fields: list[bytes]) -> Rendered:
    """One gap-stream entry → its row in ``gaps/YYYY-MM-DD.csv``; EntryError if malformed."""
    try:
        gap = GapRecord.parse(_decoded(fields))
        row = gap_row(gap)
    except (RecordError, RowError, UnicodeDecodeError, IndexError) as exc:
        raise EntryError(str(exc)) from None
    return Rendered(gap_file(day_of_stamp(row)), None, row, 1)
