"""One websocket session: the thin I/O shell around :class:`~ingestor.protocol.FeedProtocol`.

The shell opens the socket (handshake refusals become :class:`AuthFailedError` or
:class:`ConnectError`), sends what the protocol asks for and feeds it everything it receives
and the time; every decision (what a frame means, when to ping, when the connection is dead,
when to resubscribe, which gap opens or closes) is the protocol's. Four tasks run per
connection:

- *receive* — the hot path: take the receive time, append the frame to the raw archive's list
  (:mod:`ingestor.archive`; nothing else happens there), hand it to the protocol, pass the
  entries it returns to the sink's buffer and act on the rare other events;
- *keepalive* — sleep until the protocol's next timer, then send the ping (or the data
  watchdog's resubscribe) it asks for, or end the session when it declares the connection
  dead or stale; it tells the protocol whether continuous trading is on (``trading``, which
  the process answers from the trading calendar);
- *follow* — on every change of the roster's ticker set, send the protocol's new subscribe
  frame (no reconnect);
- *stop* — end the session on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Origin, Subprotocol

from ingestor.credentials import ORIGIN, USER_AGENT, AuthFailedError, Credentials
from ingestor.entries import Entry, ReceivedClock
from ingestor.gaps import DISCONNECT
from ingestor.protocol import (
    AuthFailed,
    BadFrame,
    ConnectionDead,
    ConnectionStale,
    Event,
    FeedProtocol,
    Outgoing,
    Resubscribe,
    ServerError,
    Tally,
)
from ingestor.roster import Roster
from ingestor.sink import Sink
from pipeline.settings import Settings

log = logging.getLogger(__name__)

MAX_FRAME = 16 * 1024 * 1024
OPEN_TIMEOUT_S = 10.0
MIN_TIMER_S = 0.001
"""Shortest keepalive sleep: an event loop waking a hair early must not spin."""
STOPPED = "stopped"


class ConnectError(Exception):
    """The websocket could not be opened (refused, timed out, handshake rejected)."""


@dataclass(frozen=True)
class Outcome:
    """How a session ended (when it did not raise)."""

    cause: str
    """``disconnect``, ``dead``, ``stale`` (the data watchdog) or ``stopped``."""
    detail: str
    lasted: float


class Session:
    """One connection's life. Construct per connection; :meth:`run` once.

    ``on_connected`` runs once the auth and subscribe frames are sent; ``on_event`` gets the
    protocol events that are the process's business rather than the socket's
    (:class:`~ingestor.protocol.GapClosed`, :class:`~ingestor.protocol.DataResumed`).
    """

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        *,
        protocol: FeedProtocol,
        roster: Roster,
        sink: Sink,
        clock: ReceivedClock,
        stop: asyncio.Event,
        on_connected: Callable[[], None],
        on_event: Callable[[Event], None],
        trading: Callable[[], bool] | None = None,
        archive: Callable[[tuple[bytes | str, bytes]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.archive = archive
        """The raw archive's ``keep`` (:mod:`ingestor.archive`): a list append, or None (off)."""
        self.trading = trading or _never
        """Whether continuous trading is on now (the data watchdog only judges then)."""
        self.credentials = credentials
        self.protocol = protocol
        self.roster = roster
        self.sink = sink
        self.clock = clock
        self.stop = stop
        self.on_connected = on_connected
        self.on_event = on_event

    async def _open(self) -> ClientConnection:
        try:
            return await connect(
                self.settings.stockbit_ws_url,
                subprotocols=[Subprotocol("web")],
                origin=Origin(ORIGIN),
                user_agent_header=USER_AGENT,
                # The application ping (the protocol's PingDue) is the keepalive the server
                # expects.
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
        when the connection cannot be opened. Telling the protocol that the connection is over
        (and so opening the gap) is the caller's: it knows the cause of a refusal too.
        """
        ws = await self._open()
        started = time.monotonic()
        try:
            version = self.roster.version
            for outgoing in self.protocol.connect(self.credentials, self.roster.tickers, started):
                await ws.send(outgoing.frame)
            self.on_connected()
            tasks: list[asyncio.Task[ConnectionDead | None]] = [
                asyncio.create_task(self._receive(ws), name="receive"),
                asyncio.create_task(self._keepalive(ws), name="keepalive"),
                asyncio.create_task(self._follow(ws, version), name="follow"),
                asyncio.create_task(self._stopped(), name="stop"),
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
            if isinstance(error, ConnectionClosed):
                return Outcome(DISCONNECT, _closed(error), lasted)
            if error is not None:
                raise error  # AuthFailedError from a 401 frame, or a bug
            dead = first.result()
            if dead is not None:
                return Outcome(dead.cause, dead.detail, lasted)
            return Outcome(STOPPED, "", lasted)
        except ConnectionClosed as exc:
            return Outcome(DISCONNECT, _closed(exc), time.monotonic() - started)
        finally:
            # A dead peer would keep close() waiting for its handshake: abort instead.
            if ws.transport is not None:
                ws.transport.abort()
            await ws.close()

    async def _receive(self, ws: ClientConnection) -> None:
        # Locals, not attribute lookups, on the path every frame takes.
        recv = ws.recv
        receive = self.protocol.receive
        received_at = self.clock.now
        monotonic = time.monotonic
        add = self.sink.add
        act = self._act
        keep = self.archive
        while True:
            frame = await recv()
            received = received_at()
            if keep is not None:
                keep((frame, received))  # the raw archive: one append, its thread does the rest
            for event in receive(frame, monotonic(), received):
                if type(event) is Entry:
                    add(event)
                else:
                    act(event)
        # (never reached: recv raises ConnectionClosed when the socket ends)

    def _act(self, event: Event) -> None:
        """The events of a received frame other than data."""
        if isinstance(event, BadFrame):
            self.sink.dead_letter(event.error, event.raw)
            if event.number <= 10 or event.number % 1000 == 0:
                log.warning(
                    "bad frame #%d (%d bytes): %s", event.number, len(event.raw), event.error
                )
        elif isinstance(event, Tally):
            self.sink.tally(event.code, event.field)
        elif isinstance(event, ServerError):
            self.sink.count("server_errors")
            log.warning("server error frame %d: %s", event.code, event.message)
        elif isinstance(event, AuthFailed):
            raise AuthFailedError(event.detail)
        else:
            self.on_event(event)

    async def _keepalive(self, ws: ClientConnection) -> ConnectionDead:
        protocol = self.protocol
        while True:
            await asyncio.sleep(max(MIN_TIMER_S, protocol.wakeup_at() - time.monotonic()))
            for event in protocol.tick(time.monotonic(), trading=self.trading()):
                if isinstance(event, ConnectionStale):
                    log.warning(
                        "pongs but no data for %.0fs of continuous trading: reconnecting",
                        event.silent_for,
                    )
                    return event
                if isinstance(event, ConnectionDead):
                    log.warning(
                        "no frame and no pong for %.1fs: connection is dead", event.silent_for
                    )
                    return event
                if isinstance(event, Resubscribe):
                    log.warning(
                        "pongs but no data for %.0fs of continuous trading: resubscribing "
                        "%d ticker(s)",
                        protocol.stale_resubscribe_s,
                        len(event.tickers),
                    )
                if isinstance(event, Outgoing):
                    await ws.send(event.frame)
                else:
                    self.on_event(event)  # the stale gap opening

    async def _follow(self, ws: ClientConnection, version: int) -> None:
        while True:
            version = await self.roster.wait_change(version)
            for subscribe in self.protocol.set_tickers(self.roster.tickers):
                await ws.send(subscribe.frame)
                log.info("subscription updated: %d ticker(s)", len(subscribe.tickers))

    async def _stopped(self) -> None:
        await self.stop.wait()


def _never() -> bool:
    return False


def _closed(exc: ConnectionClosed) -> str:
    frame = exc.rcvd
    if frame is None:
        return "connection closed without a close frame"
    return f"closed by the server: code {frame.code} {frame.reason[:100]}".rstrip()
