"""The order book as research wants it: the state after every update, and at any instant.

The files hold one row per price level of each *side* snapshot: a BID snapshot and an OFFER
snapshot are separate messages and never share a timestamp. Joining them on equal timestamps
(the obvious pivot) therefore pairs nothing; the state of the book is an *as-of* matter:
after each update, the side that changed is its new snapshot and the other side is whatever it
last was. That is what :func:`top_of_book` and ``book(..., wide=True)`` compute, once, in
numpy: every snapshot becomes one row of a ``(snapshots × levels)`` matrix per field, the
snapshots are put in exchange-time order, and each row picks the latest snapshot of each side
at or before it.

The state is per Jakarta trading day: IDX orders are day orders, so nothing is carried across
midnight WIB; a range read is the days read one by one, concatenated, and before a side's
first snapshot of the day its columns are missing (NaN/NaT). ``ask`` is the files' ``OFFER``.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from obpipe import tables
from obpipe.files import Day, PathLike, data_root, span
from obpipe.reader import book_rows, load, to_frame
from pipeline.days import WIB, day_of, parse_day
from pipeline.layout import ORDERBOOK

FIELDS = ("price", "lots", "orders")
"""Per-level fields of the wide book, in column order within a side."""
_COLUMNS = ["timestamp", "side", "seq", "level", "price", "lots", "orders"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Ladders:
    """Every side snapshot of a ticker's day, in exchange-time order, as matrices."""

    time: Ints
    """Exchange time of each snapshot, microseconds since the epoch."""
    bid: Bools
    """True for a BID snapshot, False for OFFER."""
    seq: Ints
    fields: dict[str, Floats]
    """``price``/``lots``/``orders`` → (snapshots × levels), NaN past a snapshot's depth."""

    def latest(self) -> tuple[Ints, Ints]:
        """For each snapshot (as a row of the state), the index of the latest BID and the
        latest OFFER snapshot at or before it; -1 before a side's first one."""
        position = np.arange(len(self.time))
        last_bid = np.maximum.accumulate(np.where(self.bid, position, -1))
        last_ask = np.maximum.accumulate(np.where(~self.bid, position, -1))
        return last_bid, last_ask


def ladders(table: pa.Table, levels: int) -> Ladders:
    """Group book rows (file or time order, level ≤ ``levels``) into snapshot matrices.

    A snapshot is a run of rows sharing (timestamp, side, seq) with rising levels. Rows are
    placed by their ``level`` column, so a side that shrinks leaves NaN below its new depth.
    """
    count = table.num_rows
    if count == 0:
        blank = {name: np.empty((0, levels)) for name in FIELDS}
        return Ladders(np.empty(0, np.int64), np.empty(0, bool), np.empty(0, np.int64), blank)
    stamp = table.column("timestamp").cast(pa.int64()).to_numpy()
    bid = pc.equal(table.column("side").cast(pa.string()), "BID").to_numpy(zero_copy_only=False)
    seq = table.column("seq").to_numpy()
    level = table.column("level").to_numpy()
    new = np.ones(count, dtype=bool)
    new[1:] = (
        (stamp[1:] != stamp[:-1])
        | (seq[1:] != seq[:-1])
        | (bid[1:] != bid[:-1])
        | (level[1:] <= level[:-1])
    )
    snapshot = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    fields: dict[str, Floats] = {}
    for name in FIELDS:
        matrix = np.full((len(starts), levels), np.nan)
        values = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        matrix[snapshot, level - 1] = values
        fields[name] = matrix
    # Exchange-time order; stable, so snapshots with equal times keep their arrival order.
    order = np.argsort(stamp[starts], kind="stable")
    first = starts[order]
    return Ladders(
        time=stamp[first],
        bid=bid[first],
        seq=seq[first],
        fields={name: matrix[order] for name, matrix in fields.items()},
    )


def _pick(matrix: Floats, index: Ints) -> Floats:
    picked = matrix[np.maximum(index, 0)]
    picked[index < 0] = np.nan
    return picked


def _times(micros: Ints, missing: Bools | None = None) -> pa.Array:
    return pa.array(micros, type=pa.int64(), mask=missing).cast(tables.TIME)


def _sides(bid: Bools) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(np.where(bid, 0, 1).astype(np.int32)), pa.array(["BID", "OFFER"])
    )


