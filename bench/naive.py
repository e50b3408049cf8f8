"""The naive pipeline the end-to-end benchmark compares against, as two processes.

What a first version of this tool would do, with the same codec and record format:

- ``python -m bench.naive ingest WS_URL API_URL TOKEN REDIS_URL``: receive a frame, decode
  it, ``await XADD`` it (one round trip per frame); it subscribes as the ingestor does (each
  ticker's ``order_book`` with ``liveprice``, ``iepiev`` and ``best_bid_offer``, which the
  strict simulator requires) and keeps only the order books;
- ``python -m bench.naive write REDIS_URL DIR``: ``XREADGROUP COUNT 1`` (one entry per round
  trip), one ``csv.writer.writerow`` and one ``flush`` per row, ``XACK`` per entry.

Both publish their count once a second under ``naive:frames`` / ``naive:rows`` so the
benchmark can measure them exactly the way it measures the real pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import sys
import time
from pathlib import Path
from typing import Any, TextIO, cast

import redis
import redis.asyncio as aioredis

from pipeline.keys import WRITER_GROUP, Keys
from pipeline.records import BookRecord, from_book, parse
from stockbit import wrapper
from stockbit.book import parse_levels
from stockbit.messages import OrderBook

KEYS = Keys()
TICKERS = ("BBCA", "BBRI", "BMRI", "BBNI", "TLKM", "ASII", "UNVR", "ICBP", "GOTO", "ADRO")


async def ingest(ws_url: str, api_url: str, token: str, redis_url: str) -> None:
    """Receive → decode → XADD, one awaited round trip per frame."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from websockets.asyncio.client import connect  # noqa: PLC0415
    from websockets.typing import Subprotocol  # noqa: PLC0415

    from ingestor.credentials import fetch_key  # noqa: PLC0415
    from stockbit import request  # noqa: PLC0415
    from stockbit.token import read_claims  # noqa: PLC0415

    client = aioredis.Redis.from_url(redis_url)
    key = fetch_key(api_url, token)
    user = read_claims(token).user_id or ""
    frames = 0
    published = time.monotonic()
    async with connect(ws_url, subprotocols=[Subprotocol("web")], max_size=None) as ws:
        await ws.send(request.auth(user, key, token))
        await ws.send(request.subscribe_books(user, key, token, TICKERS, trades=False))
        async for message in ws:
            frame = wrapper.decode(message if isinstance(message, bytes) else message.encode())
            if not isinstance(frame, OrderBook):
                continue
            record = from_book(frame, datetime.now(UTC), "naive")
            await client.xadd(KEYS.stream_for(record.code), record.fields())  # type: ignore[arg-type]
            frames += 1
            if time.monotonic() - published >= 1:
                published = time.monotonic()
                await client.set("naive:frames", frames)


def write(redis_url: str, directory: Path) -> None:
    """XREADGROUP one entry at a time, writerow + flush per row, XACK per entry."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    streams = KEYS.streams()
    for stream in streams:
        with contextlib.suppress(redis.ResponseError):
            client.xgroup_create(stream, WRITER_GROUP, id="0", mkstream=True)
    directory.mkdir(parents=True, exist_ok=True)
    handles: dict[str, tuple[TextIO, Any]] = {}
    rows = 0
    published = time.monotonic()
    while True:
        reply = cast(
            Any,
            client.xreadgroup(
                WRITER_GROUP, "naive", dict.fromkeys(streams, ">"), count=1, block=100
            ),
        )
        # RESP3 (redis-py's default with Redis >= 6) answers a map, RESP2 a list of pairs.
        pairs = reply.items() if isinstance(reply, dict) else reply or []
        for stream, entries in pairs:
            for entry_id, fields in entries:
                record = parse(fields)
                if isinstance(record, BookRecord):
                    path = directory / f"{record.day}_{record.code}.csv"
                    if str(path) not in handles:
                        opened = path.open("a", newline="")
                        handles[str(path)] = (opened, csv.writer(opened))
                    handle, writer = handles[str(path)]
                    for level, lv in enumerate(parse_levels(record.levels), start=1):
                        writer.writerow(
                            [record.time, lv.price, lv.shares // 100, lv.price * lv.shares,
                             record.side, level, lv.orders, record.seq, record.received]
                        )  # fmt: skip
                        handle.flush()
                        rows += 1
                client.xack(stream, WRITER_GROUP, entry_id)
        if time.monotonic() - published >= 1:
            published = time.monotonic()
            client.set("naive:rows", rows)


def main(argv: list[str]) -> int:
    """``ingest WS_URL API_URL TOKEN REDIS_URL`` or ``write REDIS_URL DIR``."""
    if argv[:1] == ["ingest"]:
        asyncio.run(ingest(*argv[1:5]))
    elif argv[:1] == ["write"]:
        write(argv[1], Path(argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
