"""The ingestor's side of the Stockbit feed, sans-I/O: frames and the clock in, events out.

:class:`FeedProtocol` is the whole connection state machine of one ingestor process, across
its connections, with no socket, no task, no logger and no clock of its own (the style of the
``websockets`` library's ``Protocol``, and of :mod:`simulator.session` on the other side of
the wire). The shell (:mod:`ingestor.session`, :mod:`ingestor.service`) feeds it:

- :meth:`~FeedProtocol.connect` when a socket is open: the auth frame and the first subscribe
  frame come back as :class:`Authenticate` and :class:`Subscribe` events to send;
- :meth:`~FeedProtocol.receive` with every received frame, the monotonic time and the frame's
  receive time (WIB ISO-8601 bytes): order-book, trade and live-price frames come back as
  :class:`~ingestor.entries.Entry` values (through the entry packer's fast paths when they apply),
  IEP/IEV and best-bid-offer frames as :class:`Tally` (counted per ticker, never stored), the
  rest as :class:`BadFrame`, :class:`ServerError`, :class:`AuthFailed` (a 401 error frame),
  and, on a connection's first frame that is not an error, :class:`GapClosed` (the outage the
  last disconnect opened) and :class:`DataResumed`;
- :meth:`~FeedProtocol.tick` at :meth:`~FeedProtocol.wakeup_at`: :class:`PingDue` every
  ``ping_interval_s`` and :class:`ConnectionDead` after ``dead_after_s`` without any frame
  (pongs count as life); and the *data watchdog*: while the shell says continuous trading is
  on, a connection that delivers no data frame (book, trade, live price) for
  ``stale_resubscribe_s`` gets a :class:`Resubscribe` and a ``stale`` :class:`GapOpened`,
  and after ``stale_reconnect_s`` a :class:`ConnectionStale` (end it and reconnect);
- :meth:`~FeedProtocol.set_tickers` when the roster's set changes: a new :class:`Subscribe`;
- :meth:`~FeedProtocol.connection_lost`, :meth:`~FeedProtocol.auth_failed` and
  :meth:`~FeedProtocol.shutdown` when the shell ends a connection, is refused, or stops:
  :class:`GapOpened` / :class:`GapClosed` (the bookkeeping is :class:`ingestor.gaps.Outage`).

The hot path is :meth:`~FeedProtocol.receive` on an order-book frame: it returns a one-tuple
holding the packed entry and allocates nothing else, so the shell's loop stays as cheap as
when this logic lived in it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ingestor import gaps
from ingestor.credentials import Credentials
from ingestor.entries import Entry, EntryPacker
from pipeline import records
from pipeline.records import GapRecord
from stockbit import request, wrapper
from stockbit.errors import ProtocolError
from stockbit.messages import (
    UNAUTHORIZED,
    BestBidOffer,
    ErrorFrame,
    IepIev,
    LivePrice,
    OrderBook,
    Pong,
    RunningTrade,
    TradeBatch,
    Unknown,
)

_ERROR_PREFIX = b"\x3a"
"""First byte of a wrapper carrying field 7 (an error frame, e.g. the 401) with a length."""

_UNUSED_RECEIVED = datetime(1970, 1, 1, tzinfo=UTC)
"""Stands in for the receive time when building a record: :meth:`EntryPacker.record` replaces
it by the frame's own receive time, so no clock needs to be read here."""

TEXT_FRAME_ERROR = "text frame where a binary protobuf frame was expected"

_NOT_DATA = (Pong, ErrorFrame, Unknown)
"""Decoded frames that are no sign of a live subscription for the data watchdog."""


@dataclass
class Stats:
    """Counters the protocol keeps for the status key (read by the heartbeat)."""

    frames: int = 0
    bad_frames: int = 0
    server_errors: int = 0
    last_frame: bytes = b""
    """Receive time of the last frame of any kind (empty before the first)."""


# ---- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A frame the shell must send on the socket now."""

    frame: bytes = field(repr=False)
    """The bytes to send (auth and subscribe frames carry credentials: never shown)."""


@dataclass(frozen=True, slots=True)
class Authenticate(Outgoing):
    """The auth frame, the first frame on a new connection."""


