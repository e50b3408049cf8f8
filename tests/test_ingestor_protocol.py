"""Fed only bytes and a fake clock, FeedProtocol emits the right frames, pings, deaths and gaps."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from ingestor.credentials import Credentials
from ingestor.entries import BID, TRADE, Entry, EntryPacker
from ingestor.gaps import AUTH_FAILED, DEAD, DISCONNECT
from ingestor.protocol import (
    TEXT_FRAME_ERROR,
    Authenticate,
    AuthFailed,
    BadFrame,
    ConnectionDead,
    DataResumed,
    Event,
    FeedProtocol,
    GapClosed,
    GapOpened,
    PingDue,
    ServerError,
    Subscribe,
)
from pipeline.keys import Keys
from pipeline.secret import Secret
from simulator.frames import garbage
from simulator.session import UNAUTHORIZED_FRAME
from stockbit import request, wrapper
from stockbit.book import Level, format_body
from stockbit.messages import BAD_REQUEST, LivePrice, OrderBook, RunningTrade

PING_S = 10.0
DEAD_S = 30.0
TICKERS = ("BBCA", "TLKM")
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJkYXRhIjp7InVpZCI6MTIzNDU2N319.c2ln"
KEY = "A" * 43 + "="
CREDS = Credentials("1234567", Secret(KEY), Secret(TOKEN), None)


def received(second: int) -> bytes:
    """A receive time as the shell's clock gives it (WIB ISO-8601 bytes)."""
    return b"2026-03-02T10:15:%02d.000000+07:00" % second


def book(code: str = "BBCA", seq: int = 7, body: str | None = None) -> bytes:
    levels = (Level(8200, 12, 450_000), Level(8175, 3, 10_000))
    message = OrderBook(code, body or format_body(code, "BID", levels), seq, 42, None, 1, None)
    return wrapper.encode_orderbook(message, time_text="2026-03-02T10:15:30.123456+07:00")


def trade(number: int, time: datetime | None) -> RunningTrade:
    return RunningTrade(time, "BBCA", 8200.0, 500.0, 1, number, 1, 4_100_000.0)


def protocol(subscribe_trades: bool = True) -> FeedProtocol:
    packer = EntryPacker(Keys("obpipe:", 16), "ing-1", 2_000_000)
    return FeedProtocol(
        packer, ping_interval_s=PING_S, dead_after_s=DEAD_S, subscribe_trades=subscribe_trades
    )


def connected(now: float = 0.0) -> FeedProtocol:
    """A protocol whose connection is open and already streaming (no gap, first frame seen)."""
    proto = protocol()
    proto.connect(CREDS, TICKERS, now)
    proto.receive(wrapper.PONG, now, received(0))
    return proto


T = TypeVar("T")


def of(events: Sequence[Event], kind: type[T]) -> list[T]:
    """The events of one kind, in order."""
    return [e for e in events if isinstance(e, kind)]


def test_connect_sends_auth_then_the_subscription() -> None:
    proto = protocol()
    auth, sub = proto.connect(CREDS, TICKERS, 0.0)
    assert isinstance(auth, Authenticate) and isinstance(sub, Subscribe)
    assert auth.frame == request.auth("1234567", KEY, TOKEN)
    channel = request.decode(sub.frame).channel
    assert channel is not None
    assert channel.order_book == TICKERS and channel.running_trade_batch == TICKERS
    assert sub.tickers == TICKERS and proto.open
    # Events carry credentials: their repr (a log line, a traceback) never shows them.
    assert TOKEN not in repr([auth, sub]) and KEY not in repr([auth, sub])

    books_only = protocol(subscribe_trades=False)
    _, sub = books_only.connect(CREDS, TICKERS, 0.0)
    assert isinstance(sub, Subscribe)
    channel = request.decode(sub.frame).channel
    assert channel is not None and channel.running_trade_batch == ()


def test_book_frames_take_the_fast_path_and_are_counted() -> None:
    proto = connected()
    frame = book()
    events = proto.receive(frame, 1.0, received(1))
    assert events == (proto.packer.book(frame, received(1)),)
    entry = events[0]
    assert isinstance(entry, Entry) and entry.code == "BBCA" and entry.kind == BID
    assert proto.stats.frames == 2 and proto.stats.last_frame == received(1)


