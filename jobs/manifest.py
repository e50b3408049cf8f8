"""A finished day's manifest, computed from its CSV files (pure apart from reading them).

For each file: rows, bytes, sha256 (of the uncompressed CSV text, so compressing later does
not change it), first and last timestamp, and whether it parses. Per ticker: book snapshots,
trades, traded volume (shares and lots), VWAP, high and low. Problems are listed, not hidden.

**Coverage.** LivePrice carries the exchange's own cumulative volume and trade count per
ticker; the day's final figures (the last row of ``prices/DAY_CODE.csv``: ``lots``,
``frequency``) beside what the trades files captured give ``volume_coverage_pct`` = captured
lots / the exchange's lots × 100, per ticker and for the day. A ticker without LivePrice, or a
day captured without trades (``SUBSCRIBE_TRADES=false``: no trades file at all), is
``"unknown"``, never a number. Below :data:`COVERAGE_FLOOR` the Days page flags it.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.layout import GAPS, ORDERBOOK, PRICES, TRADES, Layout, code_of, kind_of
from pipeline.schema import COLUMNS

COVERAGE_FLOOR = 99.9
"""A ticker (or day) whose volume coverage is under this many percent is flagged."""
UNKNOWN = "unknown"
"""The coverage of a ticker without LivePrice, or of a day captured without trades."""


@dataclass
class FileFacts:
    """What one day file holds."""

    path: str
    rows: int = 0
    bytes: int = 0
    sha256: str = ""
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    expected_rows: int | None = None
    ok: bool = True
    problems: list[str] = field(default_factory=list)


@dataclass
class TickerFacts:
    """A ticker's day in figures."""

    snapshots: int = 0
    trades: int = 0
    shares: int = 0
    lots: float = 0.0
    turnover: int = 0
    vwap: float | None = None
    high: int | None = None
    low: int | None = None
    exchange_lots: float | None = None
    """The exchange's cumulative volume at the day's last LivePrice, in lots (None: no
    LivePrice); ``lots`` above is what the captured trades add up to."""
    exchange_trades: int | None = None
    """The exchange's cumulative trade count (LivePrice ``frequency``); ``trades`` above is
    the captured count."""
    volume_coverage_pct: float | str = UNKNOWN
    """``lots`` / ``exchange_lots`` × 100, or ``"unknown"``."""


