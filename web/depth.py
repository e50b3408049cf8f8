"""A ticker's live depth: the latest BID and OFFER snapshot of it in its partition stream.

Two sources, the newer record per side wins:

* a backward scan (XREVRANGE, in batches, bounded) of the code's partition stream for its
  last BID and last OFFER record;
* :class:`DepthWatcher`, a background tail (plain XREAD: no consumer group, so it never
  affects the writers) of the partitions of the codes someone is looking at, keeping the
  newest record per side in memory.

The watcher is needed because writers trim what they have committed (``XTRIM MINID`` after
every commit), so the stream usually holds well under a second of entries and a side that did
not change in that time is gone from it. Once a code is being watched, every snapshot is seen
as it is appended. A side still never seen answers ``null``, and the page says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from pipeline.keys import Keys
from pipeline.records import BookRecord, RecordError, parse
from stockbit.book import BID, OFFER, parse_levels
from stockbit.errors import ProtocolError
from stockbit.messages import LOT

log = logging.getLogger(__name__)

BATCH = 500
SCAN_LIMIT = 20_000
"""At most this many entries are read back per request (bounded work per poll)."""
LEVELS = 10
WATCH_FOR_S = 60.0
"""A code stays watched this long after its depth was last asked for."""
READ_COUNT = 2000
BLOCK_MS = 1000

Found = dict[str, tuple[str, BookRecord]]
"""Side (``BID``/``OFFER``) → (stream entry id, record)."""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def newer(
    a: tuple[str, BookRecord] | None, b: tuple[str, BookRecord] | None
) -> tuple[str, BookRecord] | None:
    """The later of two (entry id, record) pairs of one partition stream (None loses)."""
    if a is None or b is None:
        return a or b
    return a if _entry_key(a[0]) >= _entry_key(b[0]) else b


def _code_of(raw_fields: Any) -> str:
    if not raw_fields:
        return ""
    value = raw_fields.get("c")
    return _text(raw_fields.get(b"c", "") if value is None else value)


def _book(code: str, raw_fields: Any) -> BookRecord | None:
    # Cheap filter first: most entries of a partition belong to other tickers.
    if _code_of(raw_fields) != code:
        return None
    fields = {_text(k): _text(v) for k, v in raw_fields.items()}
    if fields.get("k") != "b":
        return None
    try:
        record = parse(fields)
    except RecordError:
        return None
    return record if isinstance(record, BookRecord) else None


def latest_books(client: redis.Redis, keys: Keys, code: str, scan_limit: int = SCAN_LIMIT) -> Found:
    """The newest BID and OFFER record of ``code`` still in its stream (either may be missing)."""
    stream = keys.stream_for(code)
    found: Found = {}
    upper = "+"
    seen = 0
    while seen < scan_limit and len(found) < 2:
        batch = client.xrevrange(stream, max=upper, min="-", count=min(BATCH, scan_limit - seen))
        if not batch:
            break
        for entry_id, raw_fields in batch:
            record = _book(code, raw_fields)
            if record is not None and record.side not in found:
                found[record.side] = (_text(entry_id), record)
        seen += len(batch)
        # An exclusive bound ("(" prefix, Redis 6.2+) continues just below the last entry.
        upper = "(" + _text(batch[-1][0])
    return found


class DepthWatcher:
    """Tails the partition streams of recently viewed codes; keeps each side's newest book.

    :meth:`want` registers interest (from the depth endpoint) and, with ``autostart``, starts
    the background thread that calls :meth:`step` (one XREAD) in a loop — lazily, so the app
    works the same under any WSGI server. Tests leave ``autostart`` off and call
    :meth:`step` themselves. Thread-safe.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        monotonic: Callable[[], float] = time.monotonic,
        watch_for_s: float = WATCH_FOR_S,
        autostart: bool = False,
    ) -> None:
        self.client = client
        self.keys = keys
        self.monotonic = monotonic
        self.watch_for_s = watch_for_s
        self.autostart = autostart
        self._lock = threading.Lock()
        self._wanted: dict[str, float] = {}
        self._books: dict[str, Found] = {}
        self._cursor: dict[str, str] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def want(self, code: str) -> None:
        """Keep watching ``code`` for the next ``watch_for_s`` seconds."""
        with self._lock:
            fresh = code not in self._wanted
            self._wanted[code] = self.monotonic() + self.watch_for_s
        if fresh:
            self._wake.set()
        if self.autostart:
            self.start()

    def latest(self, code: str) -> Found:
        """The newest records seen of ``code`` (empty while nothing was seen)."""
        with self._lock:
            return dict(self._books.get(code, {}))

    def _active(self) -> dict[str, set[str]]:
        now = self.monotonic()
        with self._lock:
            for code in [c for c, until in self._wanted.items() if until < now]:
                del self._wanted[code]
                self._books.pop(code, None)
            streams: dict[str, set[str]] = {}
            for code in self._wanted:
                streams.setdefault(self.keys.stream_for(code), set()).add(code)
            for stream in [s for s in self._cursor if s not in streams]:
                del self._cursor[stream]
            return streams

    def step(self, block_ms: int | None = None) -> int:
        """One XREAD over the watched partitions; returns the entries read."""
        streams = self._active()
        if not streams:
            return 0
        for stream in streams:
            if stream not in self._cursor:
                # A stream newly watched is read from its current end ("$" would skip what
                # arrives between two reads); what is already there, the endpoint's scan sees.
                last = self.client.xrevrange(stream, count=1)
                self._cursor[stream] = _text(last[0][0]) if last else "0-0"
        cursors = {s: self._cursor[s] for s in streams}
        reply = self.client.xread(cursors, count=READ_COUNT, block=block_ms)  # type: ignore[arg-type]
        items = reply.items() if isinstance(reply, dict) else (reply or [])
        count = 0
        updates: dict[str, Found] = {}
        for stream_name, entries in items:
            stream = _text(stream_name)
            codes = streams.get(stream, set())
            for entry_id, raw_fields in entries:
                count += 1
                ident = _text(entry_id)
                self._cursor[stream] = ident
                code = _code_of(raw_fields)
                if code not in codes:
                    continue
                record = _book(code, raw_fields)
                if record is not None:
                    updates.setdefault(code, {})[record.side] = (ident, record)
        with self._lock:
            for code, sides in updates.items():
                if code in self._wanted:
                    self._books.setdefault(code, {}).update(sides)
        return count

    def start(self) -> None:
        """Run :meth:`step` in a daemon thread until :meth:`stop` (once; later calls no-op)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="depth-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to finish (it does within one XREAD block)."""
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._active():
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self.step(BLOCK_MS)
            except redis.RedisError as exc:
                # The page reports Redis outages; here it is enough to try again shortly.
                log.debug("depth watcher: %s", type(exc).__name__)
                self._stop.wait(1.0)


