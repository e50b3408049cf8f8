"""The journal: one JSON line per data frame sent, the ground truth tests check the CSVs against.

Lines are written in send order through a large buffer and flushed by the server every ~0.5 s
and on shutdown, so a busy feed does not pay a system call per frame.

Line shapes::

    {"conn": 1, "kind": "book", "code": "BBCA", "side": "BID", "seq": 123, "time": "<field 5>",
     "body": "#O|BBCA|BID|..."}
    {"conn": 1, "kind": "trades", "backfill": false, "trades": [{"code": "BBCA",
     "trade_number": 7, "price": 8000, "shares": 500, "action": 1, "board": 1,
     "time": "2026-03-02T10:15:30.123000+07:00"}]}
    {"conn": 1, "kind": "price", "code": "BBCA", "time": "<field 11>", "last": 8200,
     "open": 8175, "high": 8225, "low": 8150, "previous": 8175, "shares": 1234500,
     "value": 10123450000, "frequency": 321, "average": 8200.4, "foreign_buy": 400000,
     "foreign_sell": 350000}
    {"conn": 1, "kind": "iep", "code": "BBCA", "time": "<virtual time sent>",
     "phase": "pre_opening"}
    {"conn": 1, "kind": "bbo", "code": "BBCA", "bid": 8200, "offer": 8225,
     "time": "<virtual time sent>"}
    {"conn": 1, "kind": "malformed", "replaced": <the line of the frame it replaced, without
     "conn">}
    {"conn": 1, "kind": "dropped", "dropped": <the line of the trades frame never sent
     (--drop-trades-every), without "conn">}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from simulator.market import BookSnapshot, Indicative, LiveFigures, Quote, Sent
from stockbit.timestamps import wib_iso

_BUFFER = 1 << 20


def describe(item: Sent) -> dict[str, Any]:
    """The journal fields of a frame's content (everything but ``conn``)."""
    if isinstance(item, LiveFigures):
        return {
            "kind": "price",
            "code": item.code,
            "time": item.time,
            "last": item.last,
            "open": item.open,
            "high": item.high,
            "low": item.low,
            "previous": item.previous,
            "shares": item.shares,
            "value": item.value,
            "frequency": item.frequency,
            "average": item.average,
            "foreign_buy": item.foreign_buy,
            "foreign_sell": item.foreign_sell,
        }
    if isinstance(item, Indicative):
        return {"kind": "iep", "code": item.code, "time": item.time, "phase": item.phase}
    if isinstance(item, Quote):
        return {
            "kind": "bbo",
            "code": item.code,
            "bid": item.bid,
            "offer": item.offer,
            "time": item.time,
        }
    if isinstance(item, BookSnapshot):
        return {
            "kind": "book",
            "code": item.code,
            "side": item.side,
            "seq": item.seq,
            "time": item.time,
            "body": item.body,
        }
    return {
        "kind": "trades",
        "backfill": item.backfill,
        "trades": [
            {
                "code": p.code,
                "trade_number": p.trade_number,
                "price": p.price,
                "shares": p.shares,
                "action": p.action,
                "board": p.board,
                "time": wib_iso(p.time),
            }
            for p in item.prints
        ],
    }


class Journal:
    """An append-only JSONL file of sent data frames."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = path.open("a", encoding="utf-8", buffering=_BUFFER)

    def sent(self, conn: int, item: Sent) -> None:
        """Record a frame delivered to connection ``conn``."""
        self._write({"conn": conn, **describe(item)})

    def malformed(self, conn: int, item: Sent) -> None:
        """Record that the frame carrying ``item`` was replaced by garbage on ``conn``."""
        self._write({"conn": conn, "kind": "malformed", "replaced": describe(item)})

    def dropped(self, conn: int, item: Sent) -> None:
        """Record that the frame carrying ``item`` was not sent on ``conn`` (a drop fault)."""
        self._write({"conn": conn, "kind": "dropped", "dropped": describe(item)})

    def flush(self) -> None:
        """Push buffered lines to the file."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flush and close; later writes are ignored."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, line: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
