"""One websocket session: connect, authenticate, subscribe, keep alive, receive until it ends.

The receive loop is the hot path and does as little as possible per frame: take the receive
time, pack order-book frames straight into stream entries (:mod:`ingestor.entries`) and hand
them to the sink's buffer. Everything else — trades, pongs, errors, malformed frames — goes
through the ordinary decoder. Beside it run a keepalive task (the application-level ping every
``ping_interval_s``, and the watchdog that closes a connection silent for ``dead_after_s``), a
task that re-sends the subscribe frame whenever the roster's ticker set changes (no
reconnect), and a task that ends the session on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Origin, Subprotocol

from ingestor.credentials import ORIGIN, USER_AGENT, AuthFailedError, Credentials
from ingestor.entries import BOOK_TAG, EntryPacker, ReceivedClock
from ingestor.roster import Roster
from ingestor.sink import Sink
from pipeline import records
from pipeline.settings import Settings
from stockbit import request, wrapper
from stockbit.errors import ProtocolError
from stockbit.messages import UNAUTHORIZED, ErrorFrame, OrderBook, RunningTrade, TradeBatch

log = logging.getLogger(__name__)

MAX_FRAME = 16 * 1024 * 1024
OPEN_TIMEOUT_S = 10.0
DISCONNECT = "disconnect"
DEAD = "dead"
STOPPED = "stopped"


class ConnectError(Exception):
    """The websocket could not be opened (refused, timed out, handshake rejected)."""


@dataclass
class Stats:
    """Counters the session keeps for the status key (read by the heartbeat)."""

    frames: int = 0
    bad_frames: int = 0
    server_errors: int = 0
    last_frame: bytes = b""


@dataclass(frozen=True)
class Outcome:
    """How a session ended (when it did not raise)."""

    cause: str
    """``disconnect``, ``dead`` or ``stopped``."""
    detail: str
    lasted: float
    last_frame: bytes
    """Receive time of its last frame (empty if none): when the data really stopped."""


class Session:
    """One connection's life. Construct per connection; :meth:`run` once."""

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        *,
        roster: Roster,
        sink: Sink,
        packer: EntryPacker,
        clock: ReceivedClock,
        stats: Stats,
        stop: asyncio.Event,
        on_connected: Callable[[], None],
        on_data: Callable[[bytes], None],
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.roster = roster
        self.sink = sink
        self.packer = packer
        self.clock = clock
        self.stats = stats
        self.stop = stop
        self.on_connected = on_connected
        self.on_data = on_data
        self._awaiting_data = True
        self._before = stats.last_frame

    def _subscribe_frame(self, tickers: tuple[str, ...]) -> bytes:
        creds = self.credentials
        return request.subscribe(
            creds.user_id,
            creds.key.reveal(),
            creds.token.reveal(),
            order_book=tickers,
            running_trade_batch=tickers if self.settings.subscribe_trades else (),
        )

    async def _open(self) -> ClientConnection:
        try:
            return await connect(
                self.settings.stockbit_ws_url,
                subprotocols=[Subprotocol("web")],
                origin=Origin(ORIGIN),
                user_agent_header=USER_AGENT,
                # The application ping below is the keepalive the server expects.
                ping_interval=None,
                ping_timeout=None,
                max_size=MAX_FRAME,
                max_queue=64,
                compression=None,
                open_timeout=OPEN_TIMEOUT_S,
                close_timeout=2,
            )
        except InvalidStatus as exc:
            if exc.response.status_code in (401, 403):
                raise AuthFailedError(
                    f"the websocket refused the upgrade (HTTP {exc.response.status_code})"
                ) from None
            raise ConnectError(f"handshake refused: HTTP {exc.response.status_code}") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectError(f"{type(exc).__name__}: {exc}"[:300]) from None

    async def run(self) -> Outcome:
        """Connect and stream until the connection ends or ``stop`` is set.

        Raises :class:`AuthFailedError` on a 401 (frame or handshake), :class:`ConnectError`
        when the connection cannot be opened.
        """
        ws = await self._open()
        started = time.monotonic()
        try:
            await ws.send(
                request.auth(
                    self.credentials.user_id,
                    self.credentials.key.reveal(),
                    self.credentials.token.reveal(),
                )
            )
            version = self.roster.version
            await ws.send(self._subscribe_frame(self.roster.tickers))
            self.on_connected()
            tasks = [
                asyncio.create_task(self._receive(ws), name="receive"),
                asyncio.create_task(self._keepalive(ws), name="keepalive"),
                asyncio.create_task(self._follow(ws, version), name="follow"),
                asyncio.create_task(self.stop.wait(), name="stop"),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            first = next(iter(done))
            lasted = time.monotonic() - started
            error = first.exception()
            if isinstance(error, AuthFailedError):
                raise error
            if isinstance(error, ConnectionClosed):
                return Outcome(DISCONNECT, _closed(error), lasted, self._last_data())
            if error is not None:
                raise error
            if first.get_name() == "keepalive":
                detail = f"no frame for {self.settings.dead_after_s:g}s"
                return Outcome(DEAD, detail, lasted, self._last_data())
            return Outcome(STOPPED, "", lasted, self._last_data())
        except ConnectionClosed as exc:
            lasted = time.monotonic() - started
            return Outcome(DISCONNECT, _closed(exc), lasted, self._last_data())
        finally:
            # A dead peer would keep close() waiting for its handshake: abort instead.
            if ws.transport is not None:
                ws.transport.abort()
            await ws.close()

    async def _receive(self, ws: ClientConnection) -> None:
        recv = ws.recv
        now = self.clock.now
        book = self.packer.book
        add = self.sink.add
        stats = self.stats
        while True:
            frame = await recv()
            received = now()
            stats.frames += 1
            stats.last_frame = received
            if self._awaiting_data:
                self._first_frame(frame, received)
            if type(frame) is bytes and frame and frame[0] == BOOK_TAG:
                entry = book(frame, received)
                if entry is not None:
                    add(entry)
                    continue
            self._slow(frame, received)
        # (never reached: recv raises ConnectionClosed when the socket ends)

    def _first_frame(self, frame: bytes | str, received: bytes) -> None:
        # Data flowing again on a new connection ends the outage gap; a 401 does not.
        if isinstance(frame, bytes) and frame[:1] == b"\x3a":
            return
        self._awaiting_data = False
        self.on_data(received)

    def _last_data(self) -> bytes:
        last = self.stats.last_frame
        return b"" if last == self._before else last

    def _slow(self, frame: bytes | str, received: bytes) -> None:
        if isinstance(frame, str):
            self._bad("text frame where a binary protobuf frame was expected", frame.encode())
            return
        try:
            message = wrapper.decode(frame)
        except ProtocolError as exc:
            self._bad(str(exc), frame)
            return
        source = self.packer.source.decode()
        if isinstance(message, OrderBook):
            try:
                record = records.from_book(message, datetime.now(UTC), source)
            except ProtocolError as exc:
                self._bad(str(exc), frame)
                return
            self.sink.add(self.packer.record(record, received))
        elif isinstance(message, TradeBatch | RunningTrade):
            prints = message.trades if isinstance(message, TradeBatch) else (message,)
            for trade in prints:
                try:
                    trade_record = records.from_trade(trade, datetime.now(UTC), source)
                except ProtocolError as exc:
                    self._bad(str(exc), frame)
                    continue
                self.sink.add(self.packer.record(trade_record, received))
        elif isinstance(message, ErrorFrame):
            if message.code == UNAUTHORIZED:
                raise AuthFailedError(f"the server answered 401: {message.message[:100]}")
            self.stats.server_errors += 1
            self.sink.count("server_errors")
            log.warning("server error frame %d: %s", message.code, message.message[:200])
        # Pongs, live prices and channels we did not ask for need nothing beyond the count.

    def _bad(self, error: str, raw: bytes) -> None:
        self.stats.bad_frames += 1
        self.sink.dead_letter(error, raw)
        if self.stats.bad_frames <= 10 or self.stats.bad_frames % 1000 == 0:
            log.warning("bad frame #%d (%d bytes): %s", self.stats.bad_frames, len(raw), error)

    async def _keepalive(self, ws: ClientConnection) -> None:
        interval = self.settings.ping_interval_s
        dead_after = self.settings.dead_after_s
        tick = min(0.25, interval / 2, dead_after / 4)
        seen = -1
        progress = time.monotonic()
        next_ping = progress + interval
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self.stats.frames != seen:
                seen = self.stats.frames
                progress = now
            elif now - progress > dead_after:
                log.warning("no frame and no pong for %.1fs: connection is dead", now - progress)
                return
            if now >= next_ping:
                await ws.send(request.PING)
                next_ping = now + interval

    async def _follow(self, ws: ClientConnection, version: int) -> None:
        while True:
            version = await self.roster.wait_change(version)
            tickers = self.roster.tickers
            await ws.send(self._subscribe_frame(tickers))
            log.info("subscription updated: %d ticker(s)", len(tickers))


def _closed(exc: ConnectionClosed) -> str:
    frame = exc.rcvd
    if frame is None:
        return "connection closed without a close frame"
    return f"closed by the server: code {frame.code} {frame.reason[:100]}".rstrip()
