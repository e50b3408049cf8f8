"""Reading the day files: a ticker's Parquet twin when ``finalize_day`` wrote it, else its CSV.

The files are found under ``data_dir`` (default: ``$DATA_DIR``, else ``./data``; see
:mod:`obpipe.files`); the tables are typed by :mod:`obpipe.tables`, so a day reads the same from
Parquet, ``.csv`` and ``.csv.gz``.

A query names one day (``"2026-03-02"``), a range (``"2026-03-02..2026-03-06"`` or
``start=``/``end=``, both inclusive); days without files (weekends, holidays) are skipped, and
a query that finds no file at all raises :class:`FileNotFoundError` naming where it looked.
Rows come in exchange-time order (stable: rows of one snapshot keep their level order; a
snapshot the stream delivered late is put back in its place).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from obpipe import tables
from obpipe.files import Day, PathLike, data_root, day_codes, source, span
from pipeline.layout import GAPS, GZ, ORDERBOOK, PRICES, TRADES, Layout, gap_file, ticker_file
from pipeline.ticker import normalize


def read_one(
    path: Path,
    kind: str,
    code: str,
    columns: Sequence[str] | None = None,
    where: pc.Expression | None = None,
) -> pa.Table:
    """One file's typed table (``columns`` only, rows matching ``where``)."""
    if path.name.endswith(tables.PARQUET_SUFFIX):
        return tables.read_parquet(path, list(columns) if columns else None, where)
    table = tables.read_csv(path, kind, code)
    if where is not None:
        table = table.filter(where)
    return table.select(list(columns)) if columns else table


def load(
    kind: str,
    days: Sequence[str],
    code: str | None,
    root: Path,
    *,
    columns: Sequence[str] | None = None,
    where: pc.Expression | None = None,
) -> pa.Table:
    """The typed rows of ``kind`` for ``code`` (every ticker if None) over ``days``."""
    layout = Layout(root)
    wanted = normalize(code) if code is not None else None
    parts = []
    for day in days:
        for each in [wanted] if wanted else day_codes(layout, kind, day):
            path = source(layout, kind, day, each)
            if path is not None:
                parts.append(read_one(path, kind, each, columns, where))
    if not parts:
        what = f"{kind} file of {wanted}" if wanted else f"{kind} file"
        when = days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"
        raise FileNotFoundError(
            f"no {what} for {when} under {root} (looked for "
            f"{layout.parquet(kind, days[0], wanted or 'CODE')} and "
            f"{layout.path(ticker_file(kind, days[0], wanted or 'CODE'))}[{GZ}]); "
            "pass data_dir= or set DATA_DIR"
        )
    return pa.concat_tables(parts).unify_dictionaries()


def in_time_order(table: pa.Table, *then: str) -> pa.Table:
    """Rows sorted by ``timestamp`` (then ``then``), stable (Arrow's sort keeps ties in order)."""
    keys = [("timestamp", "ascending"), *((name, "ascending") for name in then)]
    return table.take(pc.sort_indices(table, sort_keys=keys))


def to_frame(table: pa.Table) -> pd.DataFrame:
    """A typed table as pandas: tz-aware times, categorical labels, int64 and float64."""
    frame: pd.DataFrame = table.to_pandas()
    return frame


def trades(
    day: Day | None = None,
    code: str | None = None,
    *,
    start: Day | None = None,
    end: Day | None = None,
    data_dir: PathLike | None = None,
) -> pd.DataFrame:
    """The running-trade tape: one row per print, in exchange-time then trade-number order.

    Columns: ``code, timestamp, price, lots, total_value, side, trade_number, board,
    received_at``; ``side`` is the aggressor (``BUY``/``SELL``, null in auctions and negotiated
    trades), ``board`` ``RG``/``TN``/``NG``. Every ticker of the day(s) when ``code`` is None.
    """
    table = load(TRADES, span(day, start, end), code, data_root(data_dir))
    return to_frame(in_time_order(table, "trade_number"))


def prices(
    day: Day | None = None,
    code: str | None = None,
    *,
    start: Day | None = None,
    end: Day | None = None,
    data_dir: PathLike | None = None,
) -> pd.DataFrame:
    """LivePrice session figures, one row per message: ``code, timestamp, price, open, high,
    low, prev_close, lots, total_value, frequency, average, foreign_buy, foreign_sell,
    received_at, sequence`` (``lots``, ``total_value`` and ``frequency`` cumulative over the
    day; ``sequence`` is field 19, NaN where the message had none)."""
    table = load(PRICES, span(day, start, end), code, data_root(data_dir))
    return to_frame(in_time_order(table))


def gaps(
    day: Day | None = None,
    *,
    start: Day | None = None,
    end: Day | None = None,
    data_dir: PathLike | None = None,
) -> pd.DataFrame:
    """Every span the feed was (possibly) not captured: ``start, end, cause, tickers,
    ingestor, detail`` (``end`` is NaT while a gap is open; ``tickers`` comma-separated).

    No gaps file means no gaps: the table is then empty. Mask analyses with
    :func:`obpipe.gap_mask`.
    """
    root = data_root(data_dir)
    layout = Layout(root)
    parts = []
    for the_day in span(day, start, end):
        path = layout.path(gap_file(the_day))
        for candidate in (path, path.with_name(path.name + GZ)):
            if candidate.is_file():
                parts.append(tables.read_csv(candidate, GAPS))
                break
    table = pa.concat_tables(parts).unify_dictionaries() if parts else tables.empty(GAPS)
    return to_frame(table.sort_by([("start", "ascending")]))


def book_rows(
    days: Sequence[str],
    code: str,
    root: Path,
    levels: int | None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """A ticker's book rows (level ≤ ``levels``; all if None) in exchange-time order."""
    where = pc.field("level") <= levels if levels is not None else None
    return in_time_order(load(ORDERBOOK, days, code, root, columns=columns, where=where))
