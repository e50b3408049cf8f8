"""Which tickers this ingestor streams: the desired set, the live ingestors, the heartbeat.

Every ``poll`` seconds (≤ 0.5 s, so a change made on the web or with ``obpipe tickers`` is
applied within 2 s) one pipeline writes this ingestor's status key (TTL ``status_ttl_s``) and
its heartbeat in the ``ingestors`` ZSET, and reads back the desired SET and the ZSET. An
ingestor whose heartbeat is older than ``live_after`` (3 heartbeats, at least 1.5 s) counts as
dead; the desired tickers are spread over the live ones by rendezvous hashing
(:func:`pipeline.membership.mine`), each to ``replication`` of them.

Moves are make-before-break: a ticker this ingestor loses to a newcomer stays subscribed for
``handover`` seconds more, so the newcomer is already streaming it when it is dropped (the
writer removes the overlap). A ticker gained from an ingestor that died or stopped is a real
hole, from that ingestor's last heartbeat to now: it is reported as a ``ticker_moved`` gap.

Of a ticker's ``replication`` owners the first (highest weight) is its *primary*: only the
primary updates the ticker's HASH (frame and trade counts, best prices, depth), so the counts
are not multiplied by R. When the primary dies, the next owner becomes primary at the first
heartbeat that no longer counts it live.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ingestor.gaps import TICKER_MOVED
from pipeline.keys import Keys
from pipeline.membership import owners
from pipeline.records import GapRecord
from pipeline.status import IngestorStatus
from pipeline.ticker import TickerError, normalize
from stockbit.timestamps import wib_iso

log = logging.getLogger(__name__)

PRUNE_AFTER_S = 60.0
"""Heartbeats older than this are removed from the ZSET (long after they count as dead)."""


@dataclass(frozen=True)
class Moved:
    """Tickers gained from ingestors that are gone: no one streamed them since ``since``."""

    tickers: tuple[str, ...]
    since: float
    departed: tuple[str, ...]


@dataclass
class Plan:
    """The assignment rule with memory (pure): desired tickers × live members → my tickers."""

    me: str
    replicas: int = 1
    live_after: float = 3.0
    handover: float = 2.0
    tickers: tuple[str, ...] = ()
    primary: frozenset[str] = frozenset()
    """The assigned tickers this member is the first owner of (it updates their HASH)."""
    _live: list[str] = field(default_factory=list)
    _scores: dict[str, float] = field(default_factory=dict)
    _desired: frozenset[str] = frozenset()
    _releasing: dict[str, float] = field(default_factory=dict)
    _first: bool = True

    def update(
        self, desired: Iterable[str], members: dict[str, float], now: float
    ) -> tuple[bool, list[Moved]]:
        """Recompute from the desired set and heartbeat times (epoch seconds) at ``now``.

        Returns (whether my tickers changed, the moves that left a hole).
        """
        wanted = frozenset(desired)
        live = sorted(m for m, at in members.items() if at >= now - self.live_after or m == self.me)
        if self.me not in live:
            live.append(self.me)
        assigned: set[str] = set()
        primary: set[str] = set()
        for ticker in wanted:
            who = owners(ticker, live, self.replicas)
            if self.me in who:
                assigned.add(ticker)
                if who[0] == self.me:
                    primary.add(ticker)
        if self._first:
            # Nothing is known about the past: compare with what the others hold right now.
            before_live = [m for m in live if m != self.me]
            before_desired = wanted
            self._first = False
        else:
            before_live = self._live
            before_desired = self._desired
        current = set(self.tickers)
        holes: dict[tuple[float, tuple[str, ...]], list[str]] = {}
        for ticker in sorted(assigned - current):
            if ticker not in before_desired or not before_live:
                continue
            previous = [m for m in owners(ticker, before_live, self.replicas) if m != self.me]
            if not previous or any(m in live for m in previous):
                continue  # a newly wanted ticker, or a hand-over from a live ingestor
            since = max(self._scores.get(m, now) for m in previous)
            holes.setdefault((since, tuple(previous)), []).append(ticker)
        for ticker in current - assigned:
            if ticker in wanted and ticker not in self._releasing:
                self._releasing[ticker] = now + self.handover
        for ticker in list(self._releasing):
            if ticker in assigned or ticker not in wanted or self._releasing[ticker] <= now:
                del self._releasing[ticker]
        effective = tuple(sorted(assigned | set(self._releasing)))
        changed = effective != self.tickers
        self.tickers = effective
        self.primary = frozenset(primary)
        self._live = live
        self._scores = dict(members)
        self._desired = wanted
        moves = [Moved(tuple(t), since, who) for (since, who), t in sorted(holes.items())]
        return changed, moves


class Roster:
    """The heartbeat loop: publishes status, reads the desired set and the members."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        me: str,
        *,
        replicas: int,
        heartbeat_s: float,
        status_ttl_s: float,
        status: Callable[[], IngestorStatus],
        on_gap: Callable[[GapRecord], None],
        handover_s: float = 2.0,
        on_primary: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.me = me
        self.poll = min(heartbeat_s, 0.5)
        self.status_ttl_ms = max(1000, int(status_ttl_s * 1000))
        self.plan = Plan(me, replicas, max(3 * heartbeat_s, 1.5), handover_s)
        self.status = status
        self.on_gap = on_gap
        self.on_primary = on_primary
        self._primary: frozenset[str] | None = None
        self.version = 0
        self.desired: tuple[str, ...] = ()
        self.redis_ok = False
        self._event = asyncio.Event()
        self._invalid: set[str] = set()

    @property
    def tickers(self) -> tuple[str, ...]:
        """The tickers this ingestor should be subscribed to now."""
        return self.plan.tickers

    async def wait_change(self, seen: int) -> int:
        """Wait until the ticker set's version differs from ``seen``; return the new version."""
        while self.version == seen:
            await self._event.wait()
        return self.version

    def _changed(self) -> None:
        self.version += 1
        self._event.set()
        self._event = asyncio.Event()

    async def seed(self, tickers: tuple[str, ...]) -> None:
        """Fill the desired SET from ``TICKERS`` if it is empty (never overwrite edits)."""
        if not tickers:
            return
        if await self.client.scard(self.keys.desired_tickers) == 0:
            await self.client.sadd(self.keys.desired_tickers, *tickers)
            log.info("seeded the desired ticker set with %d ticker(s)", len(tickers))

    async def beat(self) -> None:
        """One heartbeat: publish status, read desired set and members, re-plan."""
        now = time.time()
        now_ms = int(now * 1000)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.ingestor(self.me), self.status().to_json(), px=self.status_ttl_ms)
        pipe.zadd(self.keys.ingestors, {self.me: now_ms})
        pipe.zremrangebyscore(self.keys.ingestors, "-inf", now_ms - int(PRUNE_AFTER_S * 1000))
        pipe.smembers(self.keys.desired_tickers)
        pipe.zrange(self.keys.ingestors, 0, -1, withscores=True)
        replies = await pipe.execute()
        desired = self._valid(cast(set[bytes | str], replies[3]))
        members = {
            (m.decode() if isinstance(m, bytes) else m): float(score) / 1000
            for m, score in cast(list[tuple[bytes | str, float]], replies[4])
        }
        self.desired = desired
        changed, moves = self.plan.update(desired, members, now)
        for move in moves:
            record = GapRecord(
                start=wib_iso(datetime.fromtimestamp(move.since, UTC)),
                end=wib_iso(datetime.fromtimestamp(now, UTC)),
                cause=TICKER_MOVED,
                tickers=move.tickers,
                ingestor=self.me,
                detail=f"taken over from {', '.join(move.departed)} (gone)",
            )
            log.warning(
                "took over %d ticker(s) from departed %s",
                len(move.tickers),
                ", ".join(move.departed),
            )
            self.on_gap(record)
        if self.plan.primary != self._primary:
            self._primary = self.plan.primary
            if self.plan.replicas > 1:
                log.info("primary for %d of %d ticker(s)", len(self._primary), len(self.tickers))
            if self.on_primary is not None:
                self.on_primary(self._primary)
        if changed:
            log.info("now streaming %d ticker(s): %s", len(self.tickers), ",".join(self.tickers))
            self._changed()

    def _valid(self, raw: Iterable[bytes | str]) -> tuple[str, ...]:
        good = []
        for item in raw:
            text = item.decode(errors="replace") if isinstance(item, bytes) else item
            try:
                good.append(normalize(text))
            except TickerError:
                if text not in self._invalid:
                    self._invalid.add(text)
                    log.warning("ignoring invalid ticker %r in the desired set", text[:20])
        return tuple(sorted(set(good)))

    async def run(self) -> None:
        """Beat every ``poll`` seconds until cancelled; Redis outages are ridden out."""
        while True:
            try:
                await self.beat()
                if not self.redis_ok:
                    self.redis_ok = True
            except (RedisError, OSError) as exc:
                if self.redis_ok:
                    log.warning(
                        "heartbeat failed (keeping %d ticker(s)): %s", len(self.tickers), exc
                    )
                self.redis_ok = False
            await asyncio.sleep(self.poll)

    async def leave(self, final: IngestorStatus) -> None:
        """Publish the final status and leave the ZSET so the others take over at once."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.ingestor(self.me), final.to_json(), px=self.status_ttl_ms)
        pipe.zrem(self.keys.ingestors, self.me)
        await pipe.execute()
