"""The way into Redis: a bounded buffer drained by one flusher task, batches pipelined.

The session appends packed :class:`~ingestor.entries.Entry` values (cheap, never awaits). The
flusher takes up to ``batch_max`` of them at a time and writes them as one burst of
``XADD stream MAXLEN ~ stream_maxlen * ...`` commands, followed by the batch's per-ticker HASH
updates (``frames``, ``trades``, ``prices``, ``last_update``, best bid/offer and lots, the
top-10 depth of each side, and from the last LivePrice ``last_price``, ``prev_close`` and
``day_lots``: once per ticker per batch, not per frame), on a
:class:`~ingestor.resp.RespConnection` that skips the replies instead of parsing them. With
replication R > 1 only a ticker's primary ingestor (:attr:`Sink.primary`, kept up to date by
the roster) updates its HASH, so the counts are not multiplied by R; every replica still
appends the entries, which the writer deduplicates. Up to ``WINDOW`` batches are in flight at
once, so Redis executes one batch while the next is being sent.

Hitting ``MAXLEN`` is never silent: every couple of seconds the flusher compares ``XLEN`` of
the streams it wrote with the cap and counts entries appended while a stream was at its cap
(``maxlen_trims`` in the counters HASH, with a warning in the log).

When Redis is unreachable the batches in flight go back to the head of the buffer and are
retried with backoff while new entries queue behind them (``ingest_buffer_max`` entries in
all); past that, frames are dropped, counted (``overflow``) and reported as one ``overflow``
gap per episode. Gap records, dead letters and counter increments queue separately and are
written ahead of the next batch. A batch whose replies were lost may be written twice after a
retry; the writer drops duplicates on (code, side, seq, exchange time), so a retry can
duplicate but never lose.

Custody (the evidence :mod:`ingestor.continuity` judges hand-overs by): with a ``holder``,
each batch ends with ``HSET custody:<CODE> <holder> <receive time of its last entry>`` per
ticker, every replica included (``<holder>~`` while this run's claim on the ticker is not
judged); :meth:`Sink.await_first` reports the first entry of a newly taken ticker once it is
stored; :meth:`Sink.settle` moves a judged claim's value to ``<holder>`` and
:meth:`Sink.release` writes ``<holder>:released``, each only once the entries and gap records
queued before it are stored. Gap records and due custody changes go before more data.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ingestor.continuity import PENDING, RELEASED
from ingestor.entries import BID, PRICE, TRADE, Entry, bulk
from ingestor.gaps import Overflow
from ingestor.resp import RespConnection, RespError
from pipeline.keys import Keys
from pipeline.records import GapRecord
from stockbit.timestamps import wib_iso

log = logging.getLogger(__name__)

DEADLETTER_MAXLEN = 10_000
GAPS_MAXLEN = 100_000
RAW_KEEP = 2048
"""Bytes of a bad frame kept (base64) in its dead letter."""
WINDOW = 3
"""Batches sent before the first one's replies must be read."""
CAP_CHECK_S = 2.0
"""How often stream lengths are compared with the cap."""
DEPTH_LEVELS = 10
RELEASE = "release"
SETTLE = "settle"
ABANDON = "abandon"
"""Levels per side kept in the ticker HASH (``bid_depth``/``offer_depth``)."""


def _now() -> str:
    return wib_iso(datetime.now(UTC))


