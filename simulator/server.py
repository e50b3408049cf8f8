"""The network shell: one port serving the websocket feed and the websocket-key endpoint.

- ``GET /auth/websocket/key`` with ``Authorization: Bearer <token>`` → the key JSON, or 401;
- ``POST /login/refresh`` with ``Authorization: Bearer <refresh token>`` → a new pair (both
  rotate: the refresh token presented is spent), or 401 (reused, revoked, expired, invalid);
- ``POST /sim/relogin`` → a "browser re-login": every refresh token issued so far is refused
  from now on; the answer is the new session's pair (what a browser would now hold);
- ``GET /sim/stats`` → counters as JSON (connections, refreshes, refresh-token reuse, expired
  tokens presented, ...) for tests;
- ``/ws`` (any ``?wskey=`` query ignored) → the feed, only for clients offering subprotocol
  ``web`` (others get HTTP 400, as silenccy reports of the real server);
- anything else → 404.

Both HTTP answers come from ``process_request``, so plain HTTP clients are served by the
websocket server itself. Per connection the server runs the keepalive watchdog (no
application-level ping for ``ping_window`` seconds → drop) and the configured faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from simulator.clock import VirtualClock
from simulator.credentials import Credentials
from simulator.feed import Feed
from simulator.journal import Journal
from simulator.link import Link
from simulator.market import Market
from simulator.options import Options
from simulator.session import UNAUTHORIZED_FRAME, Session
from stockbit.errors import ProtocolError
from stockbit.token import read_claims

log = logging.getLogger(__name__)

WS_PATH = "/ws"
KEY_PATH = "/auth/websocket/key"
REFRESH_PATH = "/login/refresh"
RELOGIN_PATH = "/sim/relogin"
STATS_PATH = "/sim/stats"
MAX_BODY = 65_536
SUBPROTOCOL = "web"

JOURNAL_FLUSH_INTERVAL = 0.5
WRITE_LIMIT = (4 << 20, 1 << 20)
"""High/low water marks of each transport's buffer (max-rate mode waits below the low one)."""

_BEARER = "bearer "


@dataclass
class Counters:
    """What happened, for the shutdown summary line."""

    connections: int = 0
    undecodable: int = 0
    refused: int = 0
    ping_drops: int = 0
    fault_drops: int = 0
    keys_issued: int = 0
    bad_handshakes: int = 0
    closed_at_exp: int = 0


@dataclass
class _Peer:
    link: Link
    session: Session
    last_ping: float
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    expiry: asyncio.Task[None] | None = None
    connection: ServerConnection | None = None
    closer: asyncio.Task[None] | None = None
    """Closes the socket at its token's ``exp`` (``--close-at-token-exp``)."""


