"""CSV rows of the day files (pure): headers, and record pieces → CSV text (ARCHITECTURE.md §5).

The book formatter is the writer's hot path: about 60 rows per snapshot, a million rows a
second. It therefore works on the level text as a whole (one ``split``, one list
comprehension, one ``join``) and builds no per-row object. Snapshots in the usual shape
(plain digits, shares a multiple of 100) take that fast path; anything else (odd lots,
leading zeros, empty parts) goes through :func:`stockbit.book.parse_levels` and exact
arithmetic, so the two paths write the same bytes for the same snapshot.
"""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal, InvalidOperation
from operator import itemgetter, mul
from typing import cast

from pipeline.records import GapRecord, PriceRecord
from stockbit.book import SIDES, parse_levels
from stockbit.errors import ProtocolError
from stockbit.messages import LOT
from stockbit.timestamps import parse_iso, wib_iso

BOOK_HEADER = "timestamp,price,lots,total_value,side,level,orders,seq,received_at\n"
TRADE_HEADER = "timestamp,price,lots,total_value,side,trade_number,board,received_at\n"
PRICE_HEADER = (
    "timestamp,price,open,high,low,prev_close,lots,total_value,frequency,average,"
    "foreign_buy,foreign_sell,received_at,sequence\n"
)
"""ARCHITECTURE.md §5's columns, plus ``sequence`` (LivePrice field 19, empty when the message
had none) at the end: the duplicate rule needs it in the file to seed its window."""
GAP_HEADER = "start,end,cause,tickers,ingestor,detail\n"

TRADE_SIDES = {1: "BUY", 2: "SELL"}
"""RunningTrade ``action`` → the ``side`` column (anything else: empty)."""
BOARDS = {1: "RG", 2: "TN", 3: "NG"}
"""RunningTrade ``board`` → the ``board`` column (anything else: empty)."""


class RowError(ValueError):
    """Record contents that cannot become rows (bad level text, bad time...)."""


_LEVEL_NUMBERS = tuple(str(n) for n in range(1, 513))
_SIDE_LEVELS = {side: [f"{side},{n}" for n in _LEVEL_NUMBERS] for side in SIDES}


CACHE_MAX = 50_000
"""Entries per memo before it starts over: ample for hundreds of active ladders, and it
bounds the memo to about 10 MB (the writer's RSS stays flat through a trading day)."""


class _IntCache(dict[str, int]):
    """Price text → int: prices repeat from snapshot to snapshot (the tick grid)."""

    def __missing__(self, text: str) -> int:
        if len(self) >= CACHE_MAX:
            self.clear()
        value = self[text] = int(text)
        return value


class _LevelValues(dict[str, str]):
    """A canonical level ``price;orders;shares`` → ``price,lots,value`` (and its orders).

    Between two snapshots of a side most levels are unchanged (96 % of the level texts repeat
    in the simulator's evolving 60-level ladders), and a dict hit costs a fraction of two
    ``int()``, a product and a ``str()``.
    """

    def __missing__(self, level: str) -> str:
        if len(self) >= CACHE_MAX:
            self.clear()
            _ORDERS.clear()
        price, orders, shares = level.split(";")
        text = self[level] = f"{price},{shares[:-2]},{_PRICES[price] * int(shares)}"
        _ORDERS[level] = orders
        return text


class _LevelOrders(dict[str, str]):
    """A canonical level → its orders text (filled by :class:`_LevelValues` on a miss)."""

    def __missing__(self, level: str) -> str:
        return level.split(";")[1]


class _Memo:
    """Whether the level memo pays off, judged by its miss rate every few thousand snapshots.

    A feed whose levels all change every time (no real book does) would make every level a
    miss, slower than computing directly: then the memo is switched off for a while.
    """

    PERIOD = 2048
    OFF_PERIODS = 16

    def __init__(self) -> None:
        self.on = True
        self.snapshots = 0
        self.levels = 0
        self.misses = 0
        self.off_for = 0

    def count(self, levels: int, misses: int) -> None:
        self.snapshots += 1
        self.levels += levels
        self.misses += min(levels, max(0, misses))
        if self.snapshots >= self.PERIOD:
            if self.misses * 2 > self.levels:
                self.on = False
                self.off_for = self.OFF_PERIODS * self.PERIOD
            self.snapshots = self.levels = self.misses = 0

    def skip(self) -> None:
        """One snapshot computed directly; after a while, try the memo again."""
        self.off_for -= 1
        if self.off_for <= 0:
            self.on = True


