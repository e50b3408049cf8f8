"""Strict simulator → 2 replicas → writer: every book, print and LivePrice on disk exactly once."""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from rq import Queue, SimpleWorker

from bench import audit
from bench.audit import gap_windows
from bench.stack import KEYS, Stack, wait_for
from jobs.finalize import finalize_day
from jobs.queue import QUEUE
from pipeline.layout import PRICES, TRADES
from stockbit.timestamps import WIB, parse_iso, wib_iso

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(240)]

TICKERS = ("BBCA", "TLKM")
PriceKey = tuple[str, str, int, int]
"""(code, exchange time, trade count, shares): a LivePrice's identity without field 19."""


def journal_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def sent_prices(lines: list[dict[str, Any]]) -> tuple[dict[PriceKey, dict[str, Any]], int]:
    """Distinct LivePrice messages sent (any connection), and how many sends repeated one."""
    sends: Counter[PriceKey] = Counter()
    prices: dict[PriceKey, dict[str, Any]] = {}
    for line in lines:
        if line["kind"] == "price":
            key = (
                line["code"],
                wib_iso(parse_iso(line["time"])),
                line["frequency"],
                line["shares"],
            )
            sends[key] += 1
            prices[key] = line
    return prices, sum(n - 1 for n in sends.values())


def covered(code: str, moment: str, gaps: list[tuple[datetime, datetime, set[str], str]]) -> bool:
    at = parse_iso(moment)
    slack = timedelta(seconds=2)
    return any(
        (not tickers or code in tickers) and start - slack <= at <= end + slack
        for start, end, tickers, _ in gaps
    )


def test_books_trades_and_prices_exactly_once_with_hot_standby(tmp_path: Path) -> None:
    stack = Stack(
        tmp_path,
        ingestors=2,
        replication=2,
        tickers=",".join(TICKERS),
        # Strict is the simulator's default: the ingestors' subscription must carry the
        # book's companions for any book to arrive. Drops make every ingestor resubscribe,
        # and each resubscribe replays the current LivePrice and the recent tape.
        sim_args=("--rate", "4", "--drop-every", "3"),
    )
    stack.start()
    try:
        wait_for(stack.ready, 30, "the pipeline")
        client = stack.client
        assert client is not None
        wait_for(
            lambda: sum(s.reconnects for s in stack.live()["ingestors"]) >= 4, 40, "4 reconnects"
        )
        wait_for(stack.settled, 30, "the writers to catch up")
        hashes = {
            code: cast(dict[bytes, bytes], client.hgetall(KEYS.ticker(code))) for code in TICKERS
        }
    finally:
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), codes
    assert stack.sim is not None
    lines = journal_lines(stack.sim.journal_path)
    gaps = gap_windows(stack.data_dir)

    # Books: the audit of the soak (every sent snapshot once, or inside a recorded gap).
    books = audit.run(stack.sim.journal_path, stack.data_dir)
    assert books.frames > 50 and books.ok, (books.line(), books.examples)
    assert books.duplicated == 0

    # Trades: once each by (code, trade number), despite two replicas and the backfills.
    trades_sent = {
        (t["code"], t["trade_number"]): t
        for line in lines
        if line["kind"] == "trades"
        for t in line["trades"]
    }
    trades_on_disk: Counter[tuple[str, int]] = Counter()
    for path in sorted((stack.data_dir / TRADES).glob("*.csv")):
        code = path.stem.split("_", 1)[1]
        with path.open(newline="") as handle:
            trades_on_disk.update(
                (code, int(row["trade_number"])) for row in csv.DictReader(handle)
            )
    assert [k for k, n in trades_on_disk.items() if n > 1] == []
    lost = [
        k
        for k, t in trades_sent.items()
        if k not in trades_on_disk and not covered(k[0], t["time"], gaps)
    ]
    assert lost == []

    # Prices: every LivePrice once, although each was sent to both replicas and replayed on
    # every resubscribe.
    sent, resent = sent_prices(lines)
    # (a LivePrice sent while the other replica was reconnecting reaches one connection only)
    assert len(sent) >= 20 and resent > len(sent) // 2, "replicas and replays repeat LivePrices"
    on_disk: Counter[PriceKey] = Counter()
    days = set()
    for path in sorted((stack.data_dir / PRICES).glob("*.csv")):
        code = path.stem.split("_", 1)[1]
        days.add(path.stem[:10])
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            assert reader.fieldnames is not None and reader.fieldnames[-1] == "sequence"
            for row in reader:
                shares = round(float(row["lots"]) * 100)
                key = (code, row["timestamp"], int(row["frequency"]), shares)
                on_disk[key] += 1
                line = sent[key]
                assert row["timestamp"] == line["time"] and path.stem.startswith(line["time"][:10])
                assert (float(row["price"]), float(row["open"])) == (line["last"], line["open"])
                assert (float(row["high"]), float(row["low"])) == (line["high"], line["low"])
                assert float(row["prev_close"]) == line["previous"]
                assert row["lots"] == str(line["shares"] // 100)  # the simulator trades whole lots
                assert int(row["total_value"]) == line["value"]
                assert float(row["average"]) == line["average"]
                assert float(row["foreign_buy"]) == line["foreign_buy"]
                assert float(row["foreign_sell"]) == line["foreign_sell"]
                assert row["sequence"] == ""  # the simulator leaves field 19 out
                assert row["received_at"].endswith("+07:00")
    assert [k for k, n in on_disk.items() if n > 1] == [], "duplicated LivePrice rows"
    missing = [k for k in sent if k not in on_disk and not covered(k[0], k[1], gaps)]
    assert missing == []

    # The ticker HASH: the last LivePrice's figures, and the counted IEP/BBO frames.
    for code in TICKERS:
        figures = {k.decode(): v.decode() for k, v in hashes[code].items()}
        assert int(figures["prices"]) > 0 and figures["last_price"] and figures["prev_close"]
        assert float(figures["day_lots"]) > 0
        assert int(figures["bbo_frames"]) > 0, "best bid/offer frames arrive and are counted"

    # finalize_day inspects the prices files with the others: nothing to complain about.
    stack.redis.start()
    try:
        redis_client = redis.Redis.from_url(stack.redis.url)
        queue = Queue(QUEUE, connection=redis_client)
        for day in sorted(days):
            later = datetime.fromisoformat(day).replace(tzinfo=WIB) + timedelta(days=2)
            queue.enqueue(finalize_day, day, str(stack.data_dir), now=later)
        SimpleWorker([queue], connection=redis_client).work(burst=True)
        redis_client.close()
    finally:
        stack.redis.stop()
    for day in days:
        manifest = json.loads((stack.data_dir / "manifests" / f"{day}.json").read_text())
        assert manifest["ok"], manifest["problems"]
        prices_files = [f for f in manifest["files"] if f["path"].startswith(f"{PRICES}/")]
        assert prices_files and all(f["rows"] == f["expected_rows"] for f in prices_files)
