"""Dropping the duplicates that replicated ingestors produce (pure).

With ``REPLICATION`` > 1 the same snapshot (code, side, seq, exchange time) or print (code,
trade number, day) reaches the stream once per ingestor, a few entries apart. Each open day
file keeps the keys of the last snapshots or prints written to it in a bounded window; the
file fixes code and day, so a book key is (side, seq, time) and a trade key its number.

The window needs no persistence of its own: when a writer opens a file (after a restart, a
takeover or an idle close) it seeds the window from the file's tail, which after recovery
holds exactly the committed rows. The dedup therefore survives kill -9 and takeover, and a
duplicate further back than the window is the one thing it does not catch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable

BOOK_WINDOW = 64
"""Snapshot keys remembered per book file (both sides): replicas arrive within a few frames."""
TRADE_WINDOW = 4096
"""Trade numbers remembered per trade file: covers a reconnect backfill (~40 prints) easily."""


class Recent:
    """The last ``size`` distinct keys seen, with O(1) membership."""

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
