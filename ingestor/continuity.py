"""Continuity of a ticker across owners, proven from what was stored, never assumed (pure).

When a ticker becomes this ingestor's — taken from another ingestor (hand-over, crash,
clean stop) or at this ingestor's (re)start — it records a ``ticker_moved`` gap from the
ticker's last covered moment to its own first stored frame, **unless** the stored data shows
continuity. The evidence is the ``custody:<CODE>`` HASH (:meth:`pipeline.keys.Keys.custody`),
one pair of fields per *holder* (``<ingestor id>@<run>``, a run being one process start):

- ``<holder>`` — receive time of the last entry of the ticker that holder stored, written by
  its sink in the same pipelined burst as the entries, after them (so a value there means
  every entry of that holder up to it is in the stream);
- ``<holder>:released`` — when that holder let go of the ticker *cleanly*: a hand-over
  drop or a SIGTERM stop with the connection flowing (no outage running, no buffer
  overflow), written only once every entry it received before is stored;
- ``<holder>~`` — as ``<holder>``, while that holder's own claim on the ticker is not judged
  yet: its frames prove nothing about the time before them. When the verdict (and its gap
  record, if any) is stored, the value moves to ``<holder>`` and this field goes.

A holder *covered* the ticker until the latest of these. Continuity is shown when some
other holder with a judged claim covered it until at least this ingestor's first stored
frame of it: the two owners' frames overlap in the stream, or the old owner was still
holding it (clean release) when the newcomer's data began. Otherwise the gap runs from the
latest covered moment of any judged holder (of an unjudged one if there is none) to the
first stored frame here, so a claimant that died before judging its own takeover leaves no
silent hole either. An unreleased holder may still be handing over or judging, so the
verdict waits for it up to :data:`PATIENCE_S` after the claim (a crashed one never answers;
the gap is then recorded). Earlier runs of this very ingestor id are dead by definition
(this run replaced them), so they are never waited for.

The gap's ``detail`` says which case it was: ``crash`` (the last holder is gone and never
released it), ``restart`` (the last holder was an earlier run of this ingestor),
``hand-over`` (a live holder neither overlapped nor released in time) or ``released`` (a
clean release, but nobody held the ticker between that and the first frame here). Its start
is never before the Jakarta day of its end (the market never trades across midnight WIB, so
a ticker last held yesterday is only a gap from today's midnight).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ingestor.gaps import TICKER_MOVED
from pipeline.days import day_of, start_of
from pipeline.records import GapRecord
from stockbit.errors import ProtocolError
from stockbit.timestamps import WIB, parse_iso, wib_iso

RELEASED = ":released"
"""Suffix of a holder's release field in the custody HASH."""
PENDING = "~"
"""Suffix of a holder's field while its own claim on the ticker is not judged yet."""
PATIENCE_S = 20.0
"""How long a claim waits for an unreleased earlier holder to overlap or release."""
HANDOVER_MAX_S = 10.0
"""How long a releasing owner keeps a ticker at most while waiting for the newcomer's data
(shorter than :data:`PATIENCE_S`, so the newcomer sees its release before judging)."""
CLUSTER_S = 5.0
"""Holes of one beat whose starts lie within this of each other become one gap record."""

CRASH = "crash"
RESTART = "restart"
HAND_OVER = "hand-over"
RELEASED_CASE = "released"


def holder_id(ingestor: str, run: str) -> str:
    """The custody field name of one run of an ingestor."""
    return f"{ingestor}@{run}"


@dataclass(frozen=True)
class Custody:
    """What one holder stored of a ticker."""

    holder: str
    stored: datetime | None = None
    """Receive time of the last entry it stored."""
    released: datetime | None = None
    """When it let go cleanly (None: never, or not yet)."""
    pending: datetime | None = None
    """Receive time of the last entry it stored while its own claim was not judged."""

    @property
    def ingestor(self) -> str:
        """The ingestor id (the holder without its run)."""
        return self.holder.rpartition("@")[0] or self.holder

    @property
    def judged(self) -> bool:
        """Whether its claim on the ticker is judged (its frames prove what came before)."""
        return self.pending is None or (self.stored is not None and self.stored >= self.pending)

    @property
    def covered_until(self) -> datetime | None:
        """The last moment this holder is known to have captured the ticker."""
        times = [t for t in (self.stored, self.released, self.pending) if t is not None]
        return max(times) if times else None

    @property
    def fields(self) -> tuple[str, str, str]:
        """Its field names in the custody HASH."""
        return (self.holder, f"{self.holder}{RELEASED}", f"{self.holder}{PENDING}")


