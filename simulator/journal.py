"""The journal: one JSON line per data frame sent, the ground truth tests check the CSVs against.

Lines are written in send order through a large buffer and flushed by the server every ~0.5 s
and on shutdown, so a busy feed does not pay a system call per frame.

Line shapes::

    {"conn": 1, "kind": "book", "code": "BBCA", "side": "BID", "seq": 123, "time": "<field 5>",
     "body": "#O|BBCA|BID|..."}
    {"conn": 1, "kind": "trades", "backfill": false, "trades": [{"code": "BBCA",
     "trade_number": 7, "price": 8000, "shares": 500, "action": 1, "board": 1,
     "time": "2026-03-02T10:15:30.123000+07:00"}]}
    {"conn": 1, "kind": "malformed", "replaced": <the book or trades line it replaced, without
     "conn">}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from simulator.market import BookSnapshot, Tape
from stockbit.timestamps import wib_iso

_BUFFER = 1 << 20


def describe(item: BookSnapshot | Tape) -> dict[str, Any]:
    """The journal fields of a frame's content (everything but ``conn``)."""
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

    def sent(self, conn: int, item: BookSnapshot | Tape) -> None:
        """Record a frame delivered to connection ``conn``."""
        self._write({"conn": conn, **describe(item)})

    def malformed(self, conn: int, item: BookSnapshot | Tape) -> None:
        """Record that the frame carrying ``item`` was replaced by garbage on ``conn``."""
        self._write({"conn": conn, "kind": "malformed", "replaced": describe(item)})

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