def _best(levels: bytes) -> tuple[bytes, bytes]:
    """(price, lots) of the first level of a side, or empty strings for an empty side."""
    bar = levels.find(b"|")
    first = levels if bar < 0 else levels[:bar]
    parts = first.split(b";")
    if len(parts) != 3 or not parts[2].isdigit():
        return b"", b""
    shares = int(parts[2])
    lots = b"%d" % (shares // 100) if shares % 100 == 0 else repr(shares / 100).encode()
    return parts[0], lots


def _top(levels: bytes, depth: int = DEPTH_LEVELS) -> bytes:
    """The level text cut after its ``depth``-th level (``price;orders;shares|...``)."""
    rest = levels.split(b"|", depth)  # one C call; cheaper than a loop of find()
    if len(rest) <= depth:
        return levels
    return levels[: len(levels) - len(rest[-1]) - 1]


def _side_fields(side: bytes) -> bytes:
    """RESP of one side's 4 HSET field/value pairs; the %-slots take the values' lengths and
    bytes (one ``bytes % tuple`` per side per batch instead of eight bulk strings)."""
    names = (b"best_%s" % side, b"best_%s_lots" % side, b"%s_depth" % side, b"%s_depth_at" % side)
    return b"".join(bulk(name) + b"$%d\r\n%s\r\n" for name in names)


def _lots_text(shares: bytes) -> bytes:
    """Shares text → lots text (``123400`` → ``1234``; odd lots as a decimal)."""
    if shares.isdigit():
        whole, rest = divmod(int(shares), 100)
        return b"%d" % whole if rest == 0 else repr(int(shares) / 100).encode()
    try:
        return repr(float(shares) / 100).encode()
    except ValueError:
        return b""


def _price_args(entry: Entry) -> bytes:
    """The HSET arguments of a ticker's last LivePrice: last price, previous close, day lots."""
    last, previous, shares = ([*entry.levels.split(b";"), b"", b""])[:3]
    return b"".join(
        bulk(name) + bulk(value)
        for name, value in (
            (b"last_price", last),
            (b"prev_close", previous),
            (b"day_lots", _lots_text(shares)),
        )
    )


_BID_FIELDS = _side_fields(b"bid")
_OFFER_FIELDS = _side_fields(b"offer")


def _side_args(template: bytes, entry: Entry) -> bytes:
    """A side's HSET arguments from its newest snapshot: best price and lots, top levels, time."""
    levels = entry.levels
    price, lots = _best(levels)
    depth = _top(levels)
    received = entry.received
    return template % (
        len(price),
        price,
        len(lots),
        lots,
        len(depth),
        depth,
        len(received),
        received,
    )


class _Figures:
    """One ticker's share of a batch."""

    __slots__ = ("bid", "frames", "offer", "price", "prices", "received", "trades")

    def __init__(self) -> None:
        self.frames = 0
        self.trades = 0
        self.prices = 0
        self.received = b""
        self.bid: Entry | None = None
        self.offer: Entry | None = None
        self.price: Entry | None = None


def ticker_section(
    keys: Keys, batch: list[Entry], primary: frozenset[str] | None = None
) -> tuple[bytes, int, dict[str, int]]:
    """The per-ticker HASH updates of ``batch``: (RESP commands, their count, entries per code).

    Per ticker: frames (book sides), trades (prints) and prices (LivePrice messages) added,
    ``last_update`` (receive time of its last entry), the best bid/offer price and lots from
    its last snapshot per side, and that snapshot's top :data:`DEPTH_LEVELS` levels with its
    receive time (``bid_depth``, ``bid_depth_at``, ``offer_depth``, ``offer_depth_at``), and
    ``last_price``, ``prev_close``, ``day_lots`` from its last LivePrice. Only the tickers in
    ``primary`` are updated (all when it is None); the entry counts cover every ticker of the batch.
    """
    stats: dict[str, _Figures] = {}
    for entry in batch:
        row = stats.get(entry.code)
        if row is None:
            row = stats[entry.code] = _Figures()
        kind = entry.kind
        if kind == TRADE:
            row.trades += 1
        elif kind == PRICE:
            row.prices += 1
            row.price = entry
        else:
            row.frames += 1
            if kind == BID:
                row.bid = entry
            else:
                row.offer = entry
        row.received = entry.received
    parts: list[bytes] = []
    count = 0
    for code, row in stats.items():
        if primary is not None and code not in primary:
            continue  # a replica: the primary ingestor counts this ticker
        key = bulk(keys.ticker(code).encode())
        if row.frames:
            parts.append(
                b"*4\r\n$7\r\nHINCRBY\r\n%s$6\r\nframes\r\n%s" % (key, bulk(b"%d" % row.frames))
            )
            count += 1
        if row.trades:
            parts.append(
                b"*4\r\n$7\r\nHINCRBY\r\n%s$6\r\ntrades\r\n%s" % (key, bulk(b"%d" % row.trades))
            )
            count += 1
        if row.prices:
            parts.append(
                b"*4\r\n$7\r\nHINCRBY\r\n%s$6\r\nprices\r\n%s" % (key, bulk(b"%d" % row.prices))
            )
            count += 1
        args = [b"$11\r\nlast_update\r\n", bulk(row.received)]
        pairs = 1
        if row.bid is not None:
            args.append(_side_args(_BID_FIELDS, row.bid))
            pairs += 4
        if row.offer is not None:
            args.append(_side_args(_OFFER_FIELDS, row.offer))
            pairs += 4
        if row.price is not None:
            args.append(_price_args(row.price))
            pairs += 3
        parts.append(b"*%d\r\n$4\r\nHSET\r\n%s" % (2 + 2 * pairs, key))
        parts.extend(args)
        count += 1
    appended = {code: row.frames + row.trades + row.prices for code, row in stats.items()}
    return b"".join(parts), count, appended


class Sink:
    """Bounded buffer + pipelined writer of entries, gaps, dead letters and counters."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        source: str,
        *,
        redis_url: str,
        buffer_max: int,
        stream_maxlen: int,
        batch_max: int = 2000,
        holder: str | None = None,
    ) -> None:
        self.client = client
        self.holder = holder
        """This run's custody field (``<id>@<run>``): with it, every batch also records, per
        ticker, the receive time of the last entry stored (``custody:<CODE>``), the evidence
        :mod:`ingestor.continuity` judges hand-overs by. None: not recorded."""
        self._holder_bulk = bulk(holder.encode()) if holder else b""
        self._pending_bulk = bulk(f"{holder}{PENDING}".encode()) if holder else b""
        self._custody_keys: dict[str, bytes] = {}
        self._waiting_first: dict[str, bytes] = {}
        self._firsts: dict[str, bytes] = {}
        self._pending: set[str] = set()
        """Tickers whose custody goes to ``<holder>~`` (this run's claim not judged yet)."""
        self._pending_last: dict[str, bytes] = {}
        self._held: frozenset[str] | None = None
        """The tickers held (custody is written for them only); None: all."""
        self._custody_ops: deque[tuple[int, int, str, tuple[str, ...], tuple[str, ...]]] = deque()
        """(entries that must be stored first, gap records that must be stored first, kind,
        tickers, (release time,) or fields to prune) of releases and settled claims, in order."""
        self._gaps_queued = 0
        self.keys = keys
        self.source = source
        self.redis_url = redis_url
        self.buffer_max = buffer_max
        self.stream_maxlen = stream_maxlen
        self.batch_max = batch_max
        self.primary: frozenset[str] | None = None
        """The tickers whose HASH this ingestor updates (None: all, as when alone); the
        roster sets it through :meth:`set_primary` at every membership change."""
        self.buffer: deque[Entry] = deque()
        self.inflight: deque[tuple[list[Entry], int]] = deque()
        self._inflight_entries = 0
        self.written = 0
        self.dropped = 0
        self.trims = 0
        self.redis_ok = True
        self.last_error: str | None = None
        self.overflow = Overflow(source)
        self._overflowing = False
        self._conn: RespConnection | None = None
        self._gaps: deque[GapRecord] = deque()
        self._dead: deque[tuple[str, bytes, str]] = deque()
        self._counts: Counter[str] = Counter()
        self._tallies: Counter[tuple[str, str]] = Counter()
        self._appended: Counter[str] = Counter()
        self._lengths: dict[str, int] = {}
        self._next_cap_check = time.monotonic() + CAP_CHECK_S
        self._wake = asyncio.Event()
        self._idle = False
        self._stopping = False
        self._give_up = False

    # ---- producers (never await) -----------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Entries not yet acknowledged by Redis."""
        return len(self.buffer) + self._inflight_entries

    def add(self, entry: Entry) -> None:
        """Queue one entry; drop it (counted, as a gap) if the buffer is full."""
        buffer = self.buffer
        if len(buffer) + self._inflight_entries >= self.buffer_max:
            self._drop(entry)
            return
        buffer.append(entry)
        if self._overflowing and len(buffer) <= self.buffer_max // 2:
            self._end_overflow()
        if self._idle:
            self._idle = False
            self._wake.set()

    def set_primary(self, tickers: frozenset[str]) -> None:
        """Update only these tickers' HASHes from the next batch on (the roster's callback)."""
        self.primary = tickers

    def _drop(self, entry: Entry) -> None:
        if not self._overflowing:
            self._overflowing = True
            log.error(
                "Redis buffer full (%d entries): dropping frames until it drains",
                self.buffer_max,
            )
        self.dropped += 1
        self._counts["overflow"] += 1
        self.overflow.drop(entry.code, entry.received.decode())

    def _end_overflow(self) -> None:
        self._overflowing = False
        record = self.overflow.end()
        if record is not None:
            log.warning("buffer has room again: %s", record.detail)
            self.gap(record)

    def gap(self, record: GapRecord) -> None:
        """Queue a gap record for the gaps stream (never dropped)."""
        self._gaps.append(record)
        self._gaps_queued += 1
        self._counts["gaps"] += 1
        self._kick()

    def dead_letter(self, error: str, raw: bytes) -> None:
        """Keep a frame that could not be decoded, with the error (bounded while Redis is down)."""
        self._counts["bad_frames"] += 1
        if len(self._dead) < 1000:
            self._dead.append((error, raw, _now()))
        else:
            self._counts["deadletters_lost"] += 1
        self._kick()

    def count(self, name: str, amount: int = 1) -> None:
        """Add to a deployment-wide counter (the counters HASH), written with the next batch."""
        self._counts[name] += amount
        self._kick()

    def tally(self, code: str, field: str) -> None:
        """Count a frame that is not stored (IEP/IEV, best bid/offer) in ``code``'s HASH field
        ``field``, with the next side write (only for the tickers this ingestor is primary for,
        as the entry counts)."""
        self._tallies[(code, field)] += 1
        self._kick()

    def _kick(self) -> None:
        if self._idle:
            self._idle = False
            self._wake.set()

    # ---- the flusher -----------------------------------------------------------------------

    def _has_work(self) -> bool:
        return bool(
            self.inflight
            or self.buffer
            or self._gaps
            or self._dead
            or self._counts
            or self._tallies
        ) or bool(self._custody_ops)

    async def run(self) -> None:
        """Drain the queues into Redis until :meth:`close`; survives any Redis outage."""
        delay = 0.05
        while True:
            if not self._has_work():
                if self._stopping:
                    return
                self._wake.clear()
                self._idle = True
                with contextlib.suppress(TimeoutError):
                    # Wake now and then anyway, for the cap check.
                    await asyncio.wait_for(self._wake.wait(), CAP_CHECK_S)
                self._idle = False
                if self._appended and time.monotonic() >= self._next_cap_check:
                    await self._guarded(self._check_caps())
                continue
            if await self._guarded(self._flush()):
                delay = 0.05
            else:
                if self._stopping and self._give_up:
                    return
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def _guarded(self, step: Awaitable[None]) -> bool:
        """Run one flusher step; on a Redis failure requeue what was in flight and say so."""
        try:
            await step
        except (RedisError, OSError, RespError, TimeoutError, ValueError) as exc:
            self._requeue()
            if self.redis_ok:
                log.warning("Redis unreachable or failing, buffering: %s", exc)
            self.redis_ok = False
            self.last_error = f"redis: {exc}"[:300]
            return False
        if not self.redis_ok:
            log.warning("Redis reachable again; %d entries still buffered", self.buffered)
            self.redis_ok = True
            self.last_error = None
        return True

    def _requeue(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        while self.inflight:
            batch, _ = self.inflight.pop()
            self.buffer.extendleft(reversed(batch))
        self._inflight_entries = 0

    async def _flush(self) -> None:
        if self._gaps or self._dead or self._counts or self._tallies:
            await self._write_side()
        if self._custody_due():
            await self._write_custody()
        if self.buffer or self.inflight:
            await self._pump()
        if time.monotonic() >= self._next_cap_check and self._appended:
            await self._check_caps()

    async def _pump(self) -> None:
        """Send batches (up to ``WINDOW`` in flight) and collect replies until all is written."""
        if self._conn is None:
            self._conn = await RespConnection.open(self.redis_url)
        conn = self._conn
        buffer = self.buffer
        inflight = self.inflight
        while buffer or inflight:
            while buffer and len(inflight) < WINDOW:
                take = min(len(buffer), self.batch_max)
                popleft = buffer.popleft
                batch = [popleft() for _ in range(take)]
                tickers, updates, per_code = ticker_section(self.keys, batch, self.primary)
                custody, marks = self._custody(batch)
                conn.write(b"".join([e.command for e in batch]) + tickers + custody)
                inflight.append((batch, len(batch) + updates + marks))
                self._inflight_entries += take
                self._appended.update(per_code)
                await conn.drain()
            if self._overflowing and len(buffer) <= self.buffer_max // 2:
                self._end_overflow()
            batch, replies = inflight[0]
            errors = await conn.skip(replies)
            if errors:
                raise RespError(f"{len(errors)} command(s) refused: {errors[0]}")
            inflight.popleft()
            self._inflight_entries -= len(batch)
            self.written += len(batch)
            if self._waiting_first:
                self._note_first(batch)
            if self._gaps or self._custody_due():
                return  # gap records and custody changes go out before more data
            if time.monotonic() >= self._next_cap_check:
                return  # let the cap check and the side queues have a turn

    async def _check_caps(self) -> None:
        """Count entries appended to streams sitting at their MAXLEN cap (trimmed unread)."""
        self._next_cap_check = time.monotonic() + CAP_CHECK_S
        by_stream: Counter[str] = Counter()
        for code, appended in self._appended.items():
            by_stream[self.keys.stream_for(code)] += appended
        self._appended.clear()
        streams = list(by_stream)
        pipe = self.client.pipeline(transaction=False)
        for stream in streams:
            pipe.xlen(stream)
        lengths = await pipe.execute()
        trimmed = 0
        for stream, length in zip(streams, lengths, strict=True):
            appended = by_stream[stream]
            if length >= self.stream_maxlen:
                before = self._lengths.get(stream, 0)
                trimmed += max(0, min(appended, before + appended - int(length)))
            self._lengths[stream] = int(length)
        if trimmed:
            self.trims += trimmed
            self._counts["maxlen_trims"] += trimmed
            log.warning(
                "stream cap STREAM_MAXLEN=%d reached: about %d unread entries trimmed "
                "(%d so far); are the writers keeping up?",
                self.stream_maxlen,
                trimmed,
                self.trims,
            )

    async def _write_side(self) -> None:
        gaps = list(self._gaps)
        dead = list(self._dead)
        counts = dict(self._counts)
        tallies = dict(self._tallies)
        pipe = self.client.pipeline(transaction=False)
        for record in gaps:
            pipe.xadd(self.keys.gaps, record.fields(), maxlen=GAPS_MAXLEN, approximate=True)  # type: ignore[arg-type]
        for error, raw, at in dead:
            fields = {
                "error": error[:500],
                "raw": base64.b64encode(raw[:RAW_KEEP]).decode(),
                "size": str(len(raw)),
                "at": at,
                "ingestor": self.source,
            }
            pipe.xadd(self.keys.deadletter, fields, maxlen=DEADLETTER_MAXLEN, approximate=True)  # type: ignore[arg-type]
        for name, amount in counts.items():
            pipe.hincrby(self.keys.counters, name, amount)
        primary = self.primary
        for (code, field), amount in tallies.items():
            if primary is None or code in primary:
                pipe.hincrby(self.keys.ticker(code), field, amount)
        await pipe.execute()
        for _ in gaps:
            self._gaps.popleft()
        for _ in dead:
            self._dead.popleft()
        for name, amount in counts.items():
            self._counts[name] -= amount
            if self._counts[name] <= 0:
                del self._counts[name]
        for pair, amount in tallies.items():
            self._tallies[pair] -= amount
            if self._tallies[pair] <= 0:
                del self._tallies[pair]

    # ---- custody: the evidence of continuity across owners (ingestor.continuity) ------------

    def _custody(self, batch: list[Entry]) -> tuple[bytes, int]:
        """RESP ``HSET custody:<CODE> <holder> <last receive time>`` per ticker of ``batch``
        (sent after the batch's entries, so a value there means they are stored); the field
        is ``<holder>~`` while this run's claim on the ticker is not judged."""
        if not self._holder_bulk:
            return b"", 0
        # The last receive time per ticker (Entry fields 0 and 3: indexing beats the names).
        last = {entry[0]: entry[3] for entry in batch}
        held = self._held
        if held is not None:
            last = {code: received for code, received in last.items() if code in held}
        keys = self._custody_keys
        field, pending_field = self._holder_bulk, self._pending_bulk
        pending = self._pending
        parts = []
        for code, received in last.items():
            key = keys.get(code)
            if key is None:
                key = keys[code] = bulk(self.keys.custody(code).encode())
            if code in pending:
                self._pending_last[code] = received
                parts.append(b"*4\r\n$4\r\nHSET\r\n%s%s%s" % (key, pending_field, bulk(received)))
            else:
                parts.append(b"*4\r\n$4\r\nHSET\r\n%s%s%s" % (key, field, bulk(received)))
        return b"".join(parts), len(parts)

    def await_first(self, code: str, since: str) -> None:
        """A claim on ``code`` starts: note the receive time of its first entry received at or
        after ``since`` (WIB ISO-8601) once stored (:meth:`first_stored`), and keep its custody
        in the pending field until :meth:`settle`."""
        self._firsts.pop(code, None)
        self._waiting_first[code] = since.encode()
        self._pending.add(code)

    def hold(self, codes: Iterable[str]) -> None:
        """The tickers this ingestor holds now (the roster's set): only their custody is
        written (a frame of a ticker already handed on proves nothing about it)."""
        self._held = frozenset(codes)

    def abandon(self, code: str) -> None:
        """A claim dropped with nothing stored for it since it began: forget it, and the
        pending field if stale frames wrote one (the ticker is no longer held: none will)."""
        self.forget_first(code)
        self._pending.discard(code)
        if self._pending_last.pop(code, None) is not None:
            self._custody_ops.append((0, 0, ABANDON, (code,), ()))
            self._kick()

    def first_stored(self, code: str) -> str | None:
        """The receive time of the first stored entry of ``code`` since :meth:`await_first`."""
        first = self._firsts.get(code)
        return None if first is None else first.decode()

    def forget_first(self, code: str) -> None:
        """Stop noting the first entry of ``code`` (its custody stays pending until settled)."""
        self._waiting_first.pop(code, None)
        self._firsts.pop(code, None)

    def _note_first(self, batch: list[Entry]) -> None:
        waiting = self._waiting_first
        for entry in batch:
            since = waiting.get(entry.code)
            if since is not None and entry.received >= since:  # fixed-width WIB text
                del waiting[entry.code]
                self._firsts[entry.code] = entry.received
                if not waiting:
                    return

    def settle(self, code: str, prune: Iterable[str] = ()) -> None:
        """The claim on ``code`` is judged: once every gap record queued so far is stored, its
        custody moves from ``<holder>~`` to ``<holder>`` (proof for whoever comes next) and
        the earlier holders' ``prune`` fields go (not before: they are the evidence)."""
        self.forget_first(code)
        self._custody_ops.append((0, self._gaps_queued, SETTLE, (code,), tuple(prune)))
        self._kick()

    def release(self, codes: Iterable[str], at: str) -> bool:
        """Record that this ingestor let go of ``codes`` cleanly at ``at`` (WIB ISO-8601):
        written as ``<holder>:released`` once every entry received and every gap record
        queued so far is stored.

        Refused (False) without a holder or while frames are being dropped (an overflow
        episode whose gap is not recorded yet must not be covered by a release).
        """
        chosen = tuple(codes)
        if self.holder is None or self._overflowing:
            return False
        if chosen:
            target = self.written + self.buffered
            self._custody_ops.append((target, self._gaps_queued, RELEASE, chosen, (at,)))
            self._kick()
        return True

    def _custody_due(self) -> bool:
        ops = self._custody_ops
        if not ops:
            return False
        entries, gaps, *_ = ops[0]
        return self.written >= entries and self._gaps_queued - len(self._gaps) >= gaps

    async def _write_custody(self) -> None:
        """Write the releases and settled claims that are due, in order."""
        holder = self.holder or ""
        gaps_stored = self._gaps_queued - len(self._gaps)
        due = []
        for op in self._custody_ops:
            entries, gaps, *_ = op
            if self.written < entries or gaps_stored < gaps:
                break
            due.append(op)
        pipe = self.client.pipeline(transaction=False)
        for _, _, kind, codes, extra in due:
            for code in codes:
                key = self.keys.custody(code)
                if kind == RELEASE:
                    pipe.hset(key, f"{holder}{RELEASED}", extra[0])
                    continue
                if kind == ABANDON:
                    pipe.hdel(key, f"{holder}{PENDING}")
                    continue
                if extra:
                    pipe.hdel(key, *extra)
                # New batches write the judged field from now on; the last pending value
                # moves over (an older pending write still in flight stays below it).
                self._pending.discard(code)
                value = self._pending_last.pop(code, None)
                if value is not None:
                    pipe.hset(key, holder, value)
                pipe.hdel(key, f"{holder}{PENDING}")
        await pipe.execute()
        for _ in due:
            self._custody_ops.popleft()

    # ---- shutdown --------------------------------------------------------------------------

    async def close(self, run_task: asyncio.Task[None], timeout: float) -> bool:
        """Flush everything queued (up to ``timeout`` s) and stop the flusher.

        Returns True when everything reached Redis; False when Redis stayed unreachable and
        entries were left behind (they are logged as lost).
        """
        if self._overflowing:
            self._end_overflow()
        self._stopping = True
        self._kick()
        try:
            await asyncio.wait_for(asyncio.shield(run_task), timeout)
        except TimeoutError:
            self._give_up = True
            run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run_task
            log.error(
                "shutdown: Redis unreachable, %d entries and %d gap record(s) not written",
                self.buffered,
                len(self._gaps),
            )
            return False
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        return not self._has_work()
