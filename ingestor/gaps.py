"""Gap bookkeeping (pure): turning outages into :class:`~pipeline.records.GapRecord` values.

Three sources of gaps, each with its own small state machine:

- :class:`Outage`: the feed connection is down (``disconnect``, ``dead`` connection,
  ``auth_failed``) or alive without data (``stale``, the data watchdog). Opened when a
  connected session ends, authentication fails or the watchdog fires; closed when data flows
  again; :class:`ingestor.protocol.FeedProtocol` drives it.
- :class:`Overflow`: the Redis buffer was full and frames were dropped; one gap spans from the
  first to the last drop of an episode.
- ticker moves are judged by :mod:`ingestor.continuity` from who stored the ticker's frames
  (the ``custody:<CODE>`` hash), driven by :mod:`ingestor.roster`.

Times are ISO-8601 strings in Jakarta time, as everywhere in the stream records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.records import GapRecord

DISCONNECT = "disconnect"
DEAD = "dead"
AUTH_FAILED = "auth_failed"
OVERFLOW = "overflow"
TICKER_MOVED = "ticker_moved"
STALE = "stale"
"""The connection stayed alive (pongs) but delivered no data during continuous trading."""


@dataclass
class Outage:
    """The feed being down for one ingestor: at most one open gap at a time."""

    ingestor: str
    start: str | None = None
    cause: str = ""
    tickers: tuple[str, ...] = ()
    details: list[str] = field(default_factory=list)

    @property
    def open(self) -> bool:
        """True while a gap is running."""
        return self.start is not None

    def begin(
        self, cause: str, at: str, tickers: tuple[str, ...], detail: str = ""
    ) -> GapRecord | None:
        """Note that the feed is down for ``cause``.

        An outage already running keeps its start; if its cause changes to ``auth_failed`` the
        running gap is closed at ``at`` and a new one opened, so authentication failures are
        always visible as their own gap. Returns the record closed that way, if any.
        """
        closed = None
        if self.start is not None:
            if cause != AUTH_FAILED or self.cause == AUTH_FAILED:
                if detail and detail not in self.details:
                    self.details.append(detail)
                self.tickers = tuple(dict.fromkeys((*self.tickers, *tickers)))
                return None
            closed = self.end(at)
        self.start = at
        self.cause = cause
        self.tickers = tickers
        self.details = [detail] if detail else []
        return closed

    def end(self, at: str) -> GapRecord | None:
        """Data flows again at ``at``: close the running gap and return it (None if none)."""
        if self.start is None:
            return None
        record = GapRecord(
            start=self.start,
            end=at,
            cause=self.cause,
            tickers=self.tickers,
            ingestor=self.ingestor,
            detail="; ".join(self.details)[:500],
        )
        self.start = None
        self.cause = ""
        self.tickers = ()
        self.details = []
        return record


@dataclass
class Overflow:
    """An episode of dropped frames (the Redis buffer was full)."""

    ingestor: str
    start: str | None = None
    last: str = ""
    dropped: int = 0
    tickers: dict[str, None] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        """True while an episode is running."""
        return self.start is not None

    def drop(self, code: str, at: str) -> None:
        """One frame of ``code`` received at ``at`` could not be buffered."""
        if self.start is None:
            self.start = at
        self.last = at
        self.dropped += 1
        self.tickers[code] = None

    def end(self) -> GapRecord | None:
        """The buffer has room again: the episode becomes a gap from first to last drop."""
        if self.start is None:
            return None
        record = GapRecord(
            start=self.start,
            end=self.last,
            cause=OVERFLOW,
            tickers=tuple(sorted(self.tickers)),
            ingestor=self.ingestor,
            detail=f"{self.dropped} frame(s) dropped: Redis buffer full",
        )
        self.start = None
        self.last = ""
        self.dropped = 0
        self.tickers = {}
        return record
