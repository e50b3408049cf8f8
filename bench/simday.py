"""A simulator trading day on disk in seconds: the simulator's market, the writer's rendering.

Running the real processes through a whole trading day takes the day; this drives the
simulator's market model (:class:`simulator.market.Market`) with a virtual clock through the
IDX sessions of one Jakarta day instead. Every book side and trade batch becomes the record the
ingestor makes of it (:func:`pipeline.records.from_book` / ``from_trade``) and is rendered by the
writer's own function (:func:`pipeline.schema.render`, ``render_gap``) under the writer's headers,
so the files are byte for byte what the pipeline writes for such a feed. The benchmarks, the
Parquet tests and the README examples read these days; the end-to-end tests run the real
processes instead.

One injected outage (``outage``) leaves a hole in every ticker and a ``disconnect`` row in the
gaps file, as an ingestor reconnect does.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import IO

from pipeline.days import WIB, parse_day
from pipeline.layout import Layout, kind_of
from pipeline.records import GapRecord, from_book, from_trade
from pipeline.schema import HEADERS, render, render_gap
from simulator.clock import NANOS, from_ns, to_ns
from simulator.market import BID, OFFER, Market
from stockbit.messages import OrderBook, RunningTrade
from stockbit.timestamps import parse_iso, wib_iso

SESSIONS = ((time(9, 0), time(12, 0)), (time(13, 30), time(15, 50)))
"""The continuous-trading sessions of Monday to Thursday (WIB), when the books move."""
SOURCE = "simday"


@dataclass
class SimDay:
    """What :func:`simulate_day` wrote."""

    root: Path
    day: str
    codes: tuple[str, ...]
    rows: dict[str, int] = field(default_factory=dict)
    """Relative path → rows written: what the writers would have committed (``day:<d>:rows``)."""
    outage: tuple[datetime, datetime] | None = None

    @property
    def layout(self) -> Layout:
        """The layout of ``root``."""
        return Layout(self.root)


def _flat(fields: dict[str, str]) -> list[bytes]:
    # A stream entry as the writer reads it: [name, value, name, value, ...] in bytes.
    return [part.encode() for pair in fields.items() for part in pair]


class _Clock:
    def __init__(self) -> None:
        self.ns = 0

    def now_ns(self) -> int:
        return self.ns


class _Files:
    """Open day files, each started with its header the first time it is written."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.handles: dict[str, IO[str]] = {}
        self.rows: dict[str, int] = {}

    def write(self, relpath: str, text: str, rows: int) -> None:
        handle = self.handles.get(relpath)
        if handle is None:
            path = self.root / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.handles[relpath] = path.open("w", buffering=1 << 20)
            handle.write(HEADERS[kind_of(relpath)])
            self.rows[relpath] = 0
        handle.write(text)
        self.rows[relpath] += rows

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


def simulate_day(
    root: Path,
    day: str = "2026-03-02",
    codes: tuple[str, ...] = ("BBCA", "TLKM"),
    *,
    levels: int = 60,
    book_every: float = 1.0,
    trade_every: float = 2.0,
    outage: tuple[time, float] | None = (time(11, 0), 30.0),
    seed: int = 7,
) -> SimDay:
    """Write one simulated trading day of ``codes`` under ``root`` (a DATA_DIR).

    Each ticker side sends a full ``levels``-level snapshot every ``book_every`` seconds on
    average (Poisson), each ticker a batch of 1–3 prints every ``trade_every`` seconds, during
    the sessions of :data:`SESSIONS`; ``outage`` = (start, seconds) drops every frame in that
    span and records it as a gap. The same arguments always write the same bytes.
    """
    the_day = parse_day(day)
    rng = random.Random(seed)
    clock = _Clock()
    market = Market(clock, random.Random(seed + 1), levels=levels)
    files = _Files(root)
    result = SimDay(root=root, day=day, codes=codes)
    hole: tuple[int, int] | None = None
    if outage is not None:
        begin = datetime.combine(the_day, outage[0], WIB)
        finish = begin + timedelta(seconds=outage[1])
        hole = (to_ns(begin), to_ns(finish))
        result.outage = (begin, finish)
    try:
        for start, end in SESSIONS:
            first = to_ns(datetime.combine(the_day, start, WIB))
            last = to_ns(datetime.combine(the_day, end, WIB))
            queue: list[tuple[int, int, str, str]] = []
            order = 0
            for code in codes:
                for side in (BID, OFFER, "TRADE"):
                    mean = trade_every if side == "TRADE" else book_every
                    due = first + int(rng.expovariate(1 / mean) * NANOS)
                    queue.append((due, order, code, side))
                    order += 1
            heapq.heapify(queue)
            while queue and queue[0][0] < last:
                due, order, code, side = heapq.heappop(queue)
                clock.ns = due
                mean = trade_every if side == "TRADE" else book_every
                later = due + int(rng.expovariate(1 / mean) * NANOS)
                heapq.heappush(queue, (later, order, code, side))
                lost = hole is not None and hole[0] <= due < hole[1]
                received = from_ns(due + rng.randrange(3_000_000, 40_000_000))
                if side == "TRADE":
                    tape = market.trades(code)
                    if lost:
                        continue
                    for p in tape.prints:
                        trade = RunningTrade(
                            p.time,
                            p.code,
                            float(p.price),
                            float(p.shares),
                            p.action,
                            p.trade_number,
                            p.board,
                            float(p.value),
                        )
                        out = render(_flat(from_trade(trade, received, SOURCE).fields()))
                        files.write(out.path, out.text, out.rows)
                    continue
                snap = market.book(code, side)
                if lost:
                    continue
                moment = parse_iso(snap.time)
                frame = OrderBook(snap.code, snap.body, snap.seq, snap.book_id, moment, 1)
                out = render(_flat(from_book(frame, received, SOURCE).fields()))
                files.write(out.path, out.text, out.rows)
        if result.outage is not None:
            begin, finish = result.outage
            gap = GapRecord(
                start=wib_iso(begin),
                end=wib_iso(finish),
                cause="disconnect",
                tickers=codes,
                ingestor=SOURCE,
                detail="simulated outage",
            )
            out = render_gap(_flat(gap.fields()))
            files.write(out.path, out.text, out.rows)
    finally:
        files.close()
    result.rows = dict(sorted(files.rows.items()))
    return result