def _per_day(days: list[str], code: str, data_dir: PathLike | None, levels: int) -> list[Ladders]:
    table = book_rows(days, code, data_root(data_dir), levels, _COLUMNS)
    # One state per Jakarta day: split the (time-ordered) rows at each midnight.
    local_day = pc.floor_temporal(
        pc.add(table.column("timestamp").cast(pa.int64()), tables.OFFSET_US).cast(
            pa.timestamp("us")
        ),
        unit="day",
    ).cast(pa.int64())
    values = local_day.to_numpy()
    cuts = [0, *(np.flatnonzero(values[1:] != values[:-1]) + 1).tolist(), len(values)]
    return [ladders(table.slice(a, b - a), levels) for a, b in itertools.pairwise(cuts)]


def _state_table(lad: Ladders, levels: int, wide: bool) -> pa.Table:
    last_bid, last_ask = lad.latest()
    columns: dict[str, pa.Array] = {
        "timestamp": _times(lad.time),
        "side": _sides(lad.bid),
        "seq": pa.array(lad.seq, pa.int64()),
    }
    if wide:
        for prefix, index in (("bid", last_bid), ("ask", last_ask)):
            for name in FIELDS:
                picked = _pick(lad.fields[name], index)
                for n in range(levels):
                    columns[f"{prefix}_{name}_{n + 1}"] = pa.array(picked[:, n])
        return pa.table(columns)
    bid = {name: _pick(lad.fields[name], last_bid)[:, 0] for name in FIELDS}
    ask = {name: _pick(lad.fields[name], last_ask)[:, 0] for name in FIELDS}
    columns |= {
        "bid": pa.array(bid["price"]),
        "bid_lots": pa.array(bid["lots"]),
        "bid_orders": pa.array(bid["orders"]),
        "ask": pa.array(ask["price"]),
        "ask_lots": pa.array(ask["lots"]),
        "ask_orders": pa.array(ask["orders"]),
        "spread": pa.array(ask["price"] - bid["price"]),
        "mid": pa.array((ask["price"] + bid["price"]) / 2),
        "bid_time": _times(lad.time[np.maximum(last_bid, 0)], last_bid < 0),
        "ask_time": _times(lad.time[np.maximum(last_ask, 0)], last_ask < 0),
    }
    return pa.table(columns)


def _frame(parts: Sequence[pa.Table]) -> pd.DataFrame:
    return to_frame(pa.concat_tables(parts).unify_dictionaries())


def top_of_book(
    day: Day | None = None,
    code: str | None = None,
    *,
    start: Day | None = None,
    end: Day | None = None,
    data_dir: PathLike | None = None,
) -> pd.DataFrame:
    """The best bid and ask after every side update, in exchange-time order.

    Columns: ``timestamp``, ``side`` (the side this update is), ``seq``, ``bid``,
    ``bid_lots``, ``bid_orders``, ``ask``, ``ask_lots``, ``ask_orders``, ``spread`` (ask − bid,
    rupiah), ``mid``, and ``bid_time``/``ask_time``: when each side's state was taken (what
    :func:`gap_mask` needs). The side that did not change is carried forward; before its first
    snapshot of the day it is NaN, and so are ``spread`` and ``mid``.
    """
    code = _need(code)
    days = span(day, start, end)
    return _frame([_state_table(lad, 1, wide=False) for lad in _per_day(days, code, data_dir, 1)])


def book(
    day: Day | None = None,
    code: str | None = None,
    levels: int | None = 10,
    wide: bool = False,
    *,
    start: Day | None = None,
    end: Day | None = None,
    data_dir: PathLike | None = None,
) -> pd.DataFrame:
    """A ticker's book, the best ``levels`` levels of each side (None: all of them).

    ``wide=False``: the file rows (``code, timestamp, price, lots, total_value, side, level,
    orders, seq, received_at``) in exchange-time order. ``wide=True``: one row per side
    update with the other side carried forward, columns ``timestamp, side, seq``, then
    ``bid_price_1…N``, ``bid_lots_1…N``, ``bid_orders_1…N``, ``ask_price_1…N``,
    ``ask_lots_1…N``, ``ask_orders_1…N`` (the LOBSTER layout; NaN where a side has no such
    level, or no snapshot yet today).
    """
    code = _need(code)
    if levels is not None and levels < 1:
        raise ValueError(f"levels must be at least 1 (or None for all), got {levels}")
    if not wide:
        rows = book_rows(span(day, start, end), code, data_root(data_dir), levels)
        return to_frame(rows)
    depth = levels
    if depth is None:
        rows = load(ORDERBOOK, span(day, start, end), code, data_root(data_dir), columns=["level"])
        depth = max(1, int(pc.max(rows.column("level")).as_py() or 1))
    found = _per_day(span(day, start, end), code, data_dir, depth)
    return _frame([_state_table(lad, depth, wide=True) for lad in found])