def test_trades_become_entries_and_a_print_without_time_is_a_bad_frame() -> None:
    proto = connected()
    moment = datetime(2026, 3, 2, 3, 15, 30, tzinfo=UTC)
    frame = wrapper.encode_trade_batch([trade(1, moment), trade(2, None), trade(3, moment)])
    events = proto.receive(frame, 1.0, received(1))
    entries = of(events, Entry)
    assert [e.kind for e in entries] == [TRADE, TRADE]
    # The receive time in the entry is the shell's, not a clock read by the protocol.
    assert all(b"2026-03-02T10:15:01.000000+07:00" in e.command for e in entries)
    (bad,) = of(events, BadFrame)
    assert "trade without a time" in bad.error
    assert proto.stats.bad_frames == 1


def test_a_401_error_frame_fails_authentication_and_keeps_the_gap_open() -> None:
    proto = protocol()
    proto.connect(CREDS, TICKERS, 0.0)
    proto.receive(book(), 0.5, received(1))
    opened = proto.connection_lost(DISCONNECT, "code 1006", TICKERS, "t-lost")
    assert opened == [GapOpened(DISCONNECT, received(1).decode(), TICKERS, "code 1006")]

    proto.connect(CREDS, TICKERS, 5.0)
    events = proto.receive(UNAUTHORIZED_FRAME, 5.1, received(6))
    refused = AuthFailed("the server answered 401: you are not authorized")
    assert events == [refused]
    assert proto.outage.open, "a 401 is no data: the disconnect gap must stay open"
    assert not proto.open and proto.tick(100.0) == [], "no ping on a refused socket"
    assert proto.set_tickers(("ASII",)) == []

    # The shell ends the connection; the auth failure becomes its own gap.
    closed, opened_auth = proto.auth_failed(refused.detail, TICKERS, "t-auth")
    assert isinstance(closed, GapClosed) and isinstance(opened_auth, GapOpened)
    assert (closed.record.cause, closed.record.start, closed.record.end) == (
        DISCONNECT,
        received(1).decode(),
        "t-auth",
    )
    assert (opened_auth.cause, opened_auth.start) == (AUTH_FAILED, "t-auth")
    # Refused again (say by the handshake): still the one auth gap, nothing new opens.
    assert proto.auth_failed("HTTP 401", TICKERS, "t-again") == []


def test_silence_past_the_dead_timeout_kills_the_connection() -> None:
    proto = connected(now=100.0)
    assert proto.wakeup_at() == 100.0 + PING_S
    # Pings go out; sending is not life, only a received frame is.
    assert proto.tick(110.0) == proto.tick(120.0) == [PingDue(request.PING)]
    assert proto.tick(129.999) == []
    assert proto.wakeup_at() == 100.0 + DEAD_S
    (dead,) = proto.tick(130.0)
    assert isinstance(dead, ConnectionDead)
    assert dead.silent_for == DEAD_S and dead.detail == "no frame for 30s"
    assert not proto.open and proto.tick(200.0) == [] and proto.wakeup_at() == float("inf")

    # The shell reports it; the gap starts at the last frame's receive time.
    (opened,) = proto.connection_lost(DEAD, dead.detail, TICKERS, "t-dead")
    assert isinstance(opened, GapOpened) and opened.start == received(0).decode()


def test_a_pong_keeps_the_connection_alive() -> None:
    silent, answered = connected(now=0.0), connected(now=0.0)
    for proto in (silent, answered):
        assert proto.tick(10.0) == proto.tick(20.0) == [PingDue(request.PING)]
    # The pong is only counted (nothing to store), but it is life.
    assert answered.receive(wrapper.PONG, 25.0, received(25)) == []
    assert of(silent.tick(30.0), ConnectionDead)
    assert answered.tick(30.0) == [PingDue(request.PING)]
    assert answered.tick(40.0) == answered.tick(50.0) == [PingDue(request.PING)]
    assert answered.wakeup_at() == 25.0 + DEAD_S
    assert answered.tick(54.99) == []
    (dead,) = answered.tick(55.0)
    assert isinstance(dead, ConnectionDead) and dead.silent_for == DEAD_S


def test_pings_are_due_every_interval_whatever_the_traffic() -> None:
    proto = connected(now=0.0)
    assert proto.wakeup_at() == PING_S
    assert proto.tick(9.99) == []
    for second in range(1, 10):
        proto.receive(book(seq=second), float(second), received(second))
    (ping,) = proto.tick(10.0)
    assert isinstance(ping, PingDue) and ping.frame == request.PING
    assert proto.tick(10.5) == []
    # The next one is an interval after this one went out (a late tick delays it).
    assert proto.wakeup_at() == 20.0
    proto.receive(book(seq=99), 19.0, received(19))
    assert proto.tick(21.0) == [PingDue(request.PING)] and proto.wakeup_at() == 31.0