def _read_text(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.name.endswith(".gz") else raw


def inspect(kind: str, path: Path, relative: str, tickers: dict[str, TickerFacts]) -> FileFacts:
    """Check one file parses with the right header and count what it holds."""
    facts = FileFacts(path=relative, bytes=path.stat().st_size)
    try:
        content = _read_text(path)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        facts.ok = False
        facts.problems.append(f"unreadable: {exc}")
        return facts
    facts.sha256 = hashlib.sha256(content).hexdigest()
    # Gap files belong to no ticker; their rows are still checked and counted.
    ticker = tickers.setdefault(code_of(path), TickerFacts()) if kind != GAPS else TickerFacts()
    if content and not content.endswith(b"\n"):
        facts.ok = False
        facts.problems.append("last line is incomplete (no newline)")
    try:
        reader = csv.reader(io.StringIO(content.decode()))
        header = next(reader, None)
    except (UnicodeDecodeError, csv.Error) as exc:
        facts.ok = False
        facts.problems.append(f"not CSV text: {exc}")
        return facts
    if header != COLUMNS[kind]:
        facts.ok = False
        facts.problems.append(f"unexpected header {header}")
        return facts
    width = len(COLUMNS[kind])
    price_lots = COLUMNS[PRICES].index("lots")
    price_frequency = COLUMNS[PRICES].index("frequency")
    snapshots: set[tuple[str, str, str]] = set()
    try:
        for number, row in enumerate(reader, start=2):
            if len(row) != width:
                facts.ok = False
                facts.problems.append(f"line {number}: {len(row)} fields, expected {width}")
                continue
            facts.rows += 1
            stamp = row[0]
            if facts.first_timestamp is None:
                facts.first_timestamp = stamp
            facts.last_timestamp = stamp
            if kind == ORDERBOOK:
                snapshots.add((row[4], row[7], stamp))
            elif kind == PRICES:
                # Cumulative over the day: the highest is the last row's (and survives a row
                # that a replica delivered out of order).
                lots, trades = float(row[price_lots]), int(float(row[price_frequency]))
                ticker.exchange_lots = max(ticker.exchange_lots or 0.0, lots)
                ticker.exchange_trades = max(ticker.exchange_trades or 0, trades)
            elif kind == TRADES:
                price, shares = round(float(row[1])), round(float(row[2]) * 100)
                ticker.trades += 1
                ticker.shares += shares
                ticker.turnover += price * shares
                ticker.high = price if ticker.high is None else max(ticker.high, price)
                ticker.low = price if ticker.low is None else min(ticker.low, price)
    except (csv.Error, ValueError) as exc:
        facts.ok = False
        facts.problems.append(f"unparseable row: {exc}")
    if kind == ORDERBOOK:
        ticker.snapshots += len(snapshots)
    return facts


def build(
    layout: Layout, day: str, expected: dict[str, int], gaps: list[dict[str, str]]
) -> dict[str, Any]:
    """The manifest of ``day``: files, tickers, gaps, and every problem found.

    ``expected`` maps relative paths (``orderbook/2026-03-02_BBCA.csv``) to the row counts the
    writers committed; a file whose count differs is a problem.
    """
    tickers: dict[str, TickerFacts] = {}
    files: list[FileFacts] = []
    for kind, path in layout.day_files(day):
        relative = layout.relative(kind, path)
        facts = inspect(kind, path, relative, tickers)
        facts.expected_rows = expected.get(relative)
        if facts.expected_rows is not None and facts.expected_rows != facts.rows:
            facts.ok = False
            facts.problems.append(
                f"{facts.rows} rows on disk, the writers committed {facts.expected_rows}"
            )
        files.append(facts)
    on_disk = {f.path for f in files}
    missing = sorted(path for path in expected if path not in on_disk)
    for ticker in tickers.values():
        ticker.lots = ticker.shares / 100
        ticker.vwap = round(ticker.turnover / ticker.shares, 4) if ticker.shares else None
    problems = [f"{f.path}: {p}" for f in files for p in f.problems]
    problems += [f"{path}: committed by the writers but missing on disk" for path in missing]
    result: dict[str, Any] = {
        "day": day,
        "ok": not problems,
        "problems": problems,
        "files": [asdict(f) for f in files],
        "tickers": {code: asdict(t) for code, t in sorted(tickers.items())},
        "gaps": gaps,
    }
    result["coverage"] = coverage(result)
    return result


def coverage(manifest: dict[str, Any]) -> dict[str, Any]:
    """Set each ticker's ``volume_coverage_pct`` in ``manifest`` and return the day's summary.

    Works on the manifest's own dicts, so figures carried over from an earlier manifest (CSVs
    removed by ``KEEP_CSV_DAYS``) are covered too. The day's figure is the total captured
    lots over the total exchange lots of the tickers whose coverage is known.
    """
    trades_on = any(kind_of(str(f.get("path", ""))) == TRADES for f in manifest["files"])
    captured = exchange = 0.0
    below: list[str] = []
    unknown: list[str] = []
    for code, ticker in manifest["tickers"].items():
        theirs = ticker.get("exchange_lots")
        ours = float(ticker.get("lots") or 0.0)
        if not trades_on or theirs is None or (theirs == 0 and ours > 0):
            ticker["volume_coverage_pct"] = UNKNOWN
            unknown.append(code)
            continue
        # Nothing traded and nothing captured is complete; otherwise the plain ratio.
        pct = 100.0 if theirs == 0 else round(100.0 * ours / float(theirs), 3)
        ticker["volume_coverage_pct"] = pct
        captured += ours
        exchange += float(theirs)
        if pct < COVERAGE_FLOOR:
            below.append(code)
    known = len(manifest["tickers"]) - len(unknown)
    day: float | str = UNKNOWN
    if known:
        day = 100.0 if exchange == 0 else round(100.0 * captured / exchange, 3)
    return {
        "volume_coverage_pct": day,
        "floor_pct": COVERAGE_FLOOR,
        "below": below,
        "unknown": unknown,
        "trades_captured": trades_on,
    }
