"""The simulator: its protocol rules in-process, then the real server as a subprocess (e2e)."""

# The e2e tests start ``python -m simulator --port 0 --port-file ...`` through
# :class:`simulator.harness.SimulatorProcess` and talk to it with a plain ``websockets`` client
# through the codec, exactly as the ingestor does: book codes are subscribed with their
# ``liveprice``, ``iepiev`` and ``best_bid_offer`` companions, without which the (strict by
# default) simulator streams no book.

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from simulator.credentials import Credentials, mint_token
from simulator.harness import SimulatorProcess
from simulator.session import UNAUTHORIZED_FRAME, Session
from simulator.subscriptions import Subscriptions, Wanted
from stockbit import ProtocolError, request, wrapper
from stockbit.book import BID, OFFER, parse_body
from stockbit.messages import (
    BestBidOffer,
    Channel,
    IepIev,
    LivePrice,
    OrderBook,
    Pong,
    Request,
    ServerFrame,
    TradeBatch,
)
from stockbit.timestamps import parse_iso

UID = "1234567"
WEB = Subprotocol("web")
NOW = 1_800_000_000.0
ERROR_401 = bytes.fromhex("3a1b0891031216") + b"you are not authorized"


# ---- credentials and session rules (in-process) ------------------------------------------


def test_unauthorized_frame_is_the_captured_29_bytes() -> None:
    assert UNAUTHORIZED_FRAME == ERROR_401
    assert len(UNAUTHORIZED_FRAME) == 29


def test_credentials_accept_only_their_own_fresh_tokens_and_keys() -> None:
    creds = Credentials("s3")
    token = creds.mint(NOW, user_id=int(UID), ttl=60)
    key = creds.issue_key(token, NOW)
    assert key is not None and len(key) == 44 and len(base64.b64decode(key)) == 32
    assert creds.authorize(UID, key, token, NOW)
    assert not creds.authorize("7654321", key, token, NOW), "user id must match data.uid"
    assert not creds.authorize(UID, "A" * 43 + "=", token, NOW), "key must be one we issued"
    assert not creds.authorize(UID, key, token, NOW + 61), "expired"
    assert creds.issue_key(token, NOW + 61) is None
    assert Credentials("other").user_of(token, NOW) is None, "signature is keyed by the secret"
    forged = token.rsplit(".", 1)[0] + ".c2ln"
    assert creds.user_of(forged, NOW) is None
    assert creds.user_of("not-a-jwt", NOW) is None
    creds.revoke(token)
    assert not creds.authorize(UID, key, token, NOW)
    fresh = creds.mint(NOW + 1, user_id=int(UID), ttl=60)
    assert creds.authorize(UID, key, fresh, NOW + 1), "a key serves any token of its user"


def test_tokens_from_another_instance_with_the_same_secret_work() -> None:
    token = mint_token("shared", NOW, 42, 60)
    assert Credentials("shared").user_of(token, NOW) == "42"


def session_with_key() -> tuple[Session, str, str]:
    creds = Credentials()
    token = creds.mint(time.time(), user_id=int(UID))
    key = creds.issue_key(token, time.time())
    assert key is not None
    return Session(creds), key, token


def test_session_ping_subscribe_and_refusal() -> None:
    session, key, _token = session_with_key()
    now = time.time()
    pong = session.receive(request.PING, now)
    assert pong.replies == [wrapper.PONG] and pong.pinged
    early = session.receive(request.subscribe(UID, key, "x.y.z", ["BBCA"]), now)
    assert early.refused and early.replies == [ERROR_401]
    assert session.receive(request.PING, now).replies == [], "silent after a 401"


def test_session_subscribe_needs_credentials_first_or_inline() -> None:
    session, key, token = session_with_key()
    now = time.time()
    bare = request.encode(Request(channel=Channel(order_book=("BBCA",))))
    assert session.receive(bare, now).refused

    session, key, token = session_with_key()
    auth = session.receive(request.auth(UID, key, token), now)
    assert auth.new_token and auth.replies == [] and auth.channel is None
    assert session.receive(bare, now).channel == Channel(order_book=("BBCA",))
    inline = session.receive(request.subscribe(UID, key, token, ["TLKM"]), now)
    assert not inline.new_token and inline.channel == Channel(order_book=("TLKM",))