def _instant(day: str, instant: datetime | time | str) -> datetime:
    moment: datetime
    if isinstance(instant, datetime):
        moment = instant
    elif isinstance(instant, time):
        moment = datetime.combine(parse_day(day), instant)
    elif isinstance(instant, str):
        text = instant.strip()
        if len(text) > 10 and text[4] == "-":
            moment = datetime.fromisoformat(text)
        else:
            moment = datetime.combine(parse_day(day), time.fromisoformat(text))
    else:
        raise TypeError(f"instant must be a datetime, a time or text, not {type(instant).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=WIB)  # a bare time is Jakarta time, as on the exchange
    if day_of(moment) != day:
        raise ValueError(f"{instant} is on {day_of(moment)} in Jakarta, not on {day}")
    return moment


def book_at(
    day: Day,
    code: str,
    instant: datetime | time | str,
    levels: int = 10,
    *,
    data_dir: PathLike | None = None,
) -> pd.DataFrame:
    """The book at ``instant``: the state after every update stamped at or before it.

    ``instant`` is a time of ``day`` (``"10:15:30"``, ``time(10, 15, 30)``; Jakarta time) or a
    full date-time (naive = Jakarta; it must fall on ``day``). Returns one row per level
    (index ``level``) with ``bid_price, bid_lots, bid_orders, ask_price, ask_lots,
    ask_orders``; levels neither side has are left out, a side without a snapshot yet is NaN.
    ``attrs`` holds ``instant`` and ``bid_time``/``ask_time`` (when each side was taken).
    """
    the_day = span(day)[0]
    moment = _instant(the_day, instant)
    at = (moment - _EPOCH) // timedelta(microseconds=1)
    found = _per_day([the_day], _need(code), data_dir, levels)
    lad = found[0] if found else ladders(tables.empty(ORDERBOOK), levels)
    k = int(np.searchsorted(lad.time, at, side="right")) - 1
    columns: dict[str, Floats] = {}
    attrs: dict[Hashable, Any] = {
        "instant": pd.Timestamp(moment).tz_convert(tables.ZONE),
        "bid_time": None,
        "ask_time": None,
    }
    if k >= 0:
        last_bid, last_ask = lad.latest()
        chosen = {"bid": int(last_bid[k]), "ask": int(last_ask[k])}
    else:
        chosen = {"bid": -1, "ask": -1}
    for prefix, index in chosen.items():
        for name in FIELDS:
            row = lad.fields[name][index] if index >= 0 else np.full(levels, np.nan)
            columns[f"{prefix}_{name}"] = row
        if index >= 0:
            stamp = pd.Timestamp(int(lad.time[index]), unit="us", tz="UTC")
            attrs[f"{prefix}_time"] = stamp.tz_convert(tables.ZONE)
    frame = pd.DataFrame(columns, index=pd.RangeIndex(1, levels + 1, name="level"))
    frame = frame.dropna(how="all")
    frame.attrs = attrs
    return frame


def gap_mask(frame: pd.DataFrame, gaps: pd.DataFrame, code: str | None = None) -> pd.Series:
    """True for each row of ``frame`` that a gap may have falsified.

    A row of :func:`top_of_book` is its state from ``min(bid_time, ask_time)`` to its
    ``timestamp``: if a gap touching ``code`` (or naming no ticker) overlaps that span, a side
    may have changed unseen. Any other frame (trades, the file rows) is masked where its
    ``timestamp`` lies in a gap. An open gap (``end`` NaT) runs to the end of time.
    """
    high = frame["timestamp"]
    low = high
    for name in ("bid_time", "ask_time"):
        if name in frame:
            taken = frame[name]
            low = low.where(taken.isna() | (taken >= low), taken)
    mask = pd.Series(False, index=frame.index)
    spans = zip(gaps["start"].tolist(), gaps["end"].tolist(), gaps["tickers"].tolist(), strict=True)
    for start, end, tickers in spans:
        named = [t for t in str(tickers or "").split(",") if t]
        if code is not None and named and code not in named:
            continue
        overlaps = high >= start
        if end is not pd.NaT:
            overlaps &= low <= end
        mask |= overlaps
    return mask


def _need(code: str | None) -> str:
    if code is None:
        raise TypeError("a book query needs a ticker code, e.g. top_of_book('2026-03-02', 'BBCA')")
    return code