@dataclass(frozen=True, slots=True)
class Subscribe(Outgoing):
    """A subscribe frame carrying the complete ticker set (on connect and on every change)."""

    tickers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Resubscribe(Subscribe):
    """The data watchdog's subscribe frame: the connection lives but brings no data."""


@dataclass(frozen=True, slots=True)
class PingDue(Outgoing):
    """Time for the application-level ping (``frame`` is :data:`stockbit.request.PING`)."""


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """The server sent the 401 error frame: the credentials are refused, end the connection."""

    detail: str


@dataclass(frozen=True, slots=True)
class ConnectionDead:
    """No frame at all (data or pong) for ``dead_after_s``: the connection is dead."""

    silent_for: float
    detail: str

    @property
    def cause(self) -> str:
        """The gap cause of this ending (``dead``)."""
        return gaps.DEAD


@dataclass(frozen=True, slots=True)
class ConnectionStale(ConnectionDead):
    """Pongs arrive but no data frame for ``stale_reconnect_s`` of continuous trading: end
    the connection and reconnect (the ``stale`` gap is already open)."""

    @property
    def cause(self) -> str:
        """The gap cause of this ending (``stale``)."""
        return gaps.STALE


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame that cannot be decoded or placed: dead-letter it (it was counted)."""

    error: str
    raw: bytes = field(repr=False)
    number: int
    """How many bad frames so far, this one included (to thin out the log)."""


@dataclass(frozen=True, slots=True)
class ServerError:
    """An error frame other than 401 (counted; the connection goes on)."""

    code: int
    message: str


@dataclass(frozen=True, slots=True)
class Tally:
    """A frame that is only counted, in its ticker's HASH field ``field`` (not stored).

    IEP/IEV and best-bid-offer are subscribed because the order book is believed to stream
    only with them; their message layouts are unknown, so their frames are counted (which
    shows they arrive) and nothing more.
    """

    code: str
    field: str


IEP_FRAMES = "iep_frames"
BBO_FRAMES = "bbo_frames"


@dataclass(frozen=True, slots=True)
class DataResumed:
    """The first frame of a connection that is not an error: the feed is flowing."""

    received: str


@dataclass(frozen=True, slots=True)
class GapOpened:
    """An outage started (the feed went down and no gap was running, or a 401 split it)."""

    cause: str
    start: str
    tickers: tuple[str, ...]
    detail: str


@dataclass(frozen=True, slots=True)
class GapClosed:
    """An outage ended: ``record`` is the finished gap to store."""

    record: GapRecord


Event = (
    Entry
    | Authenticate
    | Subscribe
    | PingDue
    | AuthFailed
    | ConnectionDead
    | Resubscribe
    | ConnectionStale
    | BadFrame
    | ServerError
    | Tally
    | DataResumed
    | GapOpened
    | GapClosed
)
"""Everything :class:`FeedProtocol` can ask the shell to do (an :class:`Entry` is data)."""


class FeedProtocol:
    """The ingestor's feed state machine for one process, across its connections (no I/O).

    ``packer`` packs frames into stream entries (its source is the ingestor id that goes into
    gap records too). Time comes in as arguments: ``now`` is monotonic seconds (timers),
    ``received`` / ``at`` are wall-clock WIB ISO-8601 times taken by the shell (records).
    Whether continuous trading is on comes in the same way (``tick(now, trading=...)``): the
    data watchdog only counts silence while the shell says so (the shell asks the calendar).
    """

    def __init__(
        self,
        packer: EntryPacker,
        *,
        ping_interval_s: float,
        dead_after_s: float,
        subscribe_trades: bool = True,
        stale_resubscribe_s: float = math.inf,
        stale_reconnect_s: float = math.inf,
    ) -> None:
        self.packer = packer
        self.ping_interval_s = ping_interval_s
        self.dead_after_s = dead_after_s
        self.subscribe_trades = subscribe_trades
        self.stale_resubscribe_s = stale_resubscribe_s
        self.stale_reconnect_s = stale_reconnect_s
        self.stats = Stats()
        self.outage = gaps.Outage(packer.source.decode())
        self.tickers: tuple[str, ...] = ()
        """The ticker set of the last subscribe frame."""
        self._ours: tuple[tuple[str, ...], frozenset[str]] = ((), frozenset())
        """:attr:`tickers` as a set (rebuilt when the tuple changes), for counted frames."""
        self._book = packer.book
        self._tape = packer.tape
        self._source = packer.source.decode()
        self._credentials: Credentials | None = None
        self._open = False
        self._awaiting_data = False
        self._frames_before = 0
        self._life = 0.0
        self._next_ping = math.inf
        # The data watchdog: silence is measured from _quiet (monotonic: the last data frame,
        # the connect, or the last tick outside continuous trading); a stale gap starts at
        # _quiet_from (receive time of the last data frame, or of the frame that ended the
        # previous outage).
        self._quiet = 0.0
        self._quiet_from = b""
        self._resubscribed = False
        self._data_seen = False

    @property
    def open(self) -> bool:
        """True from :meth:`connect` until the connection is refused, dead or lost."""
        return self._open

    def sibling(self) -> FeedProtocol:
        """A protocol for a second connection overlapping this one (the token handover,
        make-before-break: :mod:`ingestor.handover`): its own connection state and timers,
        this one's counters and outage. So the frames of both are counted, and a gap the old
        connection opens if it dies first is closed by the new one's first data frame."""
        twin = FeedProtocol(
            self.packer,
            ping_interval_s=self.ping_interval_s,
            dead_after_s=self.dead_after_s,
            subscribe_trades=self.subscribe_trades,
            stale_resubscribe_s=self.stale_resubscribe_s,
            stale_reconnect_s=self.stale_reconnect_s,
        )
        twin.stats = self.stats
        twin.outage = self.outage
        return twin

    # ---- connection lifecycle --------------------------------------------------------------

    def connect(
        self, credentials: Credentials, tickers: tuple[str, ...], now: float
    ) -> list[Outgoing]:
        """A socket is open at ``now``: returns the auth and the subscribe frame to send."""
        self._credentials = credentials
        self._open = True
        self._awaiting_data = True
        # Whether this connection got any frame is the frame count moving past this.
        self._frames_before = self.stats.frames
        self._life = now
        self._quiet = now
        self._resubscribed = False
        self._next_ping = now + self.ping_interval_s
        self.tickers = tickers
        auth = request.auth(
            credentials.user_id, credentials.key.reveal(), credentials.token.reveal()
        )
        return [Authenticate(auth), Subscribe(self._subscribe_frame(tickers), tickers)]

    def connection_lost(
        self, cause: str, detail: str, tickers: tuple[str, ...], at: str
    ) -> list[Event]:
        """The connection ended at ``at`` for ``cause`` (``disconnect`` or ``dead``).

        The outage starts at the receive time of the connection's last frame, when the data
        really stopped, or at ``at`` if it got none.
        """
        stats = self.stats
        got_frames = self._credentials is not None and stats.frames != self._frames_before
        self._end_connection()
        start = stats.last_frame.decode() if got_frames else at
        return self._begin(cause, start, tickers, detail)

    def auth_failed(self, detail: str, tickers: tuple[str, ...], at: str) -> list[Event]:
        """The credentials were refused at ``at`` (401 frame, handshake or key endpoint).

        Always its own gap: a running gap of another cause is closed and an ``auth_failed``
        one opened; repeated refusals stay in that one gap.
        """
        self._end_connection()
        return self._begin(gaps.AUTH_FAILED, at, tickers, detail)

    def shutdown(self, at: str) -> list[Event]:
        """The ingestor stops at ``at``: a running outage ends there."""
        self._end_connection()
        record = self.outage.end(at)
        return [] if record is None else [GapClosed(record)]

    def _end_connection(self) -> None:
        self._credentials = None
        self._open = False
        self._awaiting_data = False
        self._next_ping = math.inf

    def _begin(self, cause: str, start: str, tickers: tuple[str, ...], detail: str) -> list[Event]:
        was = self.outage.start
        closed = self.outage.begin(cause, start, tickers, detail)
        events: list[Event] = []
        if closed is not None:
            events.append(GapClosed(closed))
        if was is None or closed is not None:
            outage = self.outage
            events.append(GapOpened(outage.cause, start, outage.tickers, detail))
        return events

    # ---- subscription ----------------------------------------------------------------------

    def set_tickers(self, tickers: tuple[str, ...]) -> list[Subscribe]:
        """The wanted ticker set is now ``tickers``: a subscribe frame if it changed.

        Each subscribe frame carries the complete set (the server replaces the subscription),
        so nothing is sent while no connection is open: :meth:`connect` subscribes afresh.
        """
        if not self._open or tickers == self.tickers:
            return []
        self.tickers = tickers
        return [Subscribe(self._subscribe_frame(tickers), tickers)]

    def _subscribe_frame(self, tickers: tuple[str, ...]) -> bytes:
        creds = self._credentials
        if creds is None:  # pragma: no cover - only ever called with a connection open
            raise RuntimeError("no connection to subscribe on")
        # As the browser does: order_book with liveprice, iepiev and best_bid_offer for every
        # ticker (the book is believed not to stream without them), + the tape if wanted.
        return request.subscribe_books(
            creds.user_id,
            creds.key.reveal(),
            creds.token.reveal(),
            tickers,
            trades=self.subscribe_trades,
        )

    # ---- timers ----------------------------------------------------------------------------

    def wakeup_at(self) -> float:
        """The monotonic time :meth:`tick` next has something to do (inf: nothing pending)."""
        if not self._open:
            return math.inf
        stale = self._quiet + (
            self.stale_reconnect_s if self._resubscribed else self.stale_resubscribe_s
        )
        return min(self._next_ping, self._life + self.dead_after_s, stale)

    def tick(self, now: float, *, trading: bool = False) -> list[Event]:
        """Timers at ``now``: the ping when due, the verdict that the connection is dead, and
        the data watchdog.

        The ping goes out every ``ping_interval_s`` whatever the traffic (the server wants the
        application ping, not just any client frame). Any received frame is life; silence up
        to ``dead_after_s`` ends the connection, after which no more pings are due.

        ``trading`` says whether continuous trading is on now (the shell asks the calendar).
        Only then does data silence count: a connection subscribed to tickers that gets no
        data frame (pongs do not count) for ``stale_resubscribe_s`` is resubscribed and a
        ``stale`` gap opened from its last data frame; after ``stale_reconnect_s`` it is
        ended (:class:`ConnectionStale`). The verdict is on the connection, never on one quiet
        ticker. At lunch, on closed days, outside trading phases or without tickers the
        silence clock is held at ``now``, so it never fires there.
        """
        if not self._open:
            return []
        if now >= self._life + self.dead_after_s:
            self._open = False
            self._next_ping = math.inf
            detail = f"no frame for {self.dead_after_s:g}s"
            return [ConnectionDead(now - self._life, detail)]
        events: list[Event] = []
        if not trading or not self.tickers:
            self._quiet = now
        else:
            events.extend(self._watchdog(now))
            if not self._open:
                return events
        if now >= self._next_ping:
            self._next_ping = now + self.ping_interval_s
            events.append(PingDue(request.PING))
        return events

    def _watchdog(self, now: float) -> list[Event]:
        silent = now - self._quiet
        events: list[Event] = []
        if silent >= self.stale_reconnect_s:
            if not self._resubscribed:
                events.extend(self._stale(f"no data for {silent:.0f}s", "reconnecting"))
            self._open = False
            self._next_ping = math.inf
            detail = f"no data for {self.stale_reconnect_s:g}s: reconnecting"
            events.append(ConnectionStale(silent, detail))
        elif silent >= self.stale_resubscribe_s and not self._resubscribed:
            silence = f"no data for {self.stale_resubscribe_s:g}s"
            events.extend(self._stale(silence, "resubscribed"))
            frame = self._subscribe_frame(self.tickers)
            events.append(Resubscribe(frame, self.tickers))
        return events

    def _stale(self, silence: str, action: str) -> list[Event]:
        """Open the ``stale`` gap from the last data frame; the next data frame closes it."""
        self._resubscribed = True
        # Every frame goes through _first until a data frame ends the gap (pongs do not).
        self._awaiting_data = True
        start = (self._quiet_from or self.stats.last_frame).decode()
        detail = f"{silence} of continuous trading while pongs arrive: {action}"
        return self._begin(gaps.STALE, start, self.tickers, detail)

    # ---- received frames -------------------------------------------------------------------

    def receive(self, frame: bytes | str, now: float, received: bytes) -> Sequence[Event]:
        """One received frame, at monotonic ``now``, received at ``received`` (WIB ISO bytes).

        An order-book, trade or LivePrice frame in the common shape returns its entries straight
        from the entry packer's fast paths; everything else goes through the ordinary decoder.
        After :class:`AuthFailed` the shell stops reading the connection.
        """
        stats = self.stats
        stats.frames += 1
        stats.last_frame = received
        self._life = now
        if self._awaiting_data:
            return self._first(frame, received)
        if type(frame) is bytes:
            # The packer checks the tags itself: no second look at the first byte here.
            entry = self._book(frame, received)
            if entry is not None:
                self._quiet = now
                self._quiet_from = received
                return (entry,)
            entries = self._tape(frame, received)
            if entries is not None:
                self._quiet = now
                self._quiet_from = received
                return entries
        return self._slow(frame, received)

    def _first(self, frame: bytes | str, received: bytes) -> list[Event]:
        # Data flowing again on a new connection ends the outage gap; a 401 does not (nor
        # any error frame: the next frame decides). A stale gap needs a data frame to end.
        self._data_seen = False
        body: list[Event] = []
        fast: Sequence[Entry] | None = None
        if type(frame) is bytes:
            entry = self._book(frame, received)
            fast = (entry,) if entry is not None else self._tape(frame, received)
        if fast is not None:
            self._quiet = self._life
            self._data_seen = True
            body.extend(fast)
        else:
            body.extend(self._slow(frame, received))
        error = isinstance(frame, bytes) and frame[:1] == _ERROR_PREFIX
        if error or (self.outage.cause == gaps.STALE and not self._data_seen):
            return body
        self._awaiting_data = False
        self._resubscribed = False
        self._quiet_from = received
        at = received.decode()
        events: list[Event] = []
        record = self.outage.end(at)
        if record is not None:
            events.append(GapClosed(record))
        events.append(DataResumed(at))
        events.extend(body)
        return events

    def _slow(self, frame: bytes | str, received: bytes) -> list[Event]:
        if isinstance(frame, str):
            return [self._bad(TEXT_FRAME_ERROR, frame.encode())]
        try:
            message = wrapper.decode(frame)
        except ProtocolError as exc:
            return [self._bad(str(exc), frame)]
        if not isinstance(message, _NOT_DATA):
            # A data frame (book, trade, live price...): the data watchdog's sign of life.
            self._quiet = self._life
            self._quiet_from = received
            self._data_seen = True
        pack = self.packer.record
        if isinstance(message, OrderBook):
            try:
                record = records.from_book(message, _UNUSED_RECEIVED, self._source)
            except ProtocolError as exc:
                return [self._bad(str(exc), frame)]
            return [pack(record, received)]
        if isinstance(message, TradeBatch | RunningTrade):
            prints = message.trades if isinstance(message, TradeBatch) else (message,)
            events: list[Event] = []
            for trade in prints:
                try:
                    trade_record = records.from_trade(trade, _UNUSED_RECEIVED, self._source)
                except ProtocolError as exc:
                    events.append(self._bad(str(exc), frame))
                    continue
                events.append(pack(trade_record, received))
            return events
        if isinstance(message, LivePrice):
            try:
                price_record = records.from_liveprice(message, _UNUSED_RECEIVED, self._source)
            except ProtocolError as exc:
                return [self._bad(str(exc), frame)]
            return [pack(price_record, received)]
        if isinstance(message, IepIev | BestBidOffer):
            # Only tickers we asked for: the code's position is an assumption (field 1), and a
            # misread one must not create HASHes for strings that are not our tickers.
            if self._ours[0] is not self.tickers:
                self._ours = (self.tickers, frozenset(self.tickers))
            if message.code not in self._ours[1]:
                return []
            return [Tally(message.code, IEP_FRAMES if isinstance(message, IepIev) else BBO_FRAMES)]
        if isinstance(message, ErrorFrame):
            if message.code == UNAUTHORIZED:
                self._open = False
                self._next_ping = math.inf
                return [AuthFailed(f"the server answered 401: {message.message[:100]}")]
            self.stats.server_errors += 1
            return [ServerError(message.code, message.message[:200])]
        # Pongs and channels we did not ask for need nothing beyond the count.
        return []

    def _bad(self, error: str, raw: bytes) -> BadFrame:
        self.stats.bad_frames += 1
        return BadFrame(error, raw, self.stats.bad_frames)