def test_session_flags_undecodable_frames() -> None:
    session, _, _ = session_with_key()
    assert session.receive(b"\xff\xff\xff", time.time()).undecodable


def test_subscriptions_replace_and_wildcard() -> None:
    subs: Subscriptions[str] = Subscriptions()
    # Lenient here: strict mode is the next test's subject.
    channel = Channel(order_book=("BBCA", "2BBCA"), running_trade_batch=("*",))
    subs.replace("a", Wanted.from_channel(channel, strict=False))
    subs.replace("b", Wanted.from_channel(Channel(running_trade_batch=("TLKM",))))
    assert subs.book_codes() == ["BBCA"], "invalid codes are ignored"
    assert subs.active_codes() == {"BBCA", "TLKM"}
    assert subs.trade_links("TLKM") == {"a", "b"}
    assert subs.trade_links("BBCA") == {"a"}
    subs.replace("a", Wanted.from_channel(Channel()))
    assert subs.active_codes() == {"TLKM"}
    subs.remove("b")
    assert subs.active_codes() == set()


def test_strict_mode_streams_a_book_only_with_its_three_companions() -> None:
    companions = {"liveprice": ("BBCA", "TLKM"), "iepiev": ("BBCA",), "best_bid_offer": ("BBCA",)}
    channel = Channel(order_book=("BBCA", "TLKM", "ASII"), **companions)
    strict = Wanted.from_channel(channel)
    assert strict.books == {"BBCA"} and strict.withheld == {"TLKM", "ASII"}
    assert strict.prices == {"BBCA", "TLKM"} and strict.ieps == strict.bbos == {"BBCA"}
    lenient = Wanted.from_channel(channel, strict=False)
    assert lenient.books == {"BBCA", "TLKM", "ASII"} and not lenient.withheld
    # The browser's own subscription (request.book_channel) passes, with or without the tape.
    for trades in (True, False):
        assert Wanted.from_channel(request.book_channel(("BBCA", "TLKM"), trades)).books == {
            "BBCA",
            "TLKM",
        }
    subs: Subscriptions[str] = Subscriptions()
    subs.replace("a", strict)
    assert subs.book_codes() == ["BBCA"] and subs.book_links("TLKM") == set()
    assert subs.price_links("TLKM") == {"a"} and subs.iep_links("BBCA") == {"a"}
    assert subs.active_codes() == {"BBCA", "TLKM"}, "a withheld book runs nothing"


# ---- e2e helpers ------------------------------------------------------------------------------


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorProcess]:
    """A simulator with default settings (and a journal)."""
    with SimulatorProcess.start(tmp_path / "sim") as process:
        yield process


def start_sim(tmp_path: Path, *args: str) -> SimulatorProcess:
    return SimulatorProcess.start(tmp_path / "sim", *args)


async def open_feed(
    sim: SimulatorProcess,
    books: tuple[str, ...] = (),
    trades: tuple[str, ...] = (),
    token: str | None = None,
    close_timeout: float = 10,
    *,
    companions: bool = True,
) -> ClientConnection:
    """Connect like the ingestor: fetch a key, auth frame, subscribe frame.

    The book codes go with ``liveprice``, ``iepiev`` and ``best_bid_offer`` unless
    ``companions`` is False (then a strict simulator sends no book).
    """
    token = token or sim.token()
    key = await asyncio.to_thread(sim.fetch_key, token)
    ws = await connect(
        sim.ws_url,
        subprotocols=[WEB],
        ping_interval=None,
        close_timeout=close_timeout,
    )
    await ws.send(request.auth(UID, key, token))
    extra = books if companions else ()
    frame = request.subscribe(
        UID, key, token, books, trades, liveprice=extra, iepiev=extra, best_bid_offer=extra
    )
    await ws.send(frame)
    return ws


