"""The ingestor process: wiring, the reconnect loop, signals, :func:`run_ingestor`.

``obpipe ingest`` and ``python -m ingestor`` (both parsed in :mod:`pipeline.cli`) run
:func:`run_ingestor`. The process keeps one websocket session at a time and reconnects
forever: transient failures with exponential backoff and jitter (0.5 s → 30 s, reset after a
stable connection), authentication failures slowly (every ``--auth-retry`` seconds, or at once
when the token file changes) in state ``auth_failed``. Every outage becomes a gap record. What
a connection means (frames, pings, the dead-connection timer, resubscribing, which gap opens or
closes) is decided by the sans-I/O :class:`~ingestor.protocol.FeedProtocol`; this loop decides
when to connect and tells it how each connection ended. SIGTERM/SIGINT stop reading, flush
what is buffered, mark the status ``stopped``, leave the membership ZSET (the others take the
tickers over at once) and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ingestor.backoff import Backoff
from ingestor.credentials import (
    AuthFailedError,
    CredentialsError,
    CredentialSource,
    token_file_signature,
)
from ingestor.entries import EntryPacker, ReceivedClock
from ingestor.protocol import DataResumed, Event, FeedProtocol, GapClosed
from ingestor.roster import Roster
from ingestor.session import STOPPED, ConnectError, Session
from ingestor.sink import Sink
from pipeline import status as st
from pipeline.calendar import TradingCalendar
from pipeline.keys import Keys
from pipeline.records import GapRecord
from pipeline.settings import Settings
from pipeline.startup import EXIT_CONFIG
from stockbit.timestamps import wib_iso

log = logging.getLogger("ingestor")

AUTH_RETRY_S = 60.0
EXPIRY_WARNING_S = 3600.0
SHUTDOWN_FLUSH_S = 10.0
TOKEN_POLL_S = 0.5


def _iso(moment: float | None = None) -> str:
    return wib_iso(datetime.fromtimestamp(time.time() if moment is None else moment, UTC))


class Ingestor:
    """One ingestor process's state and tasks."""

    def __init__(
        self,
        settings: Settings,
        auth_retry_s: float = AUTH_RETRY_S,
        handover_s: float = 2.0,
        calendar: TradingCalendar | None = None,
    ) -> None:
        self.settings = settings
        self.calendar = calendar or TradingCalendar.from_settings(settings)
        """Asked by the data watchdog whether continuous trading is on."""
        self.me = settings.process_id
        self.keys = Keys(settings.key_prefix, settings.partitions)
        self.auth_retry_s = auth_retry_s
        self.client = aioredis.Redis.from_url(
            settings.redis_url.reveal(),
            socket_timeout=10,
            socket_connect_timeout=3,
        )
        self.sink = Sink(
            self.client,
            self.keys,
            self.me,
            redis_url=settings.redis_url.reveal(),
            buffer_max=settings.ingest_buffer_max,
            stream_maxlen=settings.stream_maxlen,
        )
        self.roster = Roster(
            self.client,
            self.keys,
            self.me,
            replicas=settings.replication,
            heartbeat_s=settings.heartbeat_s,
            status_ttl_s=settings.status_ttl_s,
            status=self.status,
            on_gap=self._gap,
            handover_s=handover_s,
            on_primary=self.sink.set_primary,
        )
        self.credentials = CredentialSource(settings)
        self.packer = EntryPacker(self.keys, self.me, settings.stream_maxlen)
        self.clock = ReceivedClock()
        self.protocol = FeedProtocol(
            self.packer,
            ping_interval_s=settings.ping_interval_s,
            dead_after_s=settings.dead_after_s,
            stale_resubscribe_s=settings.stale_resubscribe_s,
            stale_reconnect_s=settings.stale_reconnect_s,
            subscribe_trades=settings.subscribe_trades,
        )
        self.stats = self.protocol.stats
        self.stop = asyncio.Event()
        self.state = st.CONNECTING
        self.started_at = _iso()
        self.connected_since: str | None = None
        self.reconnects = 0
        self.last_error: str | None = None
        self.gaps = 0
        self.expires_at: datetime | None = None
        self._expiry_stage = ""

    # ---- status ----------------------------------------------------------------------------

    def status(self) -> st.IngestorStatus:
        """The status document the heartbeat publishes."""
        self._check_expiry()
        last = self.stats.last_frame
        return st.IngestorStatus(
            id=self.me,
            state=self.state,
            started_at=self.started_at,
            connected_since=self.connected_since,
            frames=self.stats.frames,
            reconnects=self.reconnects,
            tickers=list(self.roster.tickers),
            last_frame_at=last.decode() if last else None,
            last_error=self.last_error or self.sink.last_error,
            token_expires_at=wib_iso(self.expires_at) if self.expires_at else None,
            bad_frames=self.stats.bad_frames,
            buffered=self.sink.buffered,
            overflow=self.sink.dropped,
            gaps=self.gaps,
            updated_at=_iso(),
        )

    def _check_expiry(self) -> None:
        if self.expires_at is None:
            return
        left = self.expires_at.timestamp() - time.time()
        stage = "expired" if left <= 0 else "soon" if left <= EXPIRY_WARNING_S else ""
        key = f"{stage}:{self.expires_at.isoformat()}"
        if stage and key != self._expiry_stage:
            if stage == "expired":
                log.error("the Stockbit token expired at %s", wib_iso(self.expires_at))
            else:
                log.warning(
                    "the Stockbit token expires in %.0f min (at %s): provide a fresh one",
                    left / 60,
                    wib_iso(self.expires_at),
                )
        self._expiry_stage = key

    def _gap(self, record: GapRecord | None) -> None:
        if record is None:
            return
        self.gaps += 1
        log.warning(
            "gap %s from %s to %s (%d ticker(s))%s",
            record.cause,
            record.start,
            record.end,
            len(record.tickers),
            f": {record.detail}" if record.detail else "",
        )
        self.sink.gap(record)

    # ---- session callbacks -----------------------------------------------------------------

    def _connected(self) -> None:
        self.state = st.CONNECTED
        self.connected_since = _iso()
        log.info("connected and subscribed to %d ticker(s)", len(self.roster.tickers))

    def _event(self, event: Event) -> None:
        """The protocol's process-level events: finished gaps, and the feed flowing again."""
        if isinstance(event, GapClosed):
            self._gap(event.record)
        elif isinstance(event, DataResumed):
            self.last_error = None
        # GapOpened needs nothing here: the reconnect loop logs why the feed went down.

    def _trading(self) -> bool:
        """Whether continuous trading is on now (sessions 1 and 2 of the IDX calendar)."""
        return self.calendar.is_continuous(datetime.now(UTC))

    def _events(self, events: list[Event]) -> None:
        for event in events:
            self._event(event)

    # ---- the main loop ---------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once on shutdown."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def _wait_for_token(self) -> None:
        """After an auth failure: wait ``auth_retry_s``, or less if the token file changes."""
        path = self.credentials.token_file
        before = token_file_signature(path)
        deadline = time.monotonic() + self.auth_retry_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            await self._sleep(min(TOKEN_POLL_S, max(0.0, deadline - time.monotonic())))
            if path is not None and token_file_signature(path) != before:
                log.info("the token file changed: retrying now")
                return

    async def _connect_loop(self) -> None:
        backoff = Backoff()
        attempts = 0
        while not self.stop.is_set():
            attempts += 1
            if attempts > 1:
                self.reconnects += 1
                if self.state != st.AUTH_FAILED:
                    self.state = st.RECONNECTING
            try:
                creds = await asyncio.to_thread(self.credentials.obtain)
                self.expires_at = creds.expires_at
                self._check_expiry()
                session = Session(
                    self.settings,
                    creds,
                    protocol=self.protocol,
                    roster=self.roster,
                    sink=self.sink,
                    clock=self.clock,
                    stop=self.stop,
                    on_connected=self._connected,
                    on_event=self._event,
                    trading=self._trading,
                )
                outcome = await session.run()
            except AuthFailedError as exc:
                self.expires_at = self.credentials.expires_at
                self.state = st.AUTH_FAILED
                self.connected_since = None
                self.last_error = f"auth_failed: {exc}"
                log.error(
                    "authentication failed (%s); retrying in %.0fs or when the token file changes",
                    exc,
                    self.auth_retry_s,
                )
                self._events(self.protocol.auth_failed(str(exc), self.roster.tickers, _iso()))
                await self._wait_for_token()
                backoff.reset()
                continue
            except (CredentialsError, ConnectError) as exc:
                self.last_error = str(exc)[:300]
                delay = backoff.next_delay()
                log.warning("cannot connect (%s); retrying in %.1fs", exc, delay)
                await self._sleep(delay)
                continue
            self.connected_since = None
            if outcome.cause == STOPPED:
                return
            backoff.connection_ended(outcome.lasted)
            self.last_error = f"{outcome.cause}: {outcome.detail}"[:300]
            self._events(
                self.protocol.connection_lost(
                    outcome.cause, outcome.detail, self.roster.tickers, _iso()
                )
            )
            self.state = st.RECONNECTING
            delay = backoff.next_delay()
            log.warning(
                "connection lost after %.1fs (%s: %s); reconnecting in %.1fs",
                outcome.lasted,
                outcome.cause,
                outcome.detail,
                delay,
            )
            await self._sleep(delay)

    async def _start_roster(self) -> bool:
        """Seed the desired set and beat once; wait for Redis as long as it takes."""
        delay = 0.1
        while not self.stop.is_set():
            try:
                await self.roster.seed(self.settings.tickers)
                await self.roster.beat()
                return True
            except (RedisError, OSError) as exc:
                log.warning("waiting for Redis: %s", exc)
                await self._sleep(delay)
                delay = min(2.0, delay * 2)
        return False

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        log.info(
            "ingestor %s starting (feed %s, %d partitions, replication %d)",
            self.me,
            self.settings.stockbit_ws_url,
            self.settings.partitions,
            self.settings.replication,
        )
        sink_task = asyncio.create_task(self.sink.run(), name="sink")
        roster_task: asyncio.Task[None] | None = None
        try:
            if await self._start_roster():
                roster_task = asyncio.create_task(self.roster.run(), name="roster")
                await self._connect_loop()
        finally:
            await self._shutdown(sink_task, roster_task)
        return 0

    def _on_signal(self, signum: int) -> None:
        if not self.stop.is_set():
            log.info("%s received: stopping", signal.Signals(signum).name)
        self.stop.set()

    async def _shutdown(
        self, sink_task: asyncio.Task[None], roster_task: asyncio.Task[None] | None
    ) -> None:
        self.stop.set()
        if roster_task is not None:
            roster_task.cancel()
            await asyncio.gather(roster_task, return_exceptions=True)
        self._events(self.protocol.shutdown(_iso()))
        self.state = st.STOPPED
        self.connected_since = None
        flushed = await self.sink.close(sink_task, SHUTDOWN_FLUSH_S)
        try:
            await asyncio.wait_for(self.roster.leave(self.status()), 5)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not publish the final status: %s", exc)
        await self.client.aclose()
        log.info(
            "stopped: %d frames received, %d entries written%s",
            self.stats.frames,
            self.sink.written,
            "" if flushed else " (some entries could not be written)",
        )


def run_ingestor(settings: Settings, *, auth_retry_s: float, handover_s: float) -> int:
    """``obpipe ingest``: run one ingestor until SIGTERM; returns the exit code."""
    if not settings.has_stockbit_token:
        print(
            "ingestor: no Stockbit token: set STOCKBIT_TOKEN or STOCKBIT_TOKEN_FILE "
            "(or use `obpipe run`, which falls back to the simulator)",
            file=sys.stderr,
        )
        return EXIT_CONFIG

    async def go() -> int:
        return await Ingestor(settings, auth_retry_s, handover_s).run()

    return asyncio.run(go())
