"""FeedProtocol, fed bytes, a fake clock and a trading flag, emits the right frames, pings, deaths, gaps and watchdog verdicts."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from ingestor.credentials import Credentials
from ingestor.entries import BID, PRICE, TRADE, Entry, EntryPacker
from ingestor.gaps import AUTH_FAILED, DEAD, DISCONNECT, STALE
from ingestor.protocol import (
    BBO_FRAMES,
    IEP_FRAMES,
    TEXT_FRAME_ERROR,
    Authenticate,
    AuthFailed,
    BadFrame,
    ConnectionDead,
    ConnectionStale,
    DataResumed,
    Event,
    FeedProtocol,
    GapClosed,
    GapOpened,
    PingDue,
    Resubscribe,
    ServerError,
    Subscribe,
    Tally,
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
    # The book's companions, as the browser sends them (the book may not stream without).
    assert channel.liveprice == channel.iepiev == channel.best_bid_offer == TICKERS
    assert sub.frame == request.subscribe_books("1234567", KEY, TOKEN, TICKERS, trades=True)
    assert sub.tickers == TICKERS and proto.open
    # Events carry credentials: their repr (a log line, a traceback) never shows them.
    assert TOKEN not in repr([auth, sub]) and KEY not in repr([auth, sub])

    books_only = protocol(subscribe_trades=False)
    _, sub = books_only.connect(CREDS, TICKERS, 0.0)
    assert isinstance(sub, Subscribe)
    channel = request.decode(sub.frame).channel
    assert channel is not None and channel.running_trade_batch == ()
    assert channel == request.book_channel(TICKERS, trades=False)


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
        bytes.fromhex("2200"),  # wrapper field 4 (watchlist): a channel we do not decode
        wrapper.encode_iepiev("ASII"),  # a code we did not subscribe: not even tallied
        wrapper.encode_best_bid_offer(""),
    ],
)
def test_frames_we_do_not_store_are_only_counted(frame: bytes) -> None:
    proto = connected()
    assert proto.receive(frame, 1.0, received(1)) == []
    assert proto.stats.frames == 2 and proto.stats.bad_frames == 0


def test_live_prices_become_entries_iep_and_bbo_frames_tallies() -> None:
    proto = connected()
    moment = datetime(2026, 3, 2, 3, 15, 30, 123000, tzinfo=UTC)
    price = LivePrice("BBCA", last=8200.0, shares=123_400.0, previous=8175.0, time=moment)
    (entry,) = proto.receive(wrapper.encode_liveprice(price), 1.0, received(1))
    assert isinstance(entry, Entry) and entry.kind == PRICE and entry.code == "BBCA"
    assert entry.levels == b"8200;8175;123400", "what the ticker HASH shows"
    assert b"$1\r\nk\r\n$1\r\np\r\n" in entry.command
    assert b"2026-03-02T10:15:30.123000+07:00" in entry.command
    (bad,) = proto.receive(wrapper.encode_liveprice(LivePrice("BBCA")), 2.0, received(2))
    assert isinstance(bad, BadFrame) and "field 11" in bad.error
    assert proto.receive(wrapper.encode_iepiev("TLKM"), 3.0, received(3)) == [
        Tally("TLKM", IEP_FRAMES)
    ]
    assert proto.receive(wrapper.encode_best_bid_offer("BBCA"), 3.0, received(3)) == [
        Tally("BBCA", BBO_FRAMES)
    ]
    proto.set_tickers(("ASII",))
    assert proto.receive(wrapper.encode_iepiev("ASII"), 4.0, received(4)) == [
        Tally("ASII", IEP_FRAMES)
    ]
    assert proto.receive(wrapper.encode_iepiev("TLKM"), 4.0, received(4)) == []


# ---- the data watchdog -----------------------------------------------------------------------

RESUB_S = 90.0
RECONNECT_S = 180.0


def wall(second: float) -> bytes:
    """A receive time ``second`` seconds after 10:00:00 WIB (the fake wall clock)."""
    minutes, seconds = divmod(second, 60)
    return b"2026-03-02T10:%02d:%09.6f+07:00" % (int(minutes), seconds)


def watched(now: float = 0.0) -> FeedProtocol:
    """A connected protocol with the watchdog on, its first (book) frame at ``now``."""
    packer = EntryPacker(Keys("obpipe:", 16), "ing-1", 2_000_000)
    proto = FeedProtocol(
        packer,
        ping_interval_s=PING_S,
        dead_after_s=DEAD_S,
        stale_resubscribe_s=RESUB_S,
        stale_reconnect_s=RECONNECT_S,
    )
    proto.connect(CREDS, TICKERS, now)
    proto.receive(book(seq=1), now, wall(now))
    return proto


def drive(
    proto: FeedProtocol,
    start: float,
    until: float,
    *,
    trading: bool,
    pong_every: float = 5.0,
) -> list[tuple[float, Event]]:
    """The shell on a fake clock from ``start``: tick at ``wakeup_at()``, a pong every
    ``pong_every`` s (the server answers pings: alive), no data; stop when the connection ends."""
    seen: list[tuple[float, Event]] = []
    next_pong = start + pong_every
    while proto.open:
        at = min(proto.wakeup_at(), next_pong)
        if at > until:
            break
        if at == next_pong:
            seen += [(at, e) for e in proto.receive(wrapper.PONG, at, wall(at))]
            next_pong += pong_every
        else:
            seen += [(at, e) for e in proto.tick(at, trading=trading)]
    return seen


def test_alive_but_silent_is_resubscribed_then_reconnected_as_one_stale_gap() -> None:
    proto = watched(now=0.0)
    events = drive(proto, 0.0, 1000.0, trading=True)
    opened = [(t, e) for t, e in events if isinstance(e, GapOpened)]
    resubscribed = [(t, e) for t, e in events if isinstance(e, Resubscribe)]
    stale = [(t, e) for t, e in events if isinstance(e, ConnectionStale)]
    # Pongs kept it alive (never "dead"); no data for 90 s: resubscribe, 180 s: reconnect.
    assert not [e for _, e in events if type(e) is ConnectionDead]
    assert [t for t, _ in opened] == [t for t, _ in resubscribed] == [RESUB_S]
    assert opened[0][1] == GapOpened(
        STALE,
        wall(0).decode(),
        TICKERS,
        "no data for 90s of continuous trading while pongs arrive: resubscribed",
    )
    channel = request.decode(resubscribed[0][1].frame).channel
    assert resubscribed[0][1].tickers == TICKERS and channel is not None
    assert channel.order_book == TICKERS
    ((at, verdict),) = stale
    assert at == RECONNECT_S and verdict.cause == STALE and not proto.open
    assert verdict.detail == "no data for 180s: reconnecting"

    # The shell ends the connection: the stale gap goes on (nothing new opens) ...
    assert proto.connection_lost(STALE, verdict.detail, TICKERS, wall(181).decode()) == []
    proto.connect(CREDS, TICKERS, 185.0)
    # ... a pong on the new connection is life, not data: the gap stays open ...
    assert proto.receive(wrapper.PONG, 185.1, wall(185.1)) == []
    assert proto.outage.open
    # ... and the first data frame closes it, from the last data before the silence.
    closed, resumed, entry = proto.receive(book(seq=2), 185.2, wall(185.2))
    assert isinstance(closed, GapClosed) and isinstance(entry, Entry)
    assert resumed == DataResumed(wall(185.2).decode())
    record = closed.record
    assert (record.cause, record.start, record.end, record.tickers) == (
        STALE,
        wall(0).decode(),
        wall(185.2).decode(),
        TICKERS,
    )
    assert "resubscribed" in record.detail and "reconnecting" in record.detail
    # Healthy again: a fresh silence clock, one more resubscribe only after 90 s more.
    later = drive(proto, 185.2, 185.2 + RESUB_S, trading=True)
    assert [t for t, e in later if isinstance(e, Resubscribe)] == [185.2 + RESUB_S]


def test_data_after_the_resubscribe_closes_the_gap_and_no_reconnect_follows() -> None:
    proto = watched(now=0.0)
    drive(proto, 0.0, 95.0, trading=True)
    assert proto.outage.open and proto.outage.cause == STALE
    trades = wrapper.encode_trade_batch([trade(1, datetime(2026, 3, 2, 3, 1, 36, tzinfo=UTC))])
    closed, resumed, *entries = proto.receive(trades, 96.0, wall(96))
    assert isinstance(closed, GapClosed) and isinstance(resumed, DataResumed)
    assert [e.kind for e in entries if isinstance(e, Entry)] == [TRADE]
    assert (closed.record.start, closed.record.end) == (wall(0).decode(), wall(96).decode())
    later = drive(proto, 96.0, 96.0 + RESUB_S - 1, trading=True)
    assert [e for _, e in later if not isinstance(e, PingDue)] == []


@pytest.mark.parametrize("trading", [False], ids=["lunch-holiday-or-closed"])
def test_the_watchdog_never_fires_outside_continuous_trading(trading: bool) -> None:
    proto = watched(now=0.0)
    quiet = 5 * 3600.0
    events = drive(proto, 0.0, quiet, trading=trading)
    assert {type(e) for _, e in events} == {PingDue}, "only pings: no resubscribe, no reconnect"
    assert proto.open and not proto.outage.open
    # Trading resumes (13:30 after lunch): silence counts from then, not from the last data.
    events = drive(proto, quiet, quiet + RESUB_S + 10, trading=True)
    resubscribed = [t for t, e in events if isinstance(e, Resubscribe)]
    assert len(resubscribed) == 1 and quiet + RESUB_S <= resubscribed[0] <= quiet + RESUB_S + 10


def test_it_judges_the_connection_not_one_quiet_ticker() -> None:
    proto = watched(now=0.0)
    # TLKM never trades, but BBCA's books and a live price keep the connection proven alive.
    for second in range(10, 600, 30):
        proto.receive(book("BBCA", seq=second), float(second), wall(second))
        assert not of(proto.tick(float(second) + 1, trading=True), Resubscribe)
    moment = datetime(2026, 3, 2, 3, 10, 50, tzinfo=UTC)
    live = wrapper.encode_liveprice(LivePrice("BBCA", last=8200.0, time=moment))
    proto.receive(live, 650.0, wall(650))
    # Error frames and pongs are no data.
    proto.receive(wrapper.encode_error(BAD_REQUEST, "bad"), 660.0, wall(660))
    events = drive(proto, 660.0, 800.0, trading=True)
    assert [t for t, e in events if isinstance(e, Resubscribe)] == [650.0 + RESUB_S]


def test_a_connection_without_tickers_is_never_stale() -> None:
    proto = watched(now=0.0)
    proto.set_tickers(())
    assert {type(e) for _, e in drive(proto, 0.0, 3600.0, trading=True)} == {PingDue}


def test_a_watchdog_verdict_while_an_outage_runs_adds_to_that_gap() -> None:
    proto = watched(now=0.0)
    drive(proto, 0.0, RESUB_S, trading=True)  # stale gap open, resubscribed
    # The socket then dies outright: the same gap goes on, the new cause is in its detail.
    assert proto.connection_lost(DISCONNECT, "code 1006", TICKERS, wall(100).decode()) == []
    proto.connect(CREDS, TICKERS, 101.0)
    closed, _, _ = proto.receive(book(seq=3), 101.5, wall(101.5))
    assert isinstance(closed, GapClosed)
    assert closed.record.cause == STALE and closed.record.detail.endswith("; code 1006")
