"""Trades go end to end into the trades CSV exactly once across reconnect backfills, and finalize_day verifies those files."""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker

from bench.audit import gap_windows
from bench.stack import Stack, wait_for
from jobs.finalize import finalize_day
from jobs.queue import QUEUE
from stockbit.timestamps import WIB, parse_iso

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(240)]

SIDES = {1: "BUY", 2: "SELL"}
BOARDS = {1: "RG", 2: "TN", 3: "NG"}


def journal_trades(path: Path) -> tuple[dict[tuple[str, int], dict[str, Any]], int]:
    """Unique prints sent (by code and trade number), and how many were sent again."""
    trades: dict[tuple[str, int], dict[str, Any]] = {}
    sends: Counter[tuple[str, int]] = Counter()
    for line in path.read_text().splitlines():
        item = json.loads(line)
        if item["kind"] != "trades":
            continue
        for trade in item["trades"]:
            key = (trade["code"], int(trade["trade_number"]))
            sends[key] += 1
            trades[key] = trade
    return trades, sum(n - 1 for n in sends.values())


def test_trades_exactly_once_across_backfills_and_finalized(tmp_path: Path) -> None:
    stack = Stack(
        tmp_path,
        tickers="BBCA,TLKM",
        sim_args=("--rate", "4", "--drop-every", "2.5"),
        env={"LEASE_TTL_MS": "2000"},
    )
    stack.start()
    try:
        wait_for(stack.ready, 30, "the pipeline")
        assert stack.client is not None
        wait_for(
            lambda: sum(s.reconnects for s in stack.live()["ingestors"]) >= 3, 40, "3 reconnects"
        )
        wait_for(stack.settled, 30, "the writer to catch up")
    finally:
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), codes
    assert stack.sim is not None
    sent, resent = journal_trades(stack.sim.journal_path)
    assert resent >= 20, "the reconnect backfills must have replayed prints"

    on_disk: Counter[tuple[str, int]] = Counter()
    days = set()
    for path in sorted((stack.data_dir / "trades").glob("*.csv")):
        code = path.stem.split("_", 1)[1]
        days.add(path.stem[:10])
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                key = (code, int(row["trade_number"]))
                on_disk[key] += 1
                trade = sent[key]
                shares = int(trade["shares"])
                price = int(trade["price"])
                assert row["timestamp"] == trade["time"]
                assert (int(row["price"]), row["lots"]) == (price, str(shares // 100))
                assert int(row["total_value"]) == price * shares
                assert row["side"] == SIDES.get(int(trade["action"]), "")
                assert row["board"] == BOARDS[int(trade["board"])]
                assert row["timestamp"].endswith("+07:00") and row["received_at"].endswith("+07:00")
    assert [k for k, n in on_disk.items() if n > 1] == [], "duplicated prints"
    gaps = gap_windows(stack.data_dir)
    slack = timedelta(seconds=2)
    missing = [
        key
        for key, trade in sent.items()
        if key not in on_disk
        and not any(
            start - slack <= parse_iso(str(trade["time"])) <= end + slack for start, end, *_ in gaps
        )
    ]
    assert missing == []

    # finalize_day on the writer's own files, as the RQ worker runs it after the day ends
    stack.redis.start()
    try:
        client = redis.Redis.from_url(stack.redis.url)
        queue = Queue(QUEUE, connection=client)
        for day in sorted(days):
            later = datetime.fromisoformat(day).replace(tzinfo=WIB) + timedelta(days=2)
            queue.enqueue(finalize_day, day, str(stack.data_dir), now=later)
        SimpleWorker([queue], connection=client).work(burst=True)
        client.close()
    finally:
        stack.redis.stop()
    for day in days:
        manifest = json.loads((stack.data_dir / "manifests" / f"{day}.json").read_text())
        assert manifest["ok"], manifest["problems"]
        for entry in manifest["files"]:
            assert entry["rows"] == entry["expected_rows"], entry
        trades_today = [k for k in on_disk if sent[k]["time"].startswith(day)]
        assert sum(t["trades"] for t in manifest["tickers"].values()) == len(trades_today)