def _side(record: BookRecord | None, depth: int) -> dict[str, Any] | None:
    if record is None:
        return None
    try:
        levels = parse_levels(record.levels)[:depth]
    except ProtocolError as exc:
        return {"time": record.time, "seq": record.seq, "levels": [], "error": str(exc)}
    return {
        "time": record.time,
        "seq": record.seq,
        "received": record.received,
        "levels": [
            {
                "price": level.price,
                "orders": level.orders,
                "shares": level.shares,
                "lots": level.shares // LOT if level.shares % LOT == 0 else level.lots,
            }
            for level in levels
        ],
    }


def depth_document(
    client: redis.Redis,
    keys: Keys,
    code: str,
    watcher: DepthWatcher | None = None,
    depth: int = LEVELS,
) -> dict[str, Any]:
    """The ``/api/depth/<code>`` answer: up to ``depth`` levels per side, best first."""
    scanned = latest_books(client, keys, code)
    watched: Found = {}
    if watcher is not None:
        watcher.want(code)
        watched = watcher.latest(code)
    sides = {}
    for side in (BID, OFFER):
        best = newer(scanned.get(side), watched.get(side))
        sides[side] = best[1] if best else None
    return {
        "code": code,
        "bid": _side(sides[BID], depth),
        "offer": _side(sides[OFFER], depth),
    }