def _time(text: str) -> datetime | None:
    try:
        return parse_iso(text)
    except (ProtocolError, ValueError):
        return None


def parse_custody(fields: Mapping[str, str]) -> dict[str, Custody]:
    """The custody HASH (decoded) → holder → :class:`Custody` (unreadable values ignored)."""
    stored: dict[str, datetime | None] = {}
    released: dict[str, datetime | None] = {}
    pending: dict[str, datetime | None] = {}
    for name, value in fields.items():
        if name.endswith(RELEASED):
            released[name[: -len(RELEASED)]] = _time(value)
        elif name.endswith(PENDING):
            pending[name[: -len(PENDING)]] = _time(value)
        else:
            stored[name] = _time(value)
    holders = sorted(set(stored) | set(released) | set(pending))
    return {h: Custody(h, stored.get(h), released.get(h), pending.get(h)) for h in holders}


@dataclass(frozen=True)
class Claim:
    """A ticker this ingestor took at ``since`` whose continuity is not judged yet."""

    ticker: str
    since: datetime


@dataclass(frozen=True)
class Hole:
    """No continuity: the ticker was (possibly) not captured from ``start`` to ``end``."""

    ticker: str
    start: datetime
    end: datetime
    case: str
    detail: str


@dataclass(frozen=True)
class Verdict:
    """The judgement of one claim: ``hole`` is None when continuity is shown."""

    ticker: str
    hole: Hole | None
    reason: str
    prune: tuple[str, ...] = ()
    """Holders whose fields are no longer needed (dead, released or earlier runs)."""


@dataclass
class Judge:
    """Judges claims for one run of one ingestor (``holder`` = ``<id>@<run>``)."""

    holder: str
    patience_s: float = PATIENCE_S
    claims: dict[str, Claim] = field(default_factory=dict)

    @property
    def ingestor(self) -> str:
        """This ingestor's id."""
        return self.holder.rpartition("@")[0] or self.holder

    def claim(self, ticker: str, since: datetime) -> Claim:
        """Start judging ``ticker``, taken at ``since`` (a claim already open is kept)."""
        return self.claims.setdefault(ticker, Claim(ticker, since))

    def drop(self, tickers: Iterable[str]) -> None:
        """Stop judging these (no longer this ingestor's: the next owner judges them)."""
        for ticker in tickers:
            self.claims.pop(ticker, None)

    def judge(
        self,
        ticker: str,
        first: datetime | None,
        custody: Mapping[str, Custody],
        live: Iterable[str],
        now: datetime,
        *,
        runs: Mapping[str, str] | None = None,
        final: bool = False,
    ) -> Verdict | None:
        """Judge the claim on ``ticker`` given this ingestor's ``first`` stored frame of it
        (None: none yet), its custody HASH, the live ingestor ids and each one's current run
        (``runs``: id → holder; a holder of that id with another run is dead); None = not
        yet. ``final`` (a clean stop) waits for nobody: what is not proven now is a gap.

        A verdict closes the claim.
        """
        claim = self.claims.get(ticker)
        if claim is None:
            return None
        verdict = self._judge(
            claim, first, custody, _Liveness(self, frozenset(live), runs or {}), now, final=final
        )
        if verdict is not None:
            del self.claims[ticker]
        return verdict

    def _judge(
        self,
        claim: Claim,
        first: datetime | None,
        custody: Mapping[str, Custody],
        live: _Liveness,
        now: datetime,
        *,
        final: bool = False,
    ) -> Verdict | None:
        others = [c for h, c in custody.items() if h != self.holder and c.covered_until]
        ticker = claim.ticker
        if not others:
            return Verdict(ticker, None, "no earlier holder")
        if first is None:
            return None  # nothing stored here yet: nothing to compare
        finished = tuple(c.holder for c in others if c.released is not None or not live.alive(c))
        judged = [c for c in others if c.judged]
        overlap = [c for c in judged if c.covered_until and c.covered_until >= first]
        if overlap:
            best = max(overlap, key=lambda c: c.covered_until or first)
            how = "clean release" if best.released and best.released >= first else "overlap"
            return Verdict(ticker, None, f"{how} with {best.ingestor}", finished)
        # An unreleased holder not known dead may still overlap, release or judge (one that
        # left the membership may still be streaming: a make-before-break stop).
        waiting = [c for c in others if c.released is None and not live.dead(c)]
        if waiting and not final and now < claim.since + timedelta(seconds=self.patience_s):
            return None  # an earlier holder may still overlap or release
        last = max(others, key=lambda c: c.covered_until or first)
        proven = max(judged or others, key=lambda c: c.covered_until or first)
        until = proven.covered_until or first
        start = max(until, start_of(day_of(first)))
        case, detail = _case(last, self.ingestor, live.alive(last), until, first)
        hole = Hole(ticker, min(start, first), first, case, detail)
        return Verdict(ticker, hole, detail, finished)