async def frames_for(ws: ClientConnection, seconds: float) -> list[bytes]:
    """Every frame received in the next ``seconds``."""
    out: list[bytes] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(ws.recv(), left)
        except TimeoutError:
            break
        assert isinstance(message, bytes), "the feed sends binary frames only"
        out.append(message)
    return out


async def recv_bytes(ws: ClientConnection, timeout: float = 5) -> bytes:
    """The next frame, which must be binary."""
    message = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(message, bytes)
    return message


def decoded(raw: list[bytes]) -> list[ServerFrame]:
    return [wrapper.decode(m) for m in raw]


def books_of(frames: list[ServerFrame]) -> list[OrderBook]:
    return [f for f in frames if isinstance(f, OrderBook)]


def batches_of(frames: list[ServerFrame]) -> list[TradeBatch]:
    return [f for f in frames if isinstance(f, TradeBatch)]


def http_get(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as err:
        body = err.read()
        return err.code, json.loads(body) if err.headers.get_content_type().endswith("json") else {}


# ---- e2e: HTTP --------------------------------------------------------------------------------


@pytest.mark.e2e
def test_key_endpoint(sim: SimulatorProcess) -> None:
    url = f"{sim.api_url}/auth/websocket/key"
    status, body = http_get(url, sim.token())
    assert status == 200
    assert body["message"] == "Success get websocket key"
    key = body["data"]["key"]
    assert len(key) == 44 and len(base64.b64decode(key)) == 32
    assert http_get(url, "garbage")[0] == 401
    assert http_get(url, sim.token(ttl=-5))[0] == 401, "expired"
    assert http_get(url, mint_token("wrong secret", time.time()))[0] == 401
    status, body = http_get(url)
    assert status == 401 and "message" in body
    assert http_get(f"{sim.api_url}/nothing/here")[0] == 404


@pytest.mark.e2e
def test_printed_token_is_accepted(sim: SimulatorProcess) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "simulator", "--print-token", "--user-id", "99"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert printed.count(".") == 2
    assert sim.fetch_key(printed)


@pytest.mark.e2e
def test_missing_subprotocol_is_refused(sim: SimulatorProcess) -> None:
    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as refused:
            await connect(sim.ws_url)
        assert refused.value.response.status_code == 400
        # ...while ?wskey= is accepted and ignored.
        ws = await connect(f"{sim.ws_url}?wskey=abc", subprotocols=[WEB])
        assert ws.subprotocol == "web"
        await ws.close()

    asyncio.run(scenario())


# ---- e2e: the feed ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_books_and_trades_arrive(tmp_path: Path) -> None:
    async def scenario(sim: SimulatorProcess) -> list[ServerFrame]:
        ws = await open_feed(sim, books=("BBCA", "BUMI"), trades=("BBCA", "BUMI"))
        raw = await frames_for(ws, 2.5)
        await ws.close()
        return decoded(raw)

    # --rate 3, so that 2.5 s surely hold live prints and several snapshots per side.
    with start_sim(tmp_path, "--rate", "3") as sim:
        frames = asyncio.run(scenario(sim))
    # Right after the subscribe: a BID and an OFFER per code, then ~40 prints of backfill each.
    first = books_of(frames[:4])
    assert {(b.code, parse_body(b.body).side) for b in first} == {
        (code, side) for code in ("BBCA", "BUMI") for side in (BID, OFFER)
    }
    backfill = batches_of(frames[4:6])
    assert sorted(b.trades[0].code for b in backfill) == ["BBCA", "BUMI"]
    assert all(len(b.trades) >= 30 for b in backfill)

    last_seq: dict[tuple[str, str], int] = {}
    best: dict[tuple[str, str], int] = {}
    for book in books_of(frames):
        body = parse_body(book.body)
        assert body.code == book.code and book.board == 1 and 1 <= len(body.levels) <= 60
        assert all(lv.shares % 100 == 0 for lv in body.levels)
        assert book.time is not None and book.itch_time is not None
        assert book.time.utcoffset() is not None and book.itch_time <= book.time
        key = (book.code, body.side)
        assert book.seq > last_seq.get(key, 0), "seq rises per (code, side)"
        last_seq[key] = book.seq
        best[key] = body.levels[0].price
        if (book.code, BID) in best and (book.code, OFFER) in best:
            assert best[(book.code, BID)] < best[(book.code, OFFER)]
    live = [t for b in batches_of(frames)[2:] for t in b.trades]
    assert live, "live prints follow the backfill"
    assert all(1 <= len(b.trades) <= 3 for b in batches_of(frames)[2:])
    numbers = [t.trade_number for t in live]
    assert numbers == sorted(set(numbers))
    for t in live:
        assert t.shares % 100 == 0 and t.value == t.price * t.shares and t.time is not None
        assert t.action in (0, 1, 2) and t.board in (1, 3)
    assert len(books_of(frames)) >= 4 + 12, "about three snapshots per side per second"


@pytest.mark.e2e
def test_backfill_replays_prints_already_sent(sim: SimulatorProcess) -> None:
    async def scenario() -> tuple[set[int], list[int]]:
        first = await open_feed(sim, trades=("TLKM",))
        seen = {
            t.trade_number
            for f in batches_of(decoded(await frames_for(first, 2.0)))
            for t in f.trades
        }
        second = await open_feed(sim, trades=("TLKM",))
        frame = wrapper.decode(await recv_bytes(second))
        assert isinstance(frame, TradeBatch)
        await first.close()
        await second.close()
        return seen, [t.trade_number for t in frame.trades]

    seen, replay = asyncio.run(scenario())
    assert len(replay) == 40
    assert max(seen) in replay, "the backfill replays prints the first client already has"
    assert replay == sorted(replay)


@pytest.mark.e2e
def test_subscribers_of_one_ticker_share_frames_and_star_means_all_trades(
    sim: SimulatorProcess,
) -> None:
    async def scenario() -> tuple[list[ServerFrame], list[ServerFrame]]:
        first = await open_feed(sim, books=("BBCA",))
        await frames_for(first, 0.3)
        second = await open_feed(sim, books=("BBCA",), trades=("*",))
        both = await asyncio.gather(frames_for(first, 2.0), frames_for(second, 2.0))
        await first.close()
        await second.close()
        return decoded(both[0]), decoded(both[1])

    first, second = asyncio.run(scenario())
    # A hot-standby pair sees the very same snapshots (same seq, time and body); the two
    # windows differ only at their edges.
    seen_first = {(b.body[:12], b.seq): (b.time, b.body) for b in books_of(first)}
    seen_second = {(b.body[:12], b.seq): (b.time, b.body) for b in books_of(second)}
    common = seen_first.keys() & seen_second.keys()
    assert len(seen_second) >= 4
    assert len(common) >= len(seen_second) - 2
    assert all(seen_first[k] == seen_second[k] for k in common)
    codes = {t.code for batch in batches_of(second) for t in batch.trades}
    assert codes == {"BBCA"}
    assert batches_of(first) == []


@pytest.mark.e2e
def test_ping_gets_pong(sim: SimulatorProcess) -> None:
    async def scenario() -> ServerFrame:
        ws = await open_feed(sim)
        await ws.send(request.PING)
        reply = await recv_bytes(ws)
        await ws.close()
        assert reply == wrapper.PONG
        return wrapper.decode(reply)

    assert asyncio.run(scenario()) == Pong("pong")


@pytest.mark.e2e
@pytest.mark.parametrize("problem", ["forged token", "expired token", "unknown key", "no auth"])
def test_bad_credentials_get_one_401_then_silence(sim: SimulatorProcess, problem: str) -> None:
    async def scenario() -> list[bytes]:
        token = sim.token()
        key = await asyncio.to_thread(sim.fetch_key, token)
        if problem == "forged token":
            token = token.rsplit(".", 1)[0] + ".c2ln"
        elif problem == "expired token":
            token = sim.token(ttl=-1)
        elif problem == "unknown key":
            key = "A" * 43 + "="
        ws = await connect(sim.ws_url, subprotocols=[WEB])
        if problem == "no auth":
            await ws.send(request.encode(Request(channel=Channel(order_book=("BBCA",)))))
        else:
            await ws.send(request.subscribe(UID, key, token, ["BBCA"], ["BBCA"]))
        await ws.send(request.PING)
        await ws.send(request.subscribe(UID, key, sim.token(), ["BBCA"]))
        raw = await frames_for(ws, 1.5)
        await ws.close()
        return raw

    assert asyncio.run(scenario()) == [ERROR_401]


@pytest.mark.e2e
def test_undecodable_request_closes_the_socket(sim: SimulatorProcess) -> None:
    async def scenario() -> None:
        ws = await open_feed(sim)
        await ws.send(b"\x0a\xff\xff\xff")
        with pytest.raises(ConnectionClosed):
            await frames_for(ws, 3)
            await ws.recv()

    asyncio.run(scenario())


@pytest.mark.e2e
def test_journal_matches_what_the_client_received(tmp_path: Path) -> None:
    sim = start_sim(tmp_path)

    async def scenario() -> list[ServerFrame]:
        ws = await open_feed(sim, books=("BBCA", "ASII"), trades=("ASII",))
        raw = await frames_for(ws, 2.0)
        await ws.close()
        return decoded(raw)

    try:
        frames = asyncio.run(scenario())
        time.sleep(0.3)  # the server logs the close, then we stop it
    finally:
        assert sim.stop() == 0
    journal = [line for line in sim.journal() if line["conn"] == 1]
    assert len(journal) == len(frames)
    for line, frame in zip(journal, frames, strict=True):
        if isinstance(frame, OrderBook):
            assert line["kind"] == "book"
            assert (line["code"], line["seq"], line["body"]) == (frame.code, frame.seq, frame.body)
            assert line["side"] == parse_body(frame.body).side
            assert parse_iso(line["time"]) == frame.time
        elif isinstance(frame, LivePrice):
            assert line["kind"] == "price" and line["code"] == frame.code
            assert parse_iso(line["time"]) == frame.time
            assert (line["last"], line["shares"], line["value"], line["frequency"]) == (
                frame.last,
                frame.shares,
                frame.value,
                frame.frequency,
            )
            assert line["average"] == frame.average
        elif isinstance(frame, BestBidOffer):
            assert (line["kind"], line["code"]) == ("bbo", frame.code)
        else:
            assert isinstance(frame, TradeBatch)
            assert line["kind"] == "trades"
            assert [
                (t["code"], t["trade_number"], t["price"], t["shares"], t["action"], t["board"])
                for t in line["trades"]
            ] == [
                (t.code, t.trade_number, t.price, t.shares, t.action, t.board) for t in frame.trades
            ]
            assert [parse_iso(t["time"]) for t in line["trades"]] == [t.time for t in frame.trades]
    assert journal[4]["backfill"] is True


@pytest.mark.e2e
def test_sigterm_exits_zero(tmp_path: Path) -> None:
    sim = start_sim(tmp_path)

    async def scenario() -> None:
        ws = await open_feed(sim, books=("BBCA",))
        await frames_for(ws, 0.5)
        # Stop from a thread so this client can still answer the server's close handshake.
        assert await asyncio.to_thread(sim.stop) == 0
        with pytest.raises(ConnectionClosed):
            await frames_for(ws, 3)
            await ws.recv()

    asyncio.run(scenario())
    log = sim.log_path.read_text()
    assert "simulator listening on ws://127.0.0.1:" in log
    assert "simulator stopped" in log


# ---- e2e: keepalive and faults ----------------------------------------------------------------


@pytest.mark.e2e
def test_no_ping_means_dropped_after_the_window(tmp_path: Path) -> None:
    with start_sim(tmp_path, "--ping-window", "1.5") as sim:

        async def scenario() -> tuple[float, float]:
            silent = await open_feed(sim, books=("BBCA",))
            pinging = await open_feed(sim, books=("BBCA",))
            started = time.monotonic()

            async def keep_alive() -> None:
                while True:
                    await pinging.send(request.PING)
                    await asyncio.sleep(0.5)

            pinger = asyncio.create_task(keep_alive())
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(silent.recv(), 5)
            dropped_after = time.monotonic() - started
            assert closed.value.rcvd is None, "dropped without a close frame (1006)"
            await frames_for(pinging, 1.0)
            alive_after = time.monotonic() - started
            pinger.cancel()
            await pinging.close()
            return dropped_after, alive_after

        dropped_after, alive_after = asyncio.run(scenario())
        assert 1.0 < dropped_after < 3.0
        assert alive_after > 2.0


@pytest.mark.e2e
def test_malformed_every_nth_frame(tmp_path: Path) -> None:
    # Lenient, books only: every data frame is a book, so the count is easy to follow.
    with start_sim(tmp_path, "--malformed-every", "3", "--rate", "4", "--lenient") as sim:

        async def scenario() -> list[bytes]:
            ws = await open_feed(sim, books=("BBCA",), companions=False)
            raw = await frames_for(ws, 1.5)
            await ws.close()
            return raw

        raw = asyncio.run(scenario())
        assert len(raw) >= 6
        for index, frame in enumerate(raw, start=1):
            if index % 3 == 0:
                with pytest.raises(ProtocolError):
                    wrapper.decode(frame)
            else:
                assert isinstance(wrapper.decode(frame), OrderBook)
    kinds = [line["kind"] for line in sim.journal()][: len(raw)]
    assert kinds[2] == "malformed" and kinds[5] == "malformed"
    assert sim.journal()[2]["replaced"]["kind"] == "book"


@pytest.mark.e2e
def test_drop_every_aborts_connections(tmp_path: Path) -> None:
    with start_sim(tmp_path, "--drop-every", "1") as sim:

        async def scenario() -> float:
            ws = await open_feed(sim, books=("BBCA",))
            started = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is None
            return time.monotonic() - started

        assert 0.5 < asyncio.run(scenario()) < 2.5


@pytest.mark.e2e
def test_stall_stops_data_and_pongs(tmp_path: Path) -> None:
    with start_sim(tmp_path, "--stall-every", "1", "--stall-for", "1.5", "--rate", "5") as sim:

        async def scenario() -> tuple[list[bytes], list[bytes]]:
            ws = await open_feed(sim, books=("BBCA",))
            await frames_for(ws, 1.2)  # into the stall
            await ws.send(request.PING)
            during = await frames_for(ws, 0.9)
            after = await frames_for(ws, 1.0)
            await ws.close()
            return during, after

        during, after = asyncio.run(scenario())
        assert during == []
        assert len(after) >= 3
        assert wrapper.PONG not in after, "a ping lost in a stall is never answered"


@pytest.mark.e2e
def test_expire_token_after(tmp_path: Path) -> None:
    with start_sim(tmp_path, "--expire-token-after", "1") as sim:

        async def scenario() -> None:
            token = sim.token()
            ws = await open_feed(sim, books=("BBCA",), token=token)
            raw = await frames_for(ws, 2.0)
            assert raw[-1] == ERROR_401
            assert isinstance(wrapper.decode(raw[0]), OrderBook)
            assert await frames_for(ws, 1.2) == [], "silent after the 401"
            await ws.close()
            with pytest.raises(urllib.error.HTTPError):
                sim.fetch_key(token)
            fresh = await open_feed(sim, books=("BBCA",), token=sim.token(user_id=int(UID)))
            fresh_frames = decoded(await frames_for(fresh, 0.5))
            assert books_of(fresh_frames)
            await fresh.close()

        asyncio.run(scenario())


@pytest.mark.e2e
def test_virtual_clock_crosses_midnight(tmp_path: Path) -> None:
    args = ("--clock-start", "2026-03-02T23:59:58.5+07:00", "--clock-speed", "2", "--rate", "4")
    with start_sim(tmp_path, *args) as sim:

        async def scenario() -> list[OrderBook]:
            ws = await open_feed(sim, books=("TLKM",), trades=("TLKM",))
            frames = books_of(decoded(await frames_for(ws, 1.5)))
            await ws.close()
            return frames

        days = {b.time.date().isoformat() for b in asyncio.run(scenario()) if b.time}
        assert days == {"2026-03-02", "2026-03-03"}


@pytest.mark.e2e
def test_max_rate_floods_distinct_frames(tmp_path: Path) -> None:
    with start_sim(tmp_path, "--max-rate") as sim:

        async def scenario() -> list[OrderBook]:
            # A client that stops reading cannot see the server's close frame behind the
            # flood, so don't wait long for it.
            ws = await open_feed(sim, books=("BBCA", "TLKM"), close_timeout=0.2)
            books: list[OrderBook] = []
            others = 0
            while len(books) < 5_000:
                frame = wrapper.decode(await recv_bytes(ws))
                if isinstance(frame, OrderBook):
                    books.append(frame)
                else:
                    others += 1  # live prices after matches, the subscribe's quotes
            await ws.close()
            assert others < 100, "max rate floods books, the rest keeps its normal pace"
            return books

        books = asyncio.run(scenario())
        last: dict[tuple[str, str], int] = {}
        for book in books:
            key = (book.code, parse_body(book.body).side)
            assert book.seq > last.get(key, 0)
            last[key] = book.seq
        assert len(last) == 4


@pytest.mark.e2e
def test_max_rate_tape_rides_the_book_rounds(tmp_path: Path) -> None:
    """The tape keeps its schedule in max-rate mode, its frames carried by the book writes;
    a client with the tape and no books still gets it written on its own."""
    with start_sim(tmp_path, "--max-rate", "--pace", "2000", "--rate", "20") as sim:

        async def scenario() -> tuple[list[ServerFrame], list[ServerFrame]]:
            ws = await open_feed(sim, books=("BBCA",), trades=("BBCA",))
            tape_only = await open_feed(sim, books=(), trades=("TLKM",))
            both = await asyncio.gather(frames_for(ws, 2.0), frames_for(tape_only, 2.0))
            await ws.close()
            await tape_only.close()
            return decoded(both[0]), decoded(both[1])

        frames, tape_only = asyncio.run(scenario())
    batches = [b for b in batches_of(frames) if b.trades and b.trades[0].code == "BBCA"]
    assert len(books_of(frames)) >= 2000
    assert len(batches) >= 15, "about 20 batches a second keep flowing between the books"
    numbers = [t.trade_number for b in batches for t in b.trades]
    assert numbers == sorted(set(numbers))
    assert len(batches_of(tape_only)) >= 15
    assert books_of(tape_only) == []


# ---- e2e: strict mode, live prices, auctions ---------------------------------------------------


@pytest.mark.e2e
def test_strict_mode_sends_no_book_to_a_client_subscribing_order_book_alone(
    tmp_path: Path,
) -> None:
    async def scenario(sim: SimulatorProcess) -> tuple[list[ServerFrame], list[ServerFrame]]:
        alone = await open_feed(sim, books=("BBCA",), trades=("BBCA",), companions=False)
        proper = await open_feed(sim, books=("BBCA",), trades=("BBCA",))
        both = await asyncio.gather(frames_for(alone, 1.5), frames_for(proper, 1.5))
        await alone.close()
        await proper.close()
        return decoded(both[0]), decoded(both[1])

    with start_sim(tmp_path / "strict", "--rate", "4") as sim:
        alone, proper = asyncio.run(scenario(sim))
    assert books_of(alone) == [], "order_book alone: no book from a strict server"
    assert batches_of(alone), "...while the tape it asked for still flows"
    assert len(books_of(proper)) >= 4
    assert any(isinstance(f, LivePrice) for f in proper)
    assert any(isinstance(f, BestBidOffer) for f in proper)
    assert "no order book for BBCA" in sim.log_path.read_text()

    with start_sim(tmp_path / "lenient", "--rate", "4", "--lenient") as sim:
        alone, _ = asyncio.run(scenario(sim))
    assert len(books_of(alone)) >= 4, "--lenient streams order_book alone"


@pytest.mark.e2e
def test_live_prices_sum_up_the_tape(tmp_path: Path) -> None:
    async def scenario(sim: SimulatorProcess) -> list[ServerFrame]:
        ws = await open_feed(sim, books=("ASII",), trades=("ASII",))
        raw = await frames_for(ws, 2.5)
        await ws.close()
        return decoded(raw)

    # 10:00 on a trading day: no midnight in the window, no auction.
    args = ("--rate", "4", "--clock-start", "2026-03-03T10:00:00+07:00")
    with start_sim(tmp_path, *args) as sim:
        frames = asyncio.run(scenario(sim))
    # A fresh ticker's backfill is its whole day so far, so each LivePrice must equal the sum
    # of the prints received before it (the batch it follows included).
    prints: dict[int, Any] = {}
    prices = 0
    for frame in frames:
        if isinstance(frame, TradeBatch):
            prints.update((t.trade_number, t) for t in frame.trades)
        elif isinstance(frame, LivePrice):
            prices += 1
            tape = sorted(prints.values(), key=lambda t: t.trade_number)
            assert frame.frequency == len(tape)
            assert frame.shares == sum(t.shares for t in tape)
            assert frame.value == sum(t.value for t in tape)
            assert frame.average == frame.value / frame.shares
            assert frame.open == tape[0].price and frame.last == tape[-1].price
            assert frame.high == max(t.price for t in tape)
            assert frame.low == min(t.price for t in tape)
            assert frame.time == tape[-1].time
            assert frame.previous == 4800, "ASII's reference price: the previous close"
            assert 0 <= frame.foreign_buy <= frame.shares
            assert 0 <= frame.foreign_sell <= frame.shares
            assert frame.sequence is None, "field 19 is not attested on the wire: not sent"
    live_batches = len(batches_of(frames)) - 1
    assert live_batches >= 3
    assert prices == live_batches + 1, "one LivePrice per match batch, and one on subscribe"


@pytest.mark.e2e
def test_iep_iev_only_during_the_auctions(tmp_path: Path) -> None:
    async def scenario(sim: SimulatorProcess) -> list[ServerFrame]:
        ws = await open_feed(sim, books=("BBCA", "TLKM"))
        raw = await frames_for(ws, 3.0)
        await ws.close()
        return decoded(raw)

    # Monday 2 March 2026: pre-opening until 09:00:00 WIB, then session 1.
    args = ("--rate", "4", "--clock-start", "2026-03-02T08:59:57+07:00", "--clock-speed", "2")
    sim = start_sim(tmp_path, *args)
    try:
        frames = asyncio.run(scenario(sim))
    finally:
        assert sim.stop() == 0
    ieps = [f for f in frames if isinstance(f, IepIev)]
    assert {f.code for f in ieps} == {"BBCA", "TLKM"}
    sent = [line for line in sim.journal() if line["kind"] == "iep"]
    assert len(sent) == len(ieps) >= 4
    assert all(line["phase"] == "pre_opening" for line in sent)
    assert all(line["time"] < "2026-03-02T09:00:00" for line in sent)
    late_books = [
        b
        for b in books_of(frames)
        if b.time is not None and b.time.isoformat() > "2026-03-02T09:00:01"
    ]
    assert late_books, "books go on after the auction; IEP/IEV frames stop"
