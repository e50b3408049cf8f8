"""The ingestor process: wiring, the reconnect loop, signals, :func:`run_ingestor`.

``obpipe ingest`` and ``python -m ingestor`` (both parsed in :mod:`pipeline.cli`) run
:func:`run_ingestor`. The process keeps one websocket session at a time and reconnects
forever: transient failures with exponential backoff and jitter (0.5 s → 30 s, reset after a
stable connection), authentication failures slowly (every ``--auth-retry`` seconds, or at once
when the token file changes) in state ``auth_failed``. Every outage becomes a gap record. What
a connection means (frames, pings, the dead-connection timer, resubscribing, which gap opens or
closes) is decided by the sans-I/O :class:`~ingestor.protocol.FeedProtocol`; this loop decides
when to connect and tells it how each connection ended. With a token file, a
:class:`~ingestor.refresher.Refresher` task renews the access token (one ingestor at a time)
and :class:`~ingestor.handover.Connections` moves the socket to the renewed token before the
old one expires, make-before-break. SIGTERM/SIGINT with other ingestors
live first hand the tickers over make-before-break (leave the ZSET, keep streaming until the
others store them, at most 10 s); then stop reading, flush what is buffered, release the
tickers cleanly (``custody:<CODE>``), mark the status ``stopped``, leave the membership ZSET
and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ingestor.archive import Archive
from ingestor.backoff import Backoff
from ingestor.continuity import HANDOVER_MAX_S, holder_id
from ingestor.credentials import (
    AuthFailedError,
    Credentials,
    CredentialsError,
    CredentialSource,
    token_file_signature,
)
from ingestor.entries import EntryPacker, ReceivedClock
from ingestor.handover import Connections
from ingestor.protocol import DataResumed, Event, FeedProtocol, GapClosed
from ingestor.refresher import OK as REFRESH_OK
from ingestor.refresher import Refresher
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
REFRESHER_STOP_S = 20.0
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
            # This run's custody field: continuity across owners is judged from it.
            holder=holder_id(self.me, secrets.token_hex(4)),
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
            sink=self.sink,
            flowing=self._flowing,
        )
        self.credentials = CredentialSource(settings)
        self.packer = EntryPacker(self.keys, self.me, settings.stream_maxlen)
        self.clock = ReceivedClock()
        self.archive = (
            Archive(
                settings.data_dir,
                self.me,
                keep_days=settings.raw_keep_days,
                min_free_mb=settings.raw_min_free_mb,
            )
            if settings.raw_archive
            else None
        )
        self._archive_task: asyncio.Task[None] | None = None
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
        self._handing_over: asyncio.Task[None] | None = None
        self.refresher: Refresher | None = None
        if settings.stockbit_token_file is not None:
            self.refresher = Refresher(
                settings, self.client, self.keys, self.calendar, stop=self.stop
            )
        self.connections = Connections(
            make_session=self._session,
            credentials=self.credentials,
            calendar=self.calendar,
            stop=self.stop,
            on_connected=self._connected,
            on_event=self._event,
            on_switch=self._switched,
            on_lost=self._old_lost,
        )

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
            token_expires_at=wib_iso(expires) if (expires := self._token_expiry()) else None,
            bad_frames=self.stats.bad_frames,
            buffered=self.sink.buffered,
            overflow=self.sink.dropped,
            gaps=self.gaps,
            updated_at=_iso(),
            token_handovers=self.connections.handovers,
            **self._token_status(),
            **(self.archive.status_fields() if self.archive is not None else {}),
        )

    def _token_expiry(self) -> datetime | None:
        """When capture runs out of token: the socket's, or the renewed one on file that the
        socket moves to before its own expires (so a working renewal never looks like an
        access token about to die, to the page or the alert monitor)."""
        renewed = self.refresher.view.access_expires_at if self.refresher is not None else None
        if self.expires_at is None or renewed is None:
            return self.expires_at or renewed
        return max(self.expires_at, renewed)

    def _token_status(self) -> dict[str, Any]:
        """The refresher's view of the token file (never a token)."""
        if self.refresher is None:
            return {}
        view = self.refresher.view
        return {
            "refresh_expires_at": wib_iso(view.refresh_expires_at)
            if view.refresh_expires_at
            else None,
            "token_refresh_state": view.state,
            "token_refresh_error": view.error,
            "token_refreshed_at": view.refreshed_at,
            "token_refreshed_by": view.refreshed_by,
            "token_refresh_due_at": wib_iso(view.due_at) if view.due_at else None,
        }

    def _check_expiry(self) -> None:
        if self.expires_at is None:
            return
        left = self.expires_at.timestamp() - time.time()
        stage = "expired" if left <= 0 else "soon" if left <= EXPIRY_WARNING_S else ""
        renewing = self.refresher is not None and self.refresher.view.state == REFRESH_OK
        if stage == "soon" and renewing:
            stage = ""  # renewal works: the socket moves to the renewed token before expiry
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

    def _session(
        self,
        creds: Credentials,
        protocol: FeedProtocol,
        stop: asyncio.Event,
        on_connected: Callable[[], None],
        on_event: Callable[[Event], None],
    ) -> Session:
        """One connection's session (two are live at once during a token handover)."""
        return Session(
            self.settings,
            creds,
            protocol=protocol,
            roster=self.roster,
            sink=self.sink,
            clock=self.clock,
            stop=stop,
            on_connected=on_connected,
            on_event=on_event,
            trading=self._trading,
            archive=self.archive.keep if self.archive is not None else None,
        )

    def _switched(self, protocol: FeedProtocol, creds: Credentials) -> None:
        """The connection on the renewed token took over (make-before-break)."""
        self.protocol = protocol
        self.expires_at = creds.expires_at
        self.state = st.CONNECTED
        self.connected_since = _iso()

    def _old_lost(self, protocol: FeedProtocol, cause: str, detail: str) -> None:
        """The old connection ended before the new one streamed: an outage starts (the new
        connection's first data frame ends it)."""
        self.last_error = f"{cause}: {detail}"[:300]
        self._events(protocol.connection_lost(cause, detail, self.roster.tickers, _iso()))

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
                # One session (built by _session), two for a moment when the token is renewed.
                outcome = await self.connections.run(creds, self.protocol)
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
        if self.archive is not None:
            # Independent of Redis: it archives while the roster still waits for Redis.
            run_archive = self.archive.run(self.client, self.keys)
            self._archive_task = asyncio.create_task(run_archive, name="archive")
        roster_task: asyncio.Task[None] | None = None
        refresher_task: asyncio.Task[None] | None = None
        try:
            if await self._start_roster():
                roster_task = asyncio.create_task(self.roster.run(), name="roster")
                if self.refresher is not None:
                    refresher_task = asyncio.create_task(self.refresher.run(), name="refresher")
                await self._connect_loop()
        finally:
            if refresher_task is not None:
                # It ends at its next look. A refresh in flight (a 15 s request at most) is
                # let finish, so the rotated pair is written rather than lost.
                self.stop.set()
                await asyncio.wait({refresher_task}, timeout=REFRESHER_STOP_S)
                refresher_task.cancel()
                await asyncio.gather(refresher_task, return_exceptions=True)
            await self._shutdown(sink_task, roster_task)
        return 0

    def _on_signal(self, signum: int) -> None:
        if self.stop.is_set():
            return
        name = signal.Signals(signum).name
        if self._handing_over is None and self.roster.peers and self._flowing():
            # Make before break: the others take the tickers while this one still streams.
            log.info(
                "%s received: handing %d ticker(s) over, then stopping",
                name,
                len(self.roster.tickers),
            )
            self._handing_over = asyncio.create_task(self._hand_over(), name="hand-over")
            return
        log.info("%s received: stopping", name)
        self.stop.set()

    async def _hand_over(self) -> None:
        """Leave the membership, keep streaming until every ticker has another holder storing
        it (or :data:`HANDOVER_MAX_S`), then stop: a scale-down records no gap."""
        since = time.time()
        try:
            await asyncio.wait_for(self.roster.depart(), 5)
            await self._sleep(self.roster.plan.handover)
            while not self.stop.is_set() and time.time() < since + HANDOVER_MAX_S:
                if await asyncio.wait_for(self.roster.taken_over(since), 5):
                    break
                await self._sleep(0.2)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("hand-over cut short: %s", exc)
        self.stop.set()

    def _flowing(self) -> bool:
        """Connected with data flowing: no outage running (a clean release is honest)."""
        return self.protocol.open and not self.protocol.outage.open

    async def _shutdown(
        self, sink_task: asyncio.Task[None], roster_task: asyncio.Task[None] | None
    ) -> None:
        self.stop.set()
        if self._handing_over is not None:
            self._handing_over.cancel()
            await asyncio.gather(self._handing_over, return_exceptions=True)
        if roster_task is not None:
            roster_task.cancel()
            await asyncio.gather(roster_task, return_exceptions=True)
        at = _iso()
        self._events(self.protocol.shutdown(at))
        try:
            # Open takeover claims are judged now (their gaps recorded), not left behind.
            await asyncio.wait_for(self.roster.conclude(), 5)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not judge the open takeovers: %s", exc)
        if self.stats.frames:
            # A clean stop: every ticker held is covered up to now by stored frames or by the
            # outage gap just closed; the release is written after everything buffered.
            self.sink.release(self.roster.releasable(), at)
        self.state = st.STOPPED
        self.connected_since = None
        if self._archive_task is not None:
            # The receive loop has ended: the archive writes what it holds and ends its file.
            self._archive_task.cancel()
            await asyncio.gather(self._archive_task, return_exceptions=True)
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
