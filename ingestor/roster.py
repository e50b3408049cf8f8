"""Which tickers this ingestor streams: the desired set, the live ingestors, the heartbeat.

Every ``poll`` seconds (≤ 0.5 s, so a change made on the web or with ``obpipe tickers`` is
applied within 2 s) one pipeline writes this ingestor's status key (TTL ``status_ttl_s``) and
its heartbeat in the ``ingestors`` ZSET, and reads back the desired SET and the ZSET. An
ingestor whose heartbeat is older than ``live_after`` (3 heartbeats, at least 1.5 s) counts as
dead; the desired tickers are spread over the live ones by rendezvous hashing
(:func:`pipeline.membership.mine`), each to ``replication`` of them.

Moves are make-before-break, with proof: a ticker this ingestor loses to a newcomer stays
subscribed at least ``handover`` seconds more, and until another holder has stored a frame
of it received since the hand-over began (at most :data:`~ingestor.continuity.HANDOVER_MAX_S`);
then it is dropped and, if the connection was flowing, released cleanly (the
``<holder>:released`` field of ``custody:<CODE>``). The writer removes the overlap.

Continuity is proven, never assumed (:mod:`ingestor.continuity`): every ticker this
ingestor takes — from a newcomer's hand-over, a stopped or crashed ingestor, or at its own
(re)start — is *claimed*, and once its first frame here is stored, judged against the
ticker's custody HASH: no gap if another holder's stored frames reach at least as late (the
streams overlap) or it released the ticker cleanly after that first frame; otherwise a
``ticker_moved`` gap from the last covered moment to the first frame here, saying in its
detail whether it was a crash, a restart, a hand-over without overlap or a release before
anyone took over. A ticker newly added to the desired set is not claimed (nothing was
captured before); one removed from it has its custody HASH deleted.

Of a ticker's ``replication`` owners the first (highest weight) is its *primary*: only the
primary updates the ticker's HASH (frame and trade counts, best prices, depth), so the counts
are not multiplied by R. When the primary dies, the next owner becomes primary at the first
heartbeat that no longer counts it live.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ingestor.continuity import (
    HANDOVER_MAX_S,
    PENDING,
    RELEASED,
    Custody,
    Judge,
    gap_records,
    parse_custody,
)
from pipeline.keys import Keys
from pipeline.membership import owners
from pipeline.records import GapRecord
from pipeline.status import IngestorStatus
from pipeline.ticker import TickerError, normalize
from stockbit.errors import ProtocolError
from stockbit.timestamps import parse_iso, wib_iso

if TYPE_CHECKING:
    from ingestor.sink import Sink

log = logging.getLogger(__name__)

PRUNE_AFTER_S = 60.0
"""Heartbeats older than this are removed from the ZSET (long after they count as dead)."""


@dataclass(frozen=True)
class Changes:
    """What one :meth:`Plan.update` changed."""

    changed: bool
    """Whether the ticker set to subscribe changed."""
    acquired: tuple[str, ...] = ()
    """Tickers newly this ingestor's that were wanted before: their continuity is judged."""
    handed_over: tuple[str, ...] = ()
    """Tickers dropped after a hand-over (still wanted, now someone else's)."""
    unwanted: tuple[str, ...] = ()
    """Tickers dropped because they left the desired set."""