class FeedServer:
    """The simulator: credentials, market, feed, journal and the websocket server around them."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.credentials = Credentials(
            options.secret, access_ttl=options.token_ttl, refresh_ttl=options.refresh_ttl
        )
        self.first_auth: dict[str, float] = {}
        """When each token first authenticated (monotonic), for --expire-token-after."""
        self._rng = random.Random(options.seed)
        self.clock = VirtualClock(options.clock_start, options.clock_speed)
        self.market = Market(
            self.clock,
            self._rng,
            levels=options.levels,
            walk=not options.max_rate,
            prints_per_batch=options.prints_per_batch,
        )
        self.journal = Journal(options.journal) if options.journal is not None else None
        self.feed: Feed | None = None
        self.counters = Counters()
        self._connections = 0
        self.port: int | None = None

    # ---- HTTP ------------------------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer the key endpoint and refuse bad upgrades before the websocket handshake."""
        path = urlsplit(request.path).path
        token_answer = self._token_routes.get((request.method, path))
        if token_answer is not None:
            return token_answer(connection, request.headers)
        if path == KEY_PATH:
            return self._key_response(connection, request.headers)
        if path != WS_PATH:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        offered = {
            part.strip()
            for value in request.headers.get_all("Sec-WebSocket-Protocol")
            for part in value.split(",")
        }
        if SUBPROTOCOL not in offered:
            self.counters.bad_handshakes += 1
            return connection.respond(
                http.HTTPStatus.BAD_REQUEST, f"subprotocol {SUBPROTOCOL!r} required\n"
            )
        return None

    def _key_response(self, connection: ServerConnection, headers: Headers) -> Response:
        authorization = headers.get("Authorization", "")
        token = authorization[len(_BEARER) :].strip()
        key = None
        if authorization.lower().startswith(_BEARER) and token:
            key = self.credentials.issue_key(token, time.time())
        if key is None:
            log.info("websocket key refused (missing, bad or expired token)")
            return _json(connection, http.HTTPStatus.UNAUTHORIZED, {"message": "unauthorized"})
        self.counters.keys_issued += 1
        return _json(
            connection,
            http.HTTPStatus.OK,
            {"message": "Success get websocket key", "data": {"key": key}},
        )

    # ---- websocket ---------------------------------------------------------------------------

    async def handle(self, connection: ServerConnection) -> None:
        """Serve one websocket connection until it closes."""
        feed = self.feed
        assert feed is not None, "run() creates the feed before accepting connections"
        self._connections += 1
        self.counters.connections += 1
        number = self._connections
        faults = self.options.faults
        loop = asyncio.get_running_loop()
        link = Link(
            number,
            connection,
            self.journal,
            faults.malformed_every,
            self._rng,
            drop_trades_every=faults.drop_trades_every,
        )
        peer = _Peer(link, Session(self.credentials), last_ping=loop.time(), connection=connection)
        peer.tasks.append(loop.create_task(self._watch_pings(peer)))
        if faults.drop_every is not None:
            peer.tasks.append(loop.create_task(self._drop_after(link, faults.drop_every)))
        if faults.stall_every is not None:
            peer.tasks.append(
                loop.create_task(self._stall(link, faults.stall_every, faults.stall_for))
            )
        if faults.mute_every is not None:
            peer.tasks.append(
                loop.create_task(self._mute(link, faults.mute_every, faults.mute_for))
            )
        log.info("conn %d opened from %s", number, _address(connection))
        try:
            async for message in connection:
                data = message.encode() if isinstance(message, str) else message
                if not self._receive(peer, feed, data, loop.time()):
                    await connection.close(1002, "undecodable request frame")
                    break
        except ConnectionClosed:
            pass
        finally:
            for task in [*peer.tasks, peer.expiry]:
                if task is not None:
                    task.cancel()
            feed.remove(link)
            log.info(
                "conn %d closed after %d data frames (%d malformed)",
                number,
                link.data_frames,
                link.malformed_frames,
            )

    def _receive(self, peer: _Peer, feed: Feed, data: bytes, now: float) -> bool:
        """Handle one client frame; False when the connection must be closed."""
        link = peer.link
        outcome = peer.session.receive(data, time.time())
        if outcome.undecodable:
            self.counters.undecodable += 1
            log.warning("conn %d sent an undecodable frame; closing it", link.number)
            return False
        if outcome.pinged:
            peer.last_ping = now
        for reply in outcome.replies:
            link.control(reply)
        if outcome.refused:
            self._silence(peer, feed, "credentials rejected")
            return True
        if outcome.new_token and self.options.faults.close_at_token_exp:
            self._close_at_exp(peer)
        if outcome.new_token and self.options.faults.expire_token_after is not None:
            if peer.expiry is not None:
                peer.expiry.cancel()
            # A token ages from its first use, across reconnects, as a real one ages from issue.
            loop = asyncio.get_running_loop()
            first = self.first_auth.setdefault(peer.session.token or "", loop.time())
            remaining = first + self.options.faults.expire_token_after - loop.time()
            peer.expiry = loop.create_task(self._expire(peer, feed, max(0.0, remaining)))
        if outcome.channel is not None:
            wanted = feed.subscribe(link, outcome.channel)
            log.info(
                "conn %d subscribed: %d book codes, %d trade codes%s, %d liveprice, %d iepiev, "
                "%d best_bid_offer",
                link.number,
                len(wanted.books),
                len(wanted.trades),
                " + all trades" if wanted.all_trades else "",
                len(wanted.prices),
                len(wanted.ieps),
                len(wanted.bbos),
            )
            if wanted.withheld:
                # What a real deployment would see as "no book at all": say it loudly.
                log.warning(
                    "conn %d: no order book for %s: order_book needs liveprice, iepiev and "
                    "best_bid_offer for the same code on the same connection (strict mode; "
                    "--lenient turns it off)",
                    link.number,
                    ",".join(sorted(wanted.withheld)[:20]),
                )
        return True

    def _silence(self, peer: _Peer, feed: Feed, why: str) -> None:
        self.counters.refused += 1
        peer.link.silent = True
        feed.remove(peer.link)
        log.info("conn %d: %s; sent 401 and going silent", peer.link.number, why)

    async def _watch_pings(self, peer: _Peer) -> None:
        # Only application-level pings count: the real server drops sockets that send none,
        # whatever RFC 6455 pings the client library exchanges.
        loop = asyncio.get_running_loop()
        window = self.options.ping_window
        while True:
            remaining = peer.last_ping + window - loop.time()
            if remaining <= 0:
                self.counters.ping_drops += 1
                log.info("conn %d sent no ping for %.1f s; dropping it", peer.link.number, window)
                peer.link.abort()
                return
            await asyncio.sleep(remaining)

    async def _drop_after(self, link: Link, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.counters.fault_drops += 1
        log.info("conn %d: drop fault after %.1f s", link.number, seconds)
        link.abort()

    async def _stall(self, link: Link, every: float, duration: float) -> None:
        while True:
            await asyncio.sleep(every)
            link.stalled = True
            log.info("conn %d: stalling for %.1f s", link.number, duration)
            await asyncio.sleep(duration)
            link.stalled = False
            log.info("conn %d: stall over", link.number)

    # ---- tokens: refresh, re-login, stats, closing at exp ---------------------------------

    @property
    def _token_routes(
        self,
    ) -> dict[tuple[str, str], Callable[[ServerConnection, Headers], Response]]:
        return {
            ("POST", REFRESH_PATH): self._refresh_response,
            ("POST", RELOGIN_PATH): self._relogin_response,
            ("GET", STATS_PATH): self._stats_response,
        }

    def _refresh_response(self, connection: ServerConnection, headers: Headers) -> Response:
        authorization = headers.get("Authorization", "")
        token = authorization[len(_BEARER) :].strip()
        pair, why = None, "missing"
        if authorization.lower().startswith(_BEARER) and token:
            pair, why = self.credentials.refresh(token, time.time())
        if pair is None:
            log.info("token refresh refused (%s)", why)
            return _json(connection, http.HTTPStatus.UNAUTHORIZED, {"message": "unauthorized"})
        log.info("token refreshed (%d so far)", self.credentials.stats.refreshes)
        return _json(connection, http.HTTPStatus.OK, pair)

    def _relogin_response(self, connection: ServerConnection, _headers: Headers) -> Response:
        pair = self.credentials.relogin(time.time(), self.options.user_id)
        log.info("re-login: session %d; older refresh tokens refused", self.credentials.session)
        return _json(connection, http.HTTPStatus.OK, pair)

    def stats(self) -> dict[str, Any]:
        """Every counter (``GET /sim/stats``)."""
        feed = self.feed
        return {
            **asdict(self.counters),
            **asdict(self.credentials.stats),
            "session": self.credentials.session,
            "book_frames": feed.book_frames if feed is not None else 0,
            "trade_frames": feed.trade_frames if feed is not None else 0,
        }

    def _stats_response(self, connection: ServerConnection, _headers: Headers) -> Response:
        return _json(connection, http.HTTPStatus.OK, self.stats())

    def _close_at_exp(self, peer: _Peer) -> None:
        if peer.closer is not None:
            peer.closer.cancel()
        try:
            expires = read_claims(peer.session.token or "").expires_at
        except ProtocolError:
            return
        if expires is None:
            return
        loop = asyncio.get_running_loop()
        peer.closer = loop.create_task(self._close_later(peer, expires.timestamp()))
        peer.tasks.append(peer.closer)

    async def _close_later(self, peer: _Peer, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        self.counters.closed_at_exp += 1
        log.info("conn %d: its token expired: closing it", peer.link.number)
        if peer.connection is not None:
            await peer.connection.close(1008, "token expired")

    async def _mute(self, link: Link, every: float, duration: float) -> None:
        while True:
            await asyncio.sleep(every)
            link.muted = True
            log.info("conn %d: muted for %.1f s (pongs only)", link.number, duration)
            await asyncio.sleep(duration)
            link.muted = False
            log.info("conn %d: mute over", link.number)

    async def _expire(self, peer: _Peer, feed: Feed, after: float) -> None:
        await asyncio.sleep(after)
        token = peer.session.token
        if token is not None:
            self.credentials.revoke(token)
        peer.session.refuse()
        peer.link.control(UNAUTHORIZED_FRAME)
        self._silence(peer, feed, "token expired by fault (--expire-token-after)")

    # ---- lifecycle ---------------------------------------------------------------------------

    async def run(
        self, stop: asyncio.Event, on_listening: Callable[[int], None] | None = None
    ) -> None:
        """Serve until ``stop`` is set, then close every connection and flush the journal."""
        self.feed = Feed(
            self.market,
            self._rng,
            self.options.rate,
            self.options.max_rate,
            self.options.pace,
            strict=not self.options.lenient,
        )
        flusher: asyncio.Task[None] | None = None
        try:
            async with serve(
                self.handle,
                self.options.host,
                self.options.port,
                process_request=self.process_request,
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                compression=None,
                ping_interval=None,
                close_timeout=2,
                write_limit=WRITE_LIMIT,
                server_header="obpipe-simulator",
                create_connection=_BodyTolerantConnection,
            ) as server:
                self.port = _bound_port(server)
                if on_listening is not None:
                    on_listening(self.port)
                self.feed.start()
                if self.journal is not None:
                    flusher = asyncio.get_running_loop().create_task(self._flush_journal())
                await stop.wait()
                log.info("simulator stopping")
                await self.feed.stop()
                server.close()
                await server.wait_closed()
        finally:
            if flusher is not None:
                flusher.cancel()
            if self.journal is not None:
                self.journal.close()
            c = self.counters
            log.info(
                "simulator stopped: %d connections, %d book frames, %d trade frames, "
                "%d live prices, %d IEP/IEV, %d best bid/offer, "
                "%d refused, %d undecodable, %d ping drops, %d fault drops",
                c.connections,
                self.feed.book_frames,
                self.feed.trade_frames,
                self.feed.price_frames,
                self.feed.iep_frames,
                self.feed.bbo_frames,
                c.refused,
                c.undecodable,
                c.ping_drops,
                c.fault_drops,
            )

    async def _flush_journal(self) -> None:
        while self.journal is not None:
            await asyncio.sleep(JOURNAL_FLUSH_INTERVAL)
            self.journal.flush()


class _BodyTolerantConnection(ServerConnection):
    """A connection that accepts a POST with a small body (the ``{}`` the web app sends to
    ``/login/refresh``): websockets' HTTP parser refuses any request body, and no endpoint
    here reads one, so the body is dropped before the request is parsed. Everything else
    (every websocket handshake) passes untouched."""

    _head = b""
    _skip = 0
    _through = False

    def data_received(self, data: bytes) -> None:
        if self._skip:
            cut = min(self._skip, len(data))
            self._skip -= cut
            data = data[cut:]
            if not data:
                return
        if self._through:
            super().data_received(data)
            return
        head = self._head + data
        if len(head) < 5 and b"POST ".startswith(head):
            self._head = head
            return
        end = head.find(b"\r\n\r\n")
        if not head.startswith(b"POST ") or (end < 0 and len(head) > MAX_BODY):
            self._through, self._head = True, b""
            super().data_received(head)
            return
        if end < 0:
            self._head = head
            return
        lines, rest = head[:end].split(b"\r\n"), head[end + 4 :]
        length = 0
        kept = []
        for line in lines:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                with contextlib.suppress(ValueError):
                    length = min(MAX_BODY, int(value.strip()))
                continue
            kept.append(line)
        self._through, self._head = True, b""
        cut = min(length, len(rest))
        self._skip = length - cut
        super().data_received(b"\r\n".join(kept) + b"\r\n\r\n" + rest[cut:])


def _json(connection: ServerConnection, status: http.HTTPStatus, payload: Any) -> Response:
    response = connection.respond(status, json.dumps(payload))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


def _address(connection: ServerConnection) -> str:
    try:
        host, port = connection.remote_address[:2]
    except (TypeError, ValueError):
        return "?"
    return f"{host}:{port}"


def _bound_port(server: Server) -> int:
    for sock in server.sockets:
        port: int = sock.getsockname()[1]
        return port
    raise RuntimeError("server has no listening socket")


def write_port_file(path: Path, port: int) -> None:
    """Write ``port`` atomically, so a reader polling for the file never sees it half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(f"{port}\n", encoding="ascii")
    partial.replace(path)


async def serve_until_signalled(options: Options) -> None:
    """Run the simulator until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    server = FeedServer(options)

    def listening(port: int) -> None:
        if options.port_file is not None:
            write_port_file(options.port_file, port)
        log.info(
            "simulator listening on ws://%s:%d%s (%s)",
            options.host,
            port,
            WS_PATH,
            "lenient: order_book streams alone"
            if options.lenient
            else "strict: order_book streams only with liveprice, iepiev, best_bid_offer",
        )

    await server.run(stop, listening)