def test_the_first_frame_after_a_reconnect_closes_the_gap() -> None:
    proto = protocol()
    proto.connect(CREDS, TICKERS, 0.0)
    first = proto.receive(book(), 0.1, received(1))
    assert first[0] == DataResumed(received(1).decode()) and isinstance(first[1], Entry)
    proto.receive(book(seq=8), 0.2, received(2))
    (opened,) = proto.connection_lost(DISCONNECT, "code 1006", TICKERS, "t-lost")
    assert opened == GapOpened(DISCONNECT, received(2).decode(), TICKERS, "code 1006")

    # A connection that ends before any frame extends the gap and opens nothing new.
    proto.connect(CREDS, TICKERS, 3.0)
    assert proto.connection_lost(DISCONNECT, "refused", ("TLKM", "ASII"), "t-again") == []

    proto.connect(CREDS, TICKERS, 6.0)
    # An error frame (not a 401) is counted but is no data: the gap stays open.
    error = wrapper.encode_error(BAD_REQUEST, "bad request")
    assert proto.receive(error, 6.05, received(6)) == [ServerError(BAD_REQUEST, "bad request")]
    assert proto.stats.server_errors == 1 and proto.outage.open
    events = proto.receive(wrapper.PONG, 6.1, received(7))
    closed, resumed = events
    assert isinstance(closed, GapClosed) and resumed == DataResumed(received(7).decode())
    record = closed.record
    assert (record.start, record.end, record.cause) == (
        received(2).decode(),
        received(7).decode(),
        DISCONNECT,
    )
    assert record.tickers == ("BBCA", "TLKM", "ASII") and record.ingestor == "ing-1"
    assert record.detail == "code 1006; refused"
    # Only the first frame of a connection does that.
    assert proto.receive(wrapper.PONG, 6.2, received(8)) == []
    assert not proto.outage.open and proto.shutdown("t-stop") == []


def test_a_ticker_set_change_produces_a_subscribe_frame() -> None:
    proto = connected()
    assert proto.set_tickers(TICKERS) == [], "the same set needs no frame"
    (sub,) = proto.set_tickers(("ASII", "BBCA"))
    assert isinstance(sub, Subscribe) and sub.tickers == ("ASII", "BBCA")
    channel = request.decode(sub.frame).channel
    assert channel is not None and channel.order_book == ("ASII", "BBCA")
    assert request.decode(sub.frame).access_token == TOKEN
    assert proto.tickers == ("ASII", "BBCA")

    # No connection, no frame: the next connect subscribes to the set it is given.
    proto.connection_lost(DISCONNECT, "gone", proto.tickers, "t-lost")
    assert proto.set_tickers(("GOTO",)) == []
    _, again = proto.connect(CREDS, ("GOTO",), 10.0)
    assert isinstance(again, Subscribe) and again.tickers == ("GOTO",)


def test_malformed_frames_are_counted_and_handed_out_for_dead_letters() -> None:
    proto = connected()
    junk = garbage(random.Random(7))
    mismatched = book(body=format_body("TLKM", "BID", (Level(1, 1, 100),)))  # body of another code
    frames: list[bytes | str] = [junk, b"", "text, not protobuf", mismatched]
    bad: list[BadFrame] = []
    for number, frame in enumerate(frames, start=1):
        events = proto.receive(frame, float(number), received(number))
        assert len(events) == 1
        (event,) = of(events, BadFrame)
        assert event.number == number
        bad.append(event)
    assert [b.raw for b in bad] == [junk, b"", b"text, not protobuf", mismatched]
    assert bad[2].error == TEXT_FRAME_ERROR
    assert "disagrees" in bad[3].error
    assert proto.stats.bad_frames == 4 and proto.stats.frames == 5
    # Malformed frames are still frames: life for the watchdog, and no exception ever.
    assert not of(proto.tick(4.0 + DEAD_S - 0.1), ConnectionDead)


@pytest.mark.parametrize(
    "frame",
    [
        wrapper.PONG,
        wrapper.encode_liveprice(LivePrice("BBCA", last=8200.0)),
        bytes.fromhex("2200"),  # wrapper field 4 (watchlist): a channel we do not decode
    ],
)
def test_frames_we_do_not_store_are_only_counted(frame: bytes) -> None:
    proto = connected()
    assert proto.receive(frame, 1.0, received(1)) == []
    assert proto.stats.frames == 2 and proto.stats.bad_frames == 0