@dataclass
class Plan:
    """The assignment rule with memory (pure): desired tickers × live members → my tickers."""

    me: str
    replicas: int = 1
    live_after: float = 3.0
    handover: float = 2.0
    handover_max: float = HANDOVER_MAX_S
    tickers: tuple[str, ...] = ()
    primary: frozenset[str] = frozenset()
    """The assigned tickers this member is the first owner of (it updates their HASH)."""
    live: tuple[str, ...] = ()
    """The members counted live at the last update (this one included)."""
    _desired: frozenset[str] = frozenset()
    _releasing: dict[str, float] = field(default_factory=dict)
    _first: bool = True

    @property
    def releasing(self) -> Mapping[str, float]:
        """Tickers being handed over → when the hand-over began (epoch seconds)."""
        return self._releasing

    def update(
        self,
        desired: Iterable[str],
        members: Mapping[str, float],
        now: float,
        handed: Collection[str] = (),
    ) -> Changes:
        """Recompute from the desired set and heartbeat times (epoch seconds) at ``now``.

        ``handed`` are the tickers being handed over that another holder has stored frames
        of since the hand-over began: they go once ``handover`` has passed; the others stay
        up to ``handover_max``.
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
        # At the first update nothing is known about the past: every ticker taken is judged
        # (a restart, or a newcomer taking over), as if it had been wanted all along.
        before = wanted if self._first else self._desired
        self._first = False
        current = set(self.tickers)
        acquired = tuple(sorted(t for t in assigned - current if t in before))
        for ticker in current - assigned:
            if ticker in wanted and ticker not in self._releasing:
                self._releasing[ticker] = now
        for ticker, since in list(self._releasing.items()):
            done = now >= since + self.handover and (
                ticker in handed or now >= since + self.handover_max
            )
            if ticker in assigned or ticker not in wanted or done:
                del self._releasing[ticker]
        effective = tuple(sorted(assigned | set(self._releasing)))
        dropped = current - set(effective)
        changed = effective != self.tickers
        self.tickers = effective
        self.primary = frozenset(primary)
        self.live = tuple(live)
        self._desired = wanted
        return Changes(
            changed,
            acquired,
            tuple(sorted(t for t in dropped if t in wanted)),
            tuple(sorted(t for t in dropped if t not in wanted)),
        )


def _decode(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _custody(reply: Any) -> dict[str, Custody]:
    fields: dict[Any, Any] = reply if isinstance(reply, dict) else {}
    return parse_custody({_decode(k): _decode(v) for k, v in fields.items()})


def _instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_iso(text)
    except (ProtocolError, ValueError):
        return None


def taken_since(custody: Mapping[str, Custody], holder: str, since: datetime) -> bool:
    """Whether a holder other than ``holder`` stored a frame received at or after ``since``
    (its claim judged or not: the newcomer of a hand-over is still judging it)."""
    return any(
        any(t is not None and t >= since for t in (c.stored, c.pending))
        for h, c in custody.items()
        if h != holder
    )


class Roster:
    """The heartbeat loop: publishes status, reads the desired set and the members, and
    judges the continuity of the tickers it takes (with a ``sink`` that has a holder)."""

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
        sink: Sink | None = None,
        flowing: Callable[[], bool] | None = None,
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
        self.sink = sink
        self.flowing = flowing or (lambda: True)
        """Whether the feed connection is up with data flowing (no outage running): only
        then is a ticker handed over released cleanly."""
        holder = sink.holder if sink is not None else None
        self.judge = Judge(holder) if holder else None
        self.leaving = False
        """Set by :meth:`depart`: the heartbeat no longer puts this ingestor in the ZSET."""
        self.runs: dict[str, str] = {}
        """Each ingestor id's current run (its custody holder), read at every heartbeat."""
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

    @property
    def peers(self) -> tuple[str, ...]:
        """The other ingestors counted live at the last heartbeat."""
        return tuple(m for m in self.plan.live if m != self.me)

    def releasable(self) -> tuple[str, ...]:
        """The tickers held now whose continuity is settled (a release may cover them)."""
        pending = self.judge.claims if self.judge is not None else {}
        return tuple(t for t in self.tickers if t not in pending)

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
        """One heartbeat: publish status, read desired set and members, re-plan, and judge
        the continuity of the tickers taken (reading their custody HASHes)."""
        now = time.time()
        now_ms = int(now * 1000)
        releasing = dict(self.plan.releasing)
        claimed = list(self.judge.claims) if self.judge is not None else []
        looked_up = [*releasing, *claimed]
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.ingestor(self.me), self.status().to_json(), px=self.status_ttl_ms)
        if self.leaving:
            pipe.zrem(self.keys.ingestors, self.me)
        else:
            pipe.zadd(self.keys.ingestors, {self.me: now_ms})
        pipe.zremrangebyscore(self.keys.ingestors, "-inf", now_ms - int(PRUNE_AFTER_S * 1000))
        pipe.smembers(self.keys.desired_tickers)
        pipe.zrange(self.keys.ingestors, 0, -1, withscores=True)
        holder = self.sink.holder if self.sink is not None else None
        if holder:
            pipe.hset(self.keys.ingestor_runs, self.me, holder)
        pipe.hgetall(self.keys.ingestor_runs)
        for ticker in looked_up:
            pipe.hgetall(self.keys.custody(ticker))
        replies = await pipe.execute()
        desired = self._valid(cast(set[bytes | str], replies[3]))
        members = {
            _decode(m): float(score) / 1000
            for m, score in cast(list[tuple[bytes | str, float]], replies[4])
        }
        rest = replies[6:] if holder else replies[5:]
        self.runs = {_decode(k): _decode(v) for k, v in cast(dict[Any, Any], rest[0]).items()}
        custody = {t: _custody(r) for t, r in zip(looked_up, rest[1:], strict=True)}
        self.desired = desired
        handed = {
            t
            for t, since in releasing.items()
            if taken_since(custody[t], holder or "", datetime.fromtimestamp(since, UTC))
        }
        changes = self.plan.update(desired, members, now, handed)
        if self.plan.primary != self._primary:
            self._primary = self.plan.primary
            if self.plan.replicas > 1:
                log.info("primary for %d of %d ticker(s)", len(self._primary), len(self.tickers))
            if self.on_primary is not None:
                self.on_primary(self._primary)
        if changes.changed:
            log.info("now streaming %d ticker(s): %s", len(self.tickers), ",".join(self.tickers))
            self._changed()
        if self.sink is not None:
            self.sink.hold(self.tickers)
        # The claims are registered before the first await here, so before the subscription
        # the change above wakes can go out.
        await self._continuity(changes, claimed, custody, datetime.fromtimestamp(now, UTC))
        gone_runs = [i for i in self.runs if i not in members and i != self.me]
        if gone_runs:  # their ids left the ZSET (pruned a minute after their last beat)
            await self.client.hdel(self.keys.ingestor_runs, *gone_runs)

    async def _continuity(
        self,
        changes: Changes,
        claimed: list[str],
        custody: Mapping[str, Mapping[str, Custody]],
        moment: datetime,
    ) -> None:
        """Claims for the tickers taken, clean releases for those handed over, verdicts for
        the claims read this beat (gaps when continuity is not shown), custody clean-up."""
        judge, sink = self.judge, self.sink
        if judge is None or sink is None:
            return
        at = wib_iso(moment)
        unsettled = set(judge.claims)
        for ticker in changes.acquired:
            judge.claim(ticker, moment)
            sink.await_first(ticker, at)
        # A claim on a ticker handed on is still judged here if a frame of it was stored (its
        # hole is this claim's to record); without one there is nothing to judge.
        held, wanted = set(self.plan.tickers), set(self.desired)
        gone = [
            t
            for t in judge.claims
            if t not in held and (t not in wanted or sink.first_stored(t) is None)
        ]
        judge.drop(gone)
        for ticker in gone:
            sink.abandon(ticker)
        clean = [t for t in changes.handed_over if t not in unsettled]
        if clean and not (self.flowing() and sink.release(clean, at)):
            log.info("handed over %d ticker(s) without a clean release", len(clean))
        self._verdicts(claimed, custody, moment)
        if changes.unwanted:
            await self.client.delete(*(self.keys.custody(t) for t in changes.unwanted))

    def _verdicts(
        self,
        claimed: Iterable[str],
        custody: Mapping[str, Mapping[str, Custody]],
        moment: datetime,
        final: bool = False,
    ) -> None:
        """Judge the claims whose custody was read: gap records for holes, then settle each
        (after its gap record: the pending custody becomes proof, the evidence it replaces
        goes)."""
        judge, sink = self.judge, self.sink
        if judge is None or sink is None:
            return
        holes = []
        judged: list[tuple[str, list[str]]] = []
        for ticker in claimed:
            first = _instant(sink.first_stored(ticker))
            verdict = judge.judge(
                ticker, first, custody[ticker], self.plan.live, moment, runs=self.runs, final=final
            )
            if verdict is None:
                continue
            suffixes = ("", RELEASED, PENDING)
            judged.append((ticker, [f"{h}{s}" for h in verdict.prune for s in suffixes]))
            if verdict.hole is not None:
                holes.append(verdict.hole)
            else:
                log.debug("%s: continuity shown (%s)", ticker, verdict.reason)
        for record in gap_records(holes, self.me):
            log.warning(
                "no continuity for %d ticker(s) taken over (%s): gap %s to %s",
                len(record.tickers),
                record.detail.split(";", 1)[0],
                record.start,
                record.end,
            )
            self.on_gap(record)
        for ticker, prune in judged:
            sink.settle(ticker, prune)

    async def conclude(self) -> None:
        """At a clean stop, judge every open claim now, waiting for nobody: a claim left open
        would leave its hole to a next owner that may never come. (A claim without a stored
        frame has nothing to judge; the earlier holders' evidence stays for the next one.)"""
        judge = self.judge
        if judge is None or not judge.claims:
            return
        claimed = list(judge.claims)
        pipe = self.client.pipeline(transaction=False)
        for ticker in claimed:
            pipe.hgetall(self.keys.custody(ticker))
        replies = await pipe.execute()
        custody = {t: _custody(r) for t, r in zip(claimed, replies, strict=True)}
        self._verdicts(claimed, custody, datetime.now(UTC), final=True)

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

    async def depart(self) -> None:
        """Leave the ZSET but keep streaming (a make-before-break stop): the others take the
        tickers over while this ingestor still holds them; the heartbeat stays out."""
        self.leaving = True
        await self.client.zrem(self.keys.ingestors, self.me)

    async def taken_over(self, since: float) -> bool:
        """Whether every ticker held now has another holder that stored a frame of it
        received at or after ``since`` (epoch seconds)."""
        holder = self.sink.holder if self.sink is not None else None
        tickers = self.tickers
        if holder is None or not tickers:
            return True
        pipe = self.client.pipeline(transaction=False)
        for ticker in tickers:
            pipe.hgetall(self.keys.custody(ticker))
        moment = datetime.fromtimestamp(since, UTC)
        replies = await pipe.execute()
        return all(taken_since(_custody(r), holder, moment) for r in replies)

    async def leave(self, final: IngestorStatus) -> None:
        """Publish the final status and leave the ZSET so the others take over at once."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.ingestor(self.me), final.to_json(), px=self.status_ttl_ms)
        pipe.zrem(self.keys.ingestors, self.me)
        await pipe.execute()