_PRICES = _IntCache()
_VALUES = _LevelValues()
_ORDERS = _LevelOrders()
_memo = _Memo()
_CUT_00 = itemgetter(slice(None, -2))  # shares text → lots text when shares end in "00"
# The usual snapshot: canonical digits (no leading zeros), shares >= 100 and a multiple of 100,
# so that lots is the shares text without its last two characters.
_CANONICAL = re.compile(
    r"(?:[1-9][0-9]*;[1-9][0-9]*;[1-9][0-9]*00\|)*[1-9][0-9]*;[1-9][0-9]*;[1-9][0-9]*00"
)
WIB_ISO = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}\+07:00")
"""The normalised time form (:func:`normalise_time`): a text it matches is already final."""
WIB_ISO_BYTES = re.compile(WIB_ISO.pattern.encode())
"""The same, for undecoded stream fields (a match is ASCII, so it decodes)."""


def normalise_time(text: str) -> str:
    """The time as ``YYYY-MM-DDTHH:MM:SS.ffffff+07:00`` (Jakarta); RowError if not a time.

    Records already carry this form (pipeline.records), so the check is one regex match; any
    other ISO-8601 form (fewer digits, another offset) is converted, never the local clock.
    """
    if WIB_ISO.fullmatch(text):
        return text
    try:
        return wib_iso(parse_iso(text))
    except ProtocolError as exc:
        raise RowError(str(exc)) from None


def lots_text(shares: int) -> str:
    """Shares in lots as exact decimal text: 4476200 → ``44762``, 4476250 → ``44762.5``."""
    whole, rest = divmod(shares, LOT)
    return str(whole) if rest == 0 else f"{whole}.{rest:02d}".rstrip("0")


def book_rows(time: str, side: str, seq: str, received: str, levels: str) -> tuple[str, int]:
    """CSV text (one line per level, best first) of one side snapshot, and its row count.

    ``time`` and ``received`` must already be normalised (:func:`normalise_time`), ``side``
    ``BID``/``OFFER``, ``seq`` canonical digits. RowError if the level text is malformed.
    """
    if _CANONICAL.fullmatch(levels):
        parts = levels.split("|")
        count = len(parts)
        if count <= len(_LEVEL_NUMBERS):
            # All per-level work runs in C (map/zip/join): row = "price,lots,value",
            # "SIDE,level", orders; rows are joined by ",seq,received\ntime," so only the
            # variable middle of each row is built. _SIDE_LEVELS is longer on purpose: zip
            # stops with the levels.
            joint = f",{seq},{received}\n{time},"
            if _memo.on:
                known = len(_VALUES)
                memo_cells = zip(
                    map(_VALUES.__getitem__, parts),
                    _SIDE_LEVELS[side],
                    map(_ORDERS.__getitem__, parts),
                    strict=False,
                )
                body = joint.join(map(",".join, memo_cells))
                _memo.count(count, len(_VALUES) - known)
            else:
                flat = levels.replace("|", ";").split(";")
                prices, shares = flat[0::3], flat[2::3]
                values = map(str, map(mul, map(_PRICES.__getitem__, prices), map(int, shares)))
                cells = zip(
                    prices,
                    map(_CUT_00, shares),
                    values,
                    _SIDE_LEVELS[side],
                    flat[1::3],
                    strict=False,
                )
                body = joint.join(map(",".join, cells))
                _memo.skip()
            return f"{time},{body},{seq},{received}\n", count
    try:
        parsed = parse_levels(levels)
    except ProtocolError as exc:
        raise RowError(str(exc)) from None
    lines = [
        f"{time},{lv.price},{lots_text(lv.shares)},{lv.price * lv.shares},{side},{n},"
        f"{lv.orders},{seq},{received}\n"
        for n, lv in enumerate(parsed, 1)
    ]
    return "".join(lines), len(lines)


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise RowError(f"not a number: {text[:20]!r}") from None
    if not value.is_finite() or value < 0:
        raise RowError(f"not a quantity: {text[:20]!r}")
    return value


def _plain(value: Decimal) -> str:
    # Exact decimal text without exponent or trailing zeros: 500 → "500", 2.50 → "2.5".
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def trade_row(
    *, time: str, price: str, shares: str, action: int, trade_number: int, board: int, received: str
) -> str:
    """The CSV line of one print: lots = shares / 100, total_value = price × shares (rupiah)."""
    p = _decimal(price)
    s = _decimal(shares)
    return (
        f"{time},{_plain(p)},{_plain(s / LOT)},{_plain(p * s)},{TRADE_SIDES.get(action, '')},"
        f"{trade_number},{BOARDS.get(board, '')},{received}\n"
    )


