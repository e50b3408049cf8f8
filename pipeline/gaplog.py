"""A day's gap records from durable sources, and the share of trading time they leave covered.

The ``gaps`` stream is a queue, not a log: the writer owning pseudo-partition -1 copies each
record to ``$DATA_DIR/gaps/YYYY-MM-DD.csv`` (the day its gap started) and trims it from the
stream in its commit. So whatever lists a day's gaps — the status page, ``/api/status``,
``/metrics``, ``obpipe status`` — reads the day's gap file (and the day before's, for a gap
that began before midnight), plus the records still in the stream (not copied yet), each
record once (:func:`merge`). A gap stays visible all day, whatever the writer trimmed.

:func:`coverage` turns the gaps into each ticker's ``time_covered_pct``: the share of the
day's continuous trading so far (sessions 1 and 2 of :mod:`pipeline.calendar`) that lies in
no gap of that ticker (a gap with no tickers concerns them all).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import redis

from pipeline.days import bounds, parse_day
from pipeline.keys import Keys
from pipeline.layout import Layout
from pipeline.records import GapRecord, RecordError
from pipeline.rows import RowError, normalise_time
from stockbit.errors import ProtocolError
from stockbit.timestamps import parse_iso

if TYPE_CHECKING:
    from pipeline.calendar import TradingCalendar

FILE_ID = "file"
"""Id prefix of a record read from a gap file (stream records keep their entry id)."""


@dataclass(frozen=True)
class Gap:
    """One gap record with where it was read (``id``) and its parsed span."""

    id: str
    record: GapRecord
    start: datetime
    end: datetime

    def concerns(self, code: str) -> bool:
        """Whether the gap covers ``code`` (a gap without tickers covers every ticker)."""
        return not self.record.tickers or code in self.record.tickers


def _key(record: GapRecord) -> tuple[str, ...]:
    def time(text: str) -> str:
        try:
            return normalise_time(text)
        except RowError:
            return text

    return (
        time(record.start),
        time(record.end),
        record.cause,
        ",".join(record.tickers),
        record.ingestor,
        record.detail,
    )


def read_file(path: Path) -> list[GapRecord]:
    """The records of one gap file (none if it does not exist; unreadable rows skipped)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        return []
    out = []
    for row in rows:
        try:
            out.append(GapRecord.parse({k: v or "" for k, v in row.items() if k is not None}))
        except RecordError:
            continue
    return out


def read_files(data_dir: Path, day: str) -> list[GapRecord]:
    """The records of ``day``'s gap file and of the day before's (gaps across midnight)."""
    before = (parse_day(day) - timedelta(days=1)).isoformat()
    layout = Layout(data_dir)
    return [*read_file(layout.gaps(before)), *read_file(layout.gaps(day))]


def _span(record: GapRecord) -> tuple[datetime, datetime] | None:
    try:
        start = parse_iso(record.start)
        end = parse_iso(record.end) if record.end else start
    except (ProtocolError, ValueError):
        return None
    return start, max(start, end)


def merge(
    day: str,
    files: Iterable[GapRecord],
    stream: Iterable[tuple[str, Mapping[str, str]]],
) -> list[Gap]:
    """``day``'s gaps, newest first, each once: the file records, then the stream entries
    (``(entry id, fields)``, decoded) not copied to a file yet. Only gaps overlapping the
    Jakarta day are kept; malformed entries are skipped."""
    first, last = bounds(day)
    seen: set[tuple[str, ...]] = set()
    gaps: list[Gap] = []

    def add(gap_id: str, record: GapRecord) -> None:
        key = _key(record)
        span = _span(record)
        if key in seen or span is None:
            return
        seen.add(key)
        if span[0] < last and span[1] >= first:
            gaps.append(Gap(gap_id, record, *span))

    for number, record in enumerate(files, start=1):
        add(f"{FILE_ID}:{record.day}:{number}", record)
    for entry_id, fields in stream:
        try:
            record = GapRecord.parse(dict(fields))
        except RecordError:
            continue
        add(entry_id, record)
    gaps.sort(key=lambda g: (g.start, g.end), reverse=True)
    return gaps


def day_gaps(
    client: redis.Redis, keys: Keys, data_dir: Path | None, day: str, scan: int = 500
) -> list[Gap]:
    """``day``'s gaps from the gap files under ``data_dir`` (None: none) and the newest
    ``scan`` records of the gap stream."""
    entries = cast(list[tuple[Any, dict[Any, Any]]], client.xrevrange(keys.gaps, count=scan))
    stream = [(_text(i), {_text(k): _text(v) for k, v in f.items()}) for i, f in entries]
    return merge(day, read_files(data_dir, day) if data_dir is not None else [], stream)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _union(spans: list[tuple[datetime, datetime]]) -> float:
    """Seconds covered by the union of ``spans``."""
    total = 0.0
    current: tuple[datetime, datetime] | None = None
    for start, end in sorted(spans):
        if current is None or start > current[1]:
            if current is not None:
                total += (current[1] - current[0]).total_seconds()
            current = (start, end)
        elif end > current[1]:
            current = (current[0], end)
    if current is not None:
        total += (current[1] - current[0]).total_seconds()
    return total


def coverage(
    gaps: Sequence[Gap], codes: Iterable[str], calendar: TradingCalendar, now: datetime
) -> dict[str, float | None]:
    """Per ticker, the percentage of today's continuous trading up to ``now`` that is in no
    gap of it (100 with no gap; None before the first session or on a closed day)."""
    elapsed = calendar.trading_elapsed_s(now)
    codes = list(codes)
    if elapsed <= 0:
        return dict.fromkeys(codes)
    sessions = [
        (span.start, min(span.end, now))
        for span in calendar.continuous_intervals(now)
        if span.start < now
    ]
    clipped: list[tuple[Gap, list[tuple[datetime, datetime]]]] = []
    for gap in gaps:
        parts = [
            (max(gap.start, s), min(gap.end, e))
            for s, e in sessions
            if gap.start < e and gap.end > s
        ]
        if parts:
            clipped.append((gap, parts))
    everyone = [p for gap, parts in clipped if not gap.record.tickers for p in parts]
    out: dict[str, float | None] = {}
    for code in codes:
        spans = everyone + [
            p
            for gap, parts in clipped
            if gap.record.tickers and code in gap.record.tickers
            for p in parts
        ]
        lost = min(elapsed, _union(spans))
        out[code] = round(100.0 * (elapsed - lost) / elapsed, 2)
    return out
