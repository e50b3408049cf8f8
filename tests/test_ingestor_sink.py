"""The sink on a real redis-server: batches, per-ticker figures, caps, outages, gaps and custody records."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from ingestor.entries import Entry, EntryPacker, ReceivedClock
from ingestor.resp import RespConnection, RespError
from ingestor.sink import Sink, ticker_section
from pipeline import records
from pipeline.embedded_redis import EmbeddedRedis
from pipeline.keys import Keys
from pipeline.records import GapRecord, PriceRecord, TradeRecord
from stockbit import wrapper
from stockbit.book import Level, format_body
from stockbit.messages import OrderBook
from web.depth import depth_document

pytestmark = pytest.mark.redis

KEYS = Keys("obpipe:", 16)


def frame(code: str, side: str, seq: int, price: int = 8200, levels: int = 2) -> bytes:
    book_levels = [Level(price, 3, 12_300), Level(price - 25, 1, 100)]
    step = -25 if side == "BID" else 25
    book_levels += [Level(price + step * i, i, 100 * i) for i in range(2, levels)]
    body = format_body(code, side, tuple(book_levels[:levels]))
    book = OrderBook(code, body, seq, 1, None, 1, None)
    return wrapper.encode_orderbook(book, time_text=f"2026-03-02T10:15:30.{seq:06d}+07:00")


def entries(packer: EntryPacker, codes: list[str], count: int) -> list[Entry]:
    clock = ReceivedClock()
    out = []
    for seq in range(1, count + 1):
        for code in codes:
            entry = packer.book(frame(code, "BID" if seq % 2 else "OFFER", seq), clock.now())
            assert entry is not None
            out.append(entry)
    return out


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def make_sink(url: str, **kwargs: int) -> tuple[Sink, Any]:
    client = aioredis.Redis.from_url(url)
    options = {"buffer_max": 100_000, "stream_maxlen": 1_000_000, "batch_max": 2000, **kwargs}
    sink = Sink(
        client,
        KEYS,
        "ing-1",
        redis_url=url,
        buffer_max=options["buffer_max"],
        stream_maxlen=options["stream_maxlen"],
        batch_max=options["batch_max"],
    )
    return sink, client


def test_batches_land_in_order_with_ticker_figures(redis_url: str) -> None:
    async def scenario() -> None:
        sink, client = make_sink(redis_url, batch_max=50)
        task = asyncio.create_task(sink.run())
        packer = EntryPacker(KEYS, "ing-1", 1_000_000)
        batch = entries(packer, ["BBCA", "TLKM", "ASII"], 200)
        for entry in batch:
            sink.add(entry)
        sink.gap(GapRecord("a", "b", "disconnect", ("BBCA",), "ing-1"))
        sink.dead_letter("boom", b"\x00\x01")
        sink.count("server_errors", 2)
        assert await sink.close(task, 10)
        assert sink.written == 600
        for code in ("BBCA", "TLKM", "ASII"):
            stream = await client.xrange(KEYS.stream_for(code))
            mine = [
                records.parse({k.decode(): v.decode() for k, v in f.items()}) for _, f in stream
            ]
            seqs = [r.seq for r in mine if isinstance(r, records.BookRecord) and r.code == code]
            assert seqs == list(range(1, 201))
            figures = {
                k.decode(): v.decode() for k, v in (await client.hgetall(KEYS.ticker(code))).items()
            }
            assert figures["frames"] == "200"
            assert figures["best_bid"] == "8200" and figures["best_bid_lots"] == "123"
            assert figures["best_offer"] == "8200" and figures["best_offer_lots"] == "123"
            assert figures["last_update"].endswith("+07:00")
        gap = (await client.xrange(KEYS.gaps))[0][1]
        assert gap[b"cause"] == b"disconnect"
        dead = (await client.xrange(KEYS.deadletter))[0][1]
        assert dead[b"error"] == b"boom" and dead[b"raw"] == b"AAE="
        counters = await client.hgetall(KEYS.counters)
        assert counters[b"server_errors"] == b"2" and counters[b"bad_frames"] == b"1"
        assert counters[b"gaps"] == b"1"
        await client.aclose()

    asyncio.run(scenario())


def test_ticker_hash_keeps_the_top_ten_levels_of_each_side(redis_url: str) -> None:
    async def scenario() -> None:
        sink, client = make_sink(redis_url)
        task = asyncio.create_task(sink.run())
        packer = EntryPacker(KEYS, "ing-1", 1_000_000)
        clock = ReceivedClock()
        first = packer.book(frame("BBCA", "BID", 1, 8000, levels=15), clock.now())
        bid = packer.book(frame("BBCA", "BID", 2, 8200, levels=15), clock.now())
        offer = packer.book(frame("BBCA", "OFFER", 3, 8225, levels=4), clock.now())
        empty = packer.book(frame("TLKM", "OFFER", 1, levels=0), clock.now())
        assert first and bid and offer and empty
        for entry in (first, bid, offer, empty):
            sink.add(entry)
        assert await sink.close(task, 10)
        figures = await client.hgetall(KEYS.ticker("BBCA"))
        bid_levels = figures[b"bid_depth"].split(b"|")
        assert len(bid.levels.split(b"|")) == 15 and len(bid_levels) == 10
        assert bid.levels.startswith(figures[b"bid_depth"] + b"|")  # the newest BID, cut
        assert figures[b"bid_depth_at"] == bid.received
        assert figures[b"offer_depth"] == offer.levels  # fewer than 10: kept whole
        assert figures[b"offer_depth_at"] == offer.received
        assert figures[b"last_update"] == offer.received
        tlkm = await client.hgetall(KEYS.ticker("TLKM"))
        assert tlkm[b"offer_depth"] == b"" and b"bid_depth" not in tlkm
        await client.aclose()
        # What the web's depth view makes of it.
        web: Any = redis.Redis.from_url(redis_url, decode_responses=True)
        doc = depth_document(web, KEYS, "BBCA")
        web.close()
        assert doc["bid"]["received"] == bid.received.decode()
        assert [lv["price"] for lv in doc["bid"]["levels"]] == [8200 - 25 * i for i in range(10)]
        assert doc["bid"]["levels"][0] == {
            "price": 8200,
            "orders": 3,
            "shares": 12_300,
            "lots": 123,
        }
        assert len(doc["offer"]["levels"]) == 4

    asyncio.run(scenario())


def trade(packer: EntryPacker, code: str, number: int) -> Entry:
    received = ReceivedClock().now()
    record = TradeRecord(
        code, number, 8200.0, 100.0, 1, 1, 820_000.0, received.decode(), "", "ing-1"
    )
    return packer.record(record, received)


def test_only_the_primary_updates_the_ticker_hash(redis_url: str) -> None:
    """With R = 2 both replicas append every entry, but only the primary counts them."""

    async def scenario() -> None:
        sink, client = make_sink(redis_url)
        sink.set_primary(frozenset({"BBCA"}))  # a replica of TLKM
        task = asyncio.create_task(sink.run())
        packer = EntryPacker(KEYS, "ing-1", 1_000_000)
        for entry in entries(packer, ["BBCA", "TLKM"], 10):
            sink.add(entry)
        sink.add(trade(packer, "BBCA", 1))
        sink.add(trade(packer, "TLKM", 2))
        await until(lambda: asyncio.sleep(0, sink.written == 22))
        assert await client.hget(KEYS.ticker("BBCA"), "frames") == b"10"
        assert await client.hget(KEYS.ticker("BBCA"), "trades") == b"1"
        assert not await client.exists(KEYS.ticker("TLKM"))
        tlkm = [f for _, f in await client.xrange(KEYS.stream_for("TLKM")) if f[b"c"] == b"TLKM"]
        assert len(tlkm) == 11  # the entries themselves are appended all the same
        # TLKM's primary died: at the next membership refresh this ingestor takes it over.
        sink.set_primary(frozenset({"BBCA", "TLKM"}))
        for entry in entries(packer, ["BBCA", "TLKM"], 4):
            sink.add(entry)
        assert await sink.close(task, 10)
        assert await client.hget(KEYS.ticker("BBCA"), "frames") == b"14"
        assert await client.hget(KEYS.ticker("TLKM"), "frames") == b"4"
        assert await client.hget(KEYS.ticker("TLKM"), "bid_depth") is not None
        await client.aclose()

    asyncio.run(scenario())


def price(packer: EntryPacker, code: str, frequency: int, shares: float) -> Entry:
    received = ReceivedClock().now()
    record = PriceRecord(
        code, 8225.0, 8175.0, 8250.0, 8150.0, 8175.0, shares, shares * 8200, float(frequency),
        8200.0, 0.0, 0.0, None, received.decode(), "", "ing-1",
    )  # fmt: skip
    return packer.record(record, received)


def test_live_prices_and_tallies_reach_the_ticker_hash(redis_url: str) -> None:
    """The last LivePrice gives last price, previous close and day lots; IEP/IEV and best
    bid/offer frames are counted; books and trades keep their own counts."""

    async def scenario() -> None:
        sink, client = make_sink(redis_url)
        sink.set_primary(frozenset({"BBCA"}))
        task = asyncio.create_task(sink.run())
        packer = EntryPacker(KEYS, "ing-1", 1_000_000)
        for entry in entries(packer, ["BBCA"], 4):
            sink.add(entry)
        sink.add(price(packer, "BBCA", 10, 120_000.0))
        sink.add(trade(packer, "BBCA", 1))
        sink.add(price(packer, "BBCA", 11, 123_450.0))
        sink.add(price(packer, "TLKM", 3, 500.0))  # a replica: appended, not shown
        for field in ("iep_frames", "iep_frames", "bbo_frames"):
            sink.tally("BBCA", field)
        sink.tally("TLKM", "iep_frames")
        assert await sink.close(task, 10)
        figures = {
            k.decode(): v.decode() for k, v in (await client.hgetall(KEYS.ticker("BBCA"))).items()
        }
        assert (figures["frames"], figures["trades"], figures["prices"]) == ("4", "1", "2")
        assert figures["last_price"] == "8225" and figures["prev_close"] == "8175"
        assert figures["day_lots"] == "1234.5", "the newest LivePrice, shares / 100"
        assert (figures["iep_frames"], figures["bbo_frames"]) == ("2", "1")
        assert figures["best_bid"] == "8200", "a LivePrice is no book side"
        assert not await client.exists(KEYS.ticker("TLKM"))
        prices = [f for _, f in await client.xrange(KEYS.stream_for("TLKM")) if f[b"k"] == b"p"]
        assert len(prices) == 1
        await client.aclose()

    asyncio.run(scenario())


def test_ticker_section_skips_tickers_it_is_not_primary_for() -> None:
    packer = EntryPacker(KEYS, "ing-1", 1_000_000)
    batch = entries(packer, ["BBCA", "TLKM", "ASII"], 3)
    everything, count_all, per_code = ticker_section(KEYS, batch)
    assert count_all == 6  # HINCRBY frames + HSET, per ticker
    assert per_code == {"BBCA": 3, "TLKM": 3, "ASII": 3}
    some, count_some, per_code_some = ticker_section(KEYS, batch, frozenset({"TLKM"}))
    assert count_some == 2 and per_code_some == per_code  # cap accounting still sees all
    assert b"ticker:TLKM" in some and b"ticker:BBCA" not in some
    nothing, count_none, _ = ticker_section(KEYS, batch, frozenset())
    assert (nothing, count_none) == (b"", 0)
    assert b"ticker:BBCA" in everything


def test_hitting_the_cap_is_counted(redis_url: str) -> None:
    async def scenario() -> None:
        sink, client = make_sink(redis_url, stream_maxlen=1000, batch_max=500)
        task = asyncio.create_task(sink.run())
        packer = EntryPacker(KEYS, "ing-1", 1000)
        for entry in entries(packer, ["BBCA"], 3000):
            sink.add(entry)
        await until(lambda: asyncio.sleep(0, sink.written == 3000))
        sink._next_cap_check = 0  # check now rather than in 2 s
        sink.count("tick")
        await until(lambda: asyncio.sleep(0, sink.trims > 0))
        assert await sink.close(task, 10)
        assert 1000 <= await client.xlen(KEYS.stream_for("BBCA")) < 1200
        assert int(await client.hget(KEYS.counters, "maxlen_trims") or 0) >= 1000
        await client.aclose()

    asyncio.run(scenario())


def test_outage_buffers_then_overflows_then_catches_up(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    server.start()

    async def scenario() -> None:
        sink, client = make_sink(server.url, buffer_max=500, batch_max=100)
        task = asyncio.create_task(sink.run())
        packer = EntryPacker(KEYS, "ing-1", 1_000_000)
        batch = entries(packer, ["BBCA"], 1000)
        for entry in batch[:100]:
            sink.add(entry)
        await until(lambda: asyncio.sleep(0, sink.written == 100))
        server.stop()
        for entry in batch[100:]:
            sink.add(entry)
            await asyncio.sleep(0)
        assert sink.dropped == 400 and sink.buffered == 500
        await asyncio.sleep(0.3)
        server.start()
        await until(lambda: asyncio.sleep(0, sink.buffered == 0), 20)
        assert await sink.close(task, 10)
        stream = await client.xrange(KEYS.stream_for("BBCA"))
        seqs = sorted({int(f[b"q"]) for _, f in stream})
        assert seqs == list(range(1, 601))  # everything buffered arrived
        gap = (await client.xrange(KEYS.gaps))[0][1]
        assert gap[b"cause"] == b"overflow" and gap[b"tickers"] == b"BBCA"
        assert b"400 frame(s) dropped" in gap[b"detail"]
        assert await client.hget(KEYS.counters, "overflow") == b"400"
        await client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_custody_follows_the_entries_and_a_release_waits_for_them(redis_url: str) -> None:
    """Continuity evidence: per ticker the last stored receive time of this run, the first
    stored frame of a ticker just taken, and a clean release written after what came before."""

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url)
        sink = Sink(
            client,
            KEYS,
            "ing-1",
            redis_url=redis_url,
            buffer_max=100_000,
            stream_maxlen=1_000_000,
            batch_max=50,
            holder="ing-1@r1",
        )
        packer = EntryPacker(KEYS, "ing-1", 1_000_000)
        batch = entries(packer, ["BBCA", "TLKM"], 200)
        since = batch[100].received.decode()
        sink.await_first("TLKM", since)
        for entry in batch:
            sink.add(entry)
        # Queued behind every entry so far: written only once all of them are in Redis.
        assert sink.release(["BBCA"], "2026-03-02T10:15:31.000000+07:00")
        task = asyncio.create_task(sink.run())
        assert await sink.close(task, 10)
        last = {
            code: [e.received for e in batch if e.code == code][-1] for code in ("BBCA", "TLKM")
        }
        assert await client.hget(KEYS.custody("BBCA"), "ing-1@r1") == last["BBCA"]
        # TLKM was just taken: its custody is pending until the claim is judged.
        assert await client.hgetall(KEYS.custody("TLKM")) == {b"ing-1@r1~": last["TLKM"]}
        first = next(e.received for e in batch[100:] if e.code == "TLKM")
        assert sink.first_stored("TLKM") == first.decode() and sink.first_stored("BBCA") is None
        released = await client.hget(KEYS.custody("BBCA"), "ing-1@r1:released")
        assert released == b"2026-03-02T10:15:31.000000+07:00"
        assert not await client.hexists(KEYS.custody("TLKM"), "ing-1@r1:released")
        # Judged (after the gap record it needed is stored): the value becomes proof, and the
        # earlier holder's evidence goes.
        await client.hset(KEYS.custody("TLKM"), "ing-0@r0", "2026-03-02T10:00:00+07:00")
        sink.gap(GapRecord("a", "b", "ticker_moved", ("TLKM",), "ing-1"))
        sink.settle("TLKM", ["ing-0@r0"])
        task = asyncio.create_task(sink.run())
        assert await sink.close(task, 10)
        assert await client.hgetall(KEYS.custody("TLKM")) == {b"ing-1@r1": last["TLKM"]}
        assert await client.xlen(KEYS.gaps) == 1
        await client.aclose()

    asyncio.run(scenario())


def test_no_clean_release_while_frames_are_dropped() -> None:
    async def scenario() -> None:
        sink, _client = make_sink("redis://127.0.0.1:9", buffer_max=100)
        assert not sink.release(["BBCA"], "t"), "no holder: no custody kept"
        sink.holder = "ing-1@r1"
        packer = EntryPacker(KEYS, "ing-1", 1_000_000)
        for entry in entries(packer, ["BBCA"], 101):
            sink.add(entry)
        assert sink.dropped == 1 and not sink.release(["BBCA"], "t")

    asyncio.run(scenario())


def test_resp_connection_skips_replies_and_reports_errors(redis_url: str) -> None:
    async def scenario() -> None:
        conn = await RespConnection.open(redis_url.replace("/0", "/3"))
        conn.write(
            b"*3\r\n$3\r\nSET\r\n$1\r\ns\r\n$3\r\nabc\r\n"
            b"*2\r\n$4\r\nINCR\r\n$1\r\ns\r\n"
            b"*3\r\n$5\r\nRPUSH\r\n$1\r\nl\r\n$1\r\nx\r\n"
            b"*4\r\n$6\r\nLRANGE\r\n$1\r\nl\r\n$1\r\n0\r\n$2\r\n-1\r\n"
            b"*2\r\n$3\r\nGET\r\n$4\r\nnone\r\n"
        )
        await conn.drain()
        errors = await conn.skip(5)
        assert len(errors) == 1 and "not an integer" in errors[0]
        conn.close()
        check: Any = redis.Redis.from_url(redis_url.replace("/0", "/3"))
        assert check.get("s") == b"abc"
        check.close()

    asyncio.run(scenario())


def test_resp_connection_refused_auth_does_not_echo_the_password(redis_url: str) -> None:
    async def scenario() -> None:
        url = redis_url.replace("redis://", "redis://:sup3rsecret@")
        with pytest.raises(RespError) as refused:
            await RespConnection.open(url)
        assert "sup3rsecret" not in str(refused.value)

    asyncio.run(scenario())
