"""The sink against a real redis-server: batches, per-ticker figures, caps, outages, gaps."""

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
from ingestor.sink import Sink
from pipeline import records
from pipeline.embedded_redis import EmbeddedRedis
from pipeline.keys import Keys
from pipeline.records import GapRecord
from stockbit import wrapper
from stockbit.book import Level, format_body
from stockbit.messages import OrderBook

pytestmark = pytest.mark.redis

KEYS = Keys("obpipe:", 16)


def frame(code: str, side: str, seq: int, price: int = 8200) -> bytes:
    body = format_body(code, side, (Level(price, 3, 12_300), Level(price - 25, 1, 100)))
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
    options = {"buffer_max": 100_000, "stream_maxlen": 1_000_000, **kwargs}
    return Sink(client, KEYS, "ing-1", redis_url=url, **options), client


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