def price_row(price: PriceRecord, *, time: str, received: str) -> str:
    """The CSV line of one LivePrice message (``time``/``received`` already normalised).

    lots = shares / 100 (exact); every figure is checked (finite, not negative) and written
    in its shortest exact form, the foreign figures as the wire gives them; ``sequence`` is
    empty when the message had no field 19.
    """
    numbers = (
        price.last,
        price.open,
        price.high,
        price.low,
        price.previous,
        price.shares,
        price.value,
        price.frequency,
        price.average,
        price.foreign_buy,
        price.foreign_sell,
    )
    last, open_, high, low, previous, shares, value, frequency, average, fbuy, fsell = (
        _decimal(repr(n)) for n in numbers
    )
    sequence = "" if price.sequence is None else str(price.sequence)
    return (
        f"{time},{_plain(last)},{_plain(open_)},{_plain(high)},{_plain(low)},"
        f"{_plain(previous)},{_plain(shares / LOT)},{_plain(value)},{_plain(frequency)},"
        f"{_plain(average)},{_plain(fbuy)},{_plain(fsell)},{received},{sequence}\n"
    )


# Below 10**15 (< 2**53) every whole number is exactly a double, so its canonical digits are
# already the shortest exact form the general path writes; longer texts take the float route.
_EXACT_DIGITS = 15
# A total value of up to 28 digits is exact in Decimal's default context; a longer product is
# rounded there, and only the general path reproduces that rounding.
_EXACT_PRODUCT = 10**28
_SIDE_CELLS = {str(n).encode(): TRADE_SIDES.get(n, "") for n in range(10)}
_BOARD_CELLS = {str(n).encode(): BOARDS.get(n, "") for n in range(10)}


def canonical_digits(text: bytes) -> bool:
    """ASCII digits that ``str(int(text))`` gives back unchanged (no leading zero)."""
    return text.isdigit() and (text[0] != 0x30 or len(text) == 1)


def figure(text: bytes) -> str | None:
    """A wire number as :func:`price_row` writes it (shortest exact form, not negative), or
    None where only the general path may decide (not a plain non-negative number, not ASCII).

    The same text as ``Decimal(repr(float(text)))`` written plainly, without its arithmetic:
    canonical digits up to 15 long are their own shortest form; otherwise ``repr`` of the
    double is already shortest, so a positional one only loses a trailing ``.0``.
    """
    if len(text) <= _EXACT_DIGITS and canonical_digits(text):
        return text.decode()
    if not text.isascii():
        return None  # float() would read Unicode digits and spaces the fast path does not vet
    try:
        shortest = repr(float(text))
    except ValueError:
        return None
    if not shortest[0].isdigit() or "e" in shortest:
        return None  # negative, nan, inf or exponent form: the general path (and its error)
    return shortest[:-2] if shortest.endswith(".0") else shortest


def fast_trade_row(  # noqa: PLR0917 - positional: the writer calls it per print
    time: str, price: bytes, shares: bytes, action: bytes, number: str, board: bytes, received: str
) -> str | None:
    """:func:`trade_row` of a print whose price and shares are plain whole numbers, in
    integers; None for anything else (fractions, other codes, a product too long), which the
    general path renders. ``number`` must be canonical digits, times normalised."""
    side, board_text = _SIDE_CELLS.get(action), _BOARD_CELLS.get(board)
    if (
        side is None
        or board_text is None
        or not (price.isdigit() and len(price) <= _EXACT_DIGITS)
        or not (shares.isdigit() and len(shares) <= _EXACT_DIGITS)
    ):
        return None
    price_value, shares_value = int(price), int(shares)
    total = price_value * shares_value
    if total >= _EXACT_PRODUCT:
        return None
    return (
        f"{time},{price_value},{lots_text(shares_value)},{total},{side},{number},"
        f"{board_text},{received}\n"
    )


def fast_price_row(
    numbers: list[bytes], *, time: str, received: str, sequence: str
) -> tuple[str, str, str] | None:
    """:func:`price_row` of a LivePrice from its eleven number texts in field order (``p o h
    l y v x f a b s``), with no Decimal: (row, frequency cell, lots cell), or None where a
    figure needs the general path (negative, not finite, exponent form, fractional shares).
    ``sequence`` is the canonical text of field 19 or empty, times normalised."""
    cells = [figure(n) for n in numbers]
    if None in cells:
        return None
    last, open_, high, low, previous, shares, value, frequency, average, fbuy, fsell = cast(
        list[str], cells
    )
    if not shares.isdigit():
        return None
    lots = lots_text(int(shares))
    text = (
        f"{time},{last},{open_},{high},{low},{previous},{lots},{value},{frequency},"
        f"{average},{fbuy},{fsell},{received},{sequence}\n"
    )
    return text, frequency, lots


def gap_row(gap: GapRecord) -> str:
    """The CSV line of a gap record (tickers comma-joined, so quoted when several)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(
        [
            normalise_time(gap.start),
            normalise_time(gap.end) if gap.end else "",
            gap.cause,
            ",".join(gap.tickers),
            gap.ingestor,
            gap.detail,
        ]
    )
    return out.getvalue()
