"""One connection's outgoing side: data frames through the fault gates and onto the wire.

Frames are written straight to the connection's transport as complete websocket frames (see
:func:`simulator.frames.websocket_header`) instead of through ``ServerConnection.send``: one
``send`` per frame costs more than building the frame, and max-rate mode must push ~100 000
frames per second. This is safe because the server negotiates no extension and every write
is a whole frame, so nothing the library writes itself (close frames, pongs to protocol
pings) can interleave with a partial one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from simulator.frames import garbage, websocket_header
from simulator.journal import Journal
from simulator.market import Sent, Tape

log = logging.getLogger(__name__)

MAX_BACKLOG = 64 << 20
"""Bytes a client may leave unread before it is dropped as a slow consumer (normal mode)."""


class Link:
    """The sending half of connection number ``number``."""

    def __init__(
        self,
        number: int,
        connection: ServerConnection,
        journal: Journal | None = None,
        malformed_every: int | None = None,
        rng: random.Random | None = None,
        *,
        drop_trades_every: int | None = None,
    ) -> None:
        self.number = number
        self._connection = connection
        self._journal = journal
        self._malformed_every = malformed_every
        self._rng = rng or random.Random()
        self._pending: list[bytes] = []
        self.stalled = False
        """True while a stall fault holds this connection quiet (no data, no pongs)."""
        self.silent = False
        """True after a 401: no data ever again on this socket."""
        self.muted = False
        """True while a mute fault holds data back (pongs still go out)."""
        self.data_frames = 0
        self.malformed_frames = 0
        self._drop_trades_every = drop_trades_every
        self.trade_frames = 0
        self.dropped_trade_frames = 0

    @property
    def open(self) -> bool:
        """True while frames can still be written."""
        return self._connection.state is State.OPEN and not self._connection.transport.is_closing()

    def control(self, payload: bytes) -> None:
        """Send a pong or error frame now (not while stalled: a stall is a half-open socket)."""
        if self.stalled or not self.open:
            return
        self._connection.transport.write(websocket_header(len(payload)) + payload)

    def data(self, payload: bytes, item: Sent) -> None:
        """Queue one data frame carrying ``item``; :meth:`flush` puts queued frames on the wire."""
        if self.silent or self.stalled or self.muted or not self.open:
            return
        if type(item) is Tape and self._drop_trades_every:
            self.trade_frames += 1
            if self.trade_frames % self._drop_trades_every == 0:
                self.dropped_trade_frames += 1
                if self._journal is not None:
                    self._journal.dropped(self.number, item)
                return
        self.data_frames += 1
        every = self._malformed_every
        if every and self.data_frames % every == 0:
            self.malformed_frames += 1
            payload = garbage(self._rng)
            if self._journal is not None:
                self._journal.malformed(self.number, item)
        elif self._journal is not None:
            self._journal.sent(self.number, item)
        self._pending.append(websocket_header(len(payload)))
        self._pending.append(payload)

    def flush(self) -> None:
        """Write every queued frame in one transport write."""
        if not self._pending:
            return
        chunk = b"".join(self._pending)
        self._pending.clear()
        if not self.open:
            return
        transport = self._connection.transport
        transport.write(chunk)
        if transport.get_write_buffer_size() > MAX_BACKLOG:
            log.warning("conn %d: client is not reading; dropping it", self.number)
            self.abort()

    async def drain(self, patience: float = 1.0) -> None:
        """Wait (up to ``patience`` s) until the transport's buffer is below its low-water mark.

        Max-rate mode paces itself on the slowest client with this. A client that stops
        reading altogether only delays the others by ``patience`` per round, and is dropped
        once its backlog passes :data:`MAX_BACKLOG`.
        """
        # A connection that dies while we wait raises OSError here; its handler cleans up.
        if self.open:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(patience):
                    await self._connection.drain()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (the client sees 1006)."""
        self._pending.clear()
        self._connection.transport.abort()