def _clock(moment: datetime) -> str:
    return moment.astimezone(WIB).strftime("%H:%M:%S.%f")[:-3]


@dataclass(frozen=True)
class _Liveness:
    judge: Judge
    live: frozenset[str]
    runs: Mapping[str, str]

    def dead(self, c: Custody) -> bool:
        """Known dead: an earlier run of this ingestor, or of one now running another run."""
        return c.ingestor == self.judge.ingestor or self.runs.get(c.ingestor, c.holder) != c.holder

    def alive(self, c: Custody) -> bool:
        """In the membership with this very run."""
        return c.ingestor in self.live and not self.dead(c)


def _case(last: Custody, me: str, alive: bool, until: datetime, first: datetime) -> tuple[str, str]:
    """The case of a hole (which kind of ending the last holder had) and its detail text."""
    released = last.released is not None and last.released >= (last.stored or last.released)
    when = f"covered until {_clock(until)}, first frame here {_clock(first)}"
    if not last.judged:
        if last.ingestor == me:
            return RESTART, (
                "restart: the previous run took it over but ended before judging that, "
                f"no proven overlap; {when}"
            )
        if alive:
            return HAND_OVER, (
                f"hand-over from live {last.ingestor}: it had not judged its own takeover, "
                f"no proven overlap; {when}"
            )
        return CRASH, (
            f"crash: {last.ingestor} took it over but ended before judging that, "
            f"no proven overlap; {when}"
        )
    if last.ingestor == me:
        if released:
            return RESTART, f"restart: the previous run released it cleanly; {when}"
        return RESTART, f"restart: the previous run ended without a clean release; {when}"
    if released:
        return RELEASED_CASE, (
            f"released cleanly by {last.ingestor} before the first frame here; {when}"
        )
    if alive:
        return HAND_OVER, (
            f"hand-over from live {last.ingestor}: no overlap, no clean release; {when}"
        )
    return CRASH, f"crash: {last.ingestor} gone, no clean release, no overlap; {when}"


def gap_records(holes: Iterable[Hole], ingestor: str) -> list[GapRecord]:
    """Holes → gap records: one per case and earlier holder, with starts within
    :data:`CLUSTER_S` of each other (a crash of an ingestor holding 900 tickers is a few
    records, not 900), each from its earliest start to its latest end."""
    groups: dict[str, list[Hole]] = {}
    for hole in holes:
        groups.setdefault(hole.detail.split(";", 1)[0], []).append(hole)
    out: list[GapRecord] = []
    for group in groups.values():
        group.sort(key=lambda h: h.start)
        cluster: list[Hole] = []
        for hole in group:
            if cluster and hole.start - cluster[0].start > timedelta(seconds=CLUSTER_S):
                out.append(_record(cluster, ingestor))
                cluster = []
            cluster.append(hole)
        out.append(_record(cluster, ingestor))
    out.sort(key=lambda r: r.start)
    return out


def _record(cluster: list[Hole], ingestor: str) -> GapRecord:
    start = min(h.start for h in cluster)
    end = max(h.end for h in cluster)
    latest = max(cluster, key=lambda h: h.end)
    return GapRecord(
        start=wib_iso(start),
        end=wib_iso(end),
        cause=TICKER_MOVED,
        tickers=tuple(sorted({h.ticker for h in cluster})),
        ingestor=ingestor,
        detail=latest.detail if len(cluster) == 1 else _span_detail(latest.detail, cluster),
    )


def _span_detail(detail: str, cluster: list[Hole]) -> str:
    case = detail.split(";", 1)[0]
    return f"{case}; {len(cluster)} tickers, each from its last covered moment to its first frame"
