"""Parquet figures: size and load time of one simulator day as Parquet beside CSV, same run.

The day is :func:`bench.simday.simulate_day` at the simulator's defaults (60 levels, a book
snapshot per side every second and a trade batch every second, on average) for four tickers
through both IDX sessions: the files the writer would write for ``obpipe simulate --rate 1``.
``finalize_day``'s Parquet step (:func:`jobs.parquet.write_day`, which also reads every file
back and rebuilds its CSV to check it) turns it into per-ticker Parquet; then, each repeated:

- size: the CSVs, the same CSVs gzipped as ``COMPRESS_AFTER_DAYS`` does (level 6), Parquet;
- load into pandas, every ticker's book and tape: ``pandas.read_csv`` with ``parse_dates``
  (what the README did before the reader), the reader on the CSVs, the reader on Parquet;
- the as-of top of book of one ticker (``obpipe.top_of_book``) from CSV and from Parquet;
- one file per ticker against one file per day holding every ticker (sorted by code): size,
  and the time to read one ticker's book (the day file filtered on ``code``).
"""

from __future__ import annotations

import gzip
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.report import spread
from bench.simday import SimDay, simulate_day
from jobs import manifest, parquet
from obpipe import orderbook, reader, tables
from pipeline.layout import ORDERBOOK, PARQUET, TRADES

CODES = ("BBCA", "BBRI", "TLKM", "GOTO")
REPEATS = 3


def _timed(action: Callable[[], object], repeats: int = REPEATS) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return times


def _size(paths: list[Path]) -> int:
    return sum(path.stat().st_size for path in paths)


def _pandas_csv(day: SimDay) -> None:
    for relpath in day.rows:
        if relpath.startswith((ORDERBOOK, TRADES)):
            pd.read_csv(day.root / relpath, parse_dates=["timestamp", "received_at"])


def _reader(day: SimDay) -> None:
    for code in day.codes:
        orderbook.book(day.day, code, levels=None, data_dir=day.root)
        reader.trades(day.day, code, data_dir=day.root)


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def _ratio(slow: list[float], fast: list[float]) -> str:
    return f"{statistics.median(slow) / statistics.median(fast):,.1f}×"


def run() -> str:
    """Simulate the day, convert it, measure; Markdown for BENCHMARKS.md."""
    with tempfile.TemporaryDirectory(prefix="obpipe-bench-parquet-") as work:
        root = Path(work) / "data"
        started = time.perf_counter()
        day = simulate_day(root, codes=CODES, book_every=1.0, trade_every=1.0, outage=None)
        simulated = time.perf_counter() - started
        csvs = [root / rel for rel in day.rows if rel.startswith((ORDERBOOK, TRADES))]
        rows = sum(n for rel, n in day.rows.items() if rel.startswith(ORDERBOOK))
        prints = sum(n for rel, n in day.rows.items() if rel.startswith(TRADES))
        facts = manifest.build(day.layout, day.day, day.rows, [])
        started = time.perf_counter()
        twins = parquet.write_day(day.layout, facts["files"], None)
        converted = time.perf_counter() - started
        assert all(t.ok and t.rebuilds_csv for t in twins), [t.problems for t in twins]
        parquets = [root / t.path for t in twins]
        gz_size = sum(len(gzip.compress(p.read_bytes(), compresslevel=6)) for p in csvs)
        csv_size, pq_size = _size(csvs), _size(parquets)

        # The same day with its Parquet twins moved aside: the reader then reads the CSVs.
        aside = Path(work) / "parquet-aside"
        day.layout.folder(PARQUET).rename(aside)
        csv_load = _timed(lambda: _reader(day))
        csv_tob = _timed(lambda: orderbook.top_of_book(day.day, "BBCA", data_dir=root))
        pandas_load = _timed(lambda: _pandas_csv(day))
        aside.rename(day.layout.folder(PARQUET))
        pq_load = _timed(lambda: _reader(day))
        pq_tob = _timed(lambda: orderbook.top_of_book(day.day, "BBCA", data_dir=root))

        # One file per day: every ticker's book in one file, sorted by code.
        books = [p for p in parquets if f"/{ORDERBOOK}/" in str(p)]
        one = Path(work) / "one-per-day.parquet"
        combined = pa.concat_tables([tables.read_parquet(p) for p in books]).unify_dictionaries()
        tables.write_parquet(combined, one)
        bbca = day.layout.parquet(ORDERBOOK, day.day, "BBCA")
        per_ticker_read = _timed(lambda: tables.read_parquet(bbca))
        one_read = _timed(
            lambda: pq.read_table(one, filters=[("code", "=", "BBCA")], partitioning=None)
        )
        book_pq = _size(books)
        book_csv = _size([p for p in csvs if p.parent.name == ORDERBOOK])
        one_size = one.stat().st_size

    cpu = os.cpu_count()
    lines = [
        "## Parquet beside CSV (one simulator day)",
        "",
        f"One simulated trading day (`bench/simday.py`: {len(CODES)} tickers "
        f"{', '.join(CODES)}, 60 levels, a snapshot per side and a trade batch every second on "
        f"average, 09:00–12:00 and 13:30–15:50 WIB): {rows:,} book rows and {prints:,} prints "
        f"in {len(csvs)} CSV files, simulated in {simulated:.0f} s. `finalize_day`'s Parquet "
        f"step wrote and verified the twins in {converted:.1f} s (every file read back and its "
        "CSV rebuilt byte for byte).",
        "",
        "| size | bytes | vs CSV |",
        "|---|---|---|",
        f"| CSV | {_mb(csv_size)} | 1× |",
        f"| CSV gzipped (`COMPRESS_AFTER_DAYS`, level 6) | {_mb(gz_size)} | "
        f"{csv_size / gz_size:,.1f}× smaller |",
        f"| Parquet (zstd {tables.COMPRESSION_LEVEL}, per ticker) | {_mb(pq_size)} | "
        f"**{csv_size / pq_size:,.0f}× smaller** |",
        "",
        f"| load into pandas (every ticker's book and tape; {cpu} CPU) | seconds | vs Parquet |",
        "|---|---|---|",
        f"| `pandas.read_csv(..., parse_dates=...)` | {spread(pandas_load, digits=2)} | "
        f"{_ratio(pandas_load, pq_load)} slower |",
        f"| `obpipe` reader on the CSVs | {spread(csv_load, digits=2)} | "
        f"{_ratio(csv_load, pq_load)} slower |",
        f"| `obpipe` reader on Parquet | {spread(pq_load, digits=2)} | 1× |",
        f"| `obpipe.top_of_book` (BBCA) from CSV | {spread(csv_tob, digits=2)} | "
        f"{_ratio(csv_tob, pq_tob)} slower |",
        f"| `obpipe.top_of_book` (BBCA) from Parquet | {spread(pq_tob, digits=2)} | 1× |",
        "",
        "One file per ticker (what `finalize_day` writes) against one file per day holding "
        f"every ticker's book: {_mb(book_pq)} against {_mb(one_size)} (CSV {_mb(book_csv)}); "
        f"reading BBCA's book takes {spread(per_ticker_read, 's', 3)} from its own file and "
        f"{spread(one_read, 's', 3)} from the day file filtered on `code`. Per-ticker files "
        "stay: about the same size, one ticker read without touching the others, the same unit "
        "as the CSVs, the writers' counts and the manifest, each written and verified on its "
        "own; a glob over `date=*/` still reads a month in one call.",
    ]
    return "\n".join(lines)
