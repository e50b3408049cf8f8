"""The writer process end to end: real redis-server, writer subprocesses, kill -9, rebalancing."""

# The streams are fed by XADDing records made the way the ingestor makes them
# (``pipeline.records.from_book`` / ``from_trade`` on frames) from the simulator's market model
# (``simulator.market.Market``) on a virtual clock that crosses midnight WIB, with a share of each
# record XADDed twice (as two replicated ingestors would), some odd lots, trades and gap records.
# The audit rebuilds every file from the list of what was XADDed with an independent formatter and
# compares bytes: every snapshot exactly once, in order, no partial line. One writer runs under an
# open-file limit of 64 with 100 tickers' files to keep.

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import cast

import pytest
import redis

from bench.stack import wait_for
from pipeline.keys import Keys
from pipeline.membership import mine
from pipeline.records import BookRecord, GapRecord, TradeRecord, from_book, from_trade
from pipeline.status import WriterStatus
from simulator.market import Market
from stockbit.messages import OrderBook, RunningTrade
from stockbit.timestamps import WIB, parse_iso

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

PARTITIONS = 4
KEYS = Keys("obpipe:", PARTITIONS)
CODES = ("BBCA", "BBRI", "TLKM", "ASII", "GOTO", "BMRI", "ANTM", "UNVR")
MIDNIGHT = datetime(2026, 3, 3, tzinfo=WIB)
BOOK_HEADER = "timestamp,price,lots,total_value,side,level,orders,seq,received_at\n"
TRADE_HEADER = "timestamp,price,lots,total_value,side,trade_number,board,received_at\n"
GAP_HEADER = "start,end,cause,tickers,ingestor,detail\n"


# --- expected rows, formatted independently of writer/ ---------------------------------------


def _lots(shares: int) -> str:
    text = f"{Decimal(shares) / 100:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def book_text(rec: BookRecord) -> str:
    out = []
    for level, part in enumerate((p for p in rec.levels.split("|") if p), 1):
        price, orders, shares = (int(x) for x in part.split(";"))
        out.append(
            f"{rec.time},{price},{_lots(shares)},{price * shares},{rec.side},{level},{orders},"
            f"{rec.seq},{rec.received}\n"
        )
    return "".join(out)


def trade_text(rec: TradeRecord) -> str:
    price, shares = int(rec.price), int(rec.shares)
    side = {1: "BUY", 2: "SELL"}.get(rec.action, "")
    board = {1: "RG", 2: "TN", 3: "NG"}.get(rec.board, "")
    return (
        f"{rec.time},{price},{_lots(shares)},{price * shares},{side},{rec.trade_number},"
        f"{board},{rec.received}\n"
    )


class Clock:
    """The market's virtual clock: moved by the feeder, never by the machine."""

    def __init__(self, start: datetime) -> None:
        self.ns = int(start.timestamp()) * 1_000_000_000

    def now_ns(self) -> int:
        return self.ns


class Feed:
    """Records XADDed to the streams, and what the files must hold afterwards."""

    def __init__(
        self,
        client: redis.Redis,
        seed: int,
        start: datetime,
        levels: int = 20,
        codes: tuple[str, ...] = CODES,
    ) -> None:
        self.client = client
        self.codes = codes
        self.rng = random.Random(seed)
        self.clock = Clock(start)
        self.market = Market(self.clock, random.Random(seed), levels=levels)
        self.expected: dict[str, list[str]] = {}
        self.seen: set[tuple[str, object]] = set()
        self.last_ids: dict[str, bytes] = {}
        self.added = 0
        self.stop = threading.Event()
        self.pending_copy: tuple[str, dict[str, str], str, object] | None = None

    def _add(self, stream: str, fields: dict[str, str], path: str, key: object, text: str) -> None:
        entry = cast(bytes, self.client.xadd(stream, fields))  # type: ignore[arg-type]
        self.last_ids[stream] = entry
        self.added += 1
        if (path, key) not in self.seen:
            self.seen.add((path, key))
            self.expected.setdefault(path, []).append(text)

    def book(self, code: str, side: str) -> None:
        snap = self.market.book(code, side)
        body = snap.body
        if self.rng.random() < 0.05:  # an odd lot: shares not a multiple of 100
            head, _, last = body.rpartition(";")
            body = f"{head};{int(last) + 37}"
        frame = OrderBook(code, body, snap.seq, snap.book_id, parse_iso(snap.time), 1)
        received = parse_iso(snap.time) + timedelta(milliseconds=self.rng.randint(1, 40))
        rec = from_book(frame, received, "ing-a")
        path = f"orderbook/{rec.day}_{code}.csv"
        fields = rec.fields()
        key = (rec.side, rec.seq, rec.time)
        self._add(KEYS.stream_for(code), fields, path, key, book_text(rec))
        if self.rng.random() < 0.15:  # the replica ingestor's copy, a little later
            self.pending_copy = (KEYS.stream_for(code), {**fields, "i": "ing-b"}, path, key)

    def trades(self, code: str) -> None:
        for p in self.market.trades(code).prints:
            trade = RunningTrade(p.time, p.code, float(p.price), float(p.shares), p.action,
                                 p.trade_number, p.board, float(p.value))  # fmt: skip
            rec = from_trade(trade, p.time.astimezone(UTC), "ing-a")
            path = f"trades/{rec.day}_{code}.csv"
            self._add(KEYS.stream_for(code), rec.fields(), path, rec.trade_number, trade_text(rec))
            if self.rng.random() < 0.3:
                self._add(KEYS.stream_for(code), rec.fields(), path, rec.trade_number, "")

    def gap(self, n: int) -> None:
        start = datetime.fromtimestamp(self.clock.ns / 1e9, WIB)
        gap = GapRecord(
            start.isoformat(timespec="microseconds"),
            (start + timedelta(seconds=2)).isoformat(timespec="microseconds"),
            "disconnect", ("BBCA", "TLKM"), f"ing-{n}",
        )  # fmt: skip
        text = f'{gap.start},{gap.end},disconnect,"BBCA,TLKM",ing-{n},\n'
        self._add(KEYS.gaps, gap.fields(), f"gaps/{gap.day}.csv", gap.start, text)

    def run(self, count: int, rate: float) -> None:
        """XADD ``count`` snapshots (plus copies, trades, gaps) at about ``rate`` per second."""
        self.pending_copy = None
        started = time.monotonic()
        for n in range(count):
            if self.stop.is_set():
                return
            self.clock.ns += self.rng.randint(1, 4_000_000)
            code = self.codes[self.rng.randrange(len(self.codes))]
            copy, self.pending_copy = self.pending_copy, None
            self.book(code, "BID" if self.rng.random() < 0.5 else "OFFER")
            if copy is not None:
                self._add(*copy, "")
            if n % 10 == 0:
                self.trades(code)
            if n % 500 == 0:
                self.gap(n)
            ahead = started + n / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    def files(self) -> dict[str, str]:
        headers = {"orderbook": BOOK_HEADER, "trades": TRADE_HEADER, "gaps": GAP_HEADER}
        return {
            path: headers[path.split("/")[0]] + "".join(texts)
            for path, texts in self.expected.items()
        }


# --- processes ----------------------------------------------------------------------------


def writer_env(url: str, data: Path, wid: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBPIPE", "DATA_DIR"))}
    env.update(
        REDIS_URL=url, DATA_DIR=str(data), PARTITIONS=str(PARTITIONS), OBPIPE_ID=wid,
        COMMIT_INTERVAL_MS="40", LEASE_TTL_MS="600", HEARTBEAT_S="0.1", STATUS_TTL_S="2",
        LOG_LEVEL="WARNING",
    )  # fmt: skip
    env.update(extra)
    return env


def spawn(
    url: str, data: Path, wid: str, *, nofile: int = 0, log: Path | None = None, **extra: str
) -> subprocess.Popen[bytes]:
    """A writer process; ``nofile``: its open-file limit (soft = hard), ``log``: its stderr."""
    command = [sys.executable, "-m", "writer"]
    if nofile:
        # Set in the writer process itself, before anything is imported (no preexec_fn: the
        # test may have threads running).
        command[1:] = [
            "-c",
            "import resource, runpy; resource.setrlimit(resource.RLIMIT_NOFILE, "
            f"({nofile}, {nofile})); runpy.run_module('writer', run_name='__main__')",
        ]
    with contextlib.ExitStack() as files:
        stderr = None if log is None else files.enter_context(log.open("wb"))
        return subprocess.Popen(
            command, env=writer_env(url, data, wid, **extra), cwd=Path(__file__).parent.parent,
            stderr=stderr,
        )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(20)


def committed(client: redis.Redis, feed: Feed) -> bool:
    for stream, last in feed.last_ids.items():
        part = -1 if stream == KEYS.gaps else int(stream.rsplit(":", 1)[1])
        if client.hget(KEYS.commit(part), "id") != last:
            return False
    return True


def status_of(client: redis.Redis, wid: str) -> WriterStatus | None:
    raw = cast(bytes | None, client.get(KEYS.writer(wid)))
    return None if raw is None else WriterStatus.from_json(raw.decode())


def audit(client: redis.Redis, data: Path, feed: Feed, counts: bool = True) -> None:
    expected = feed.files()
    on_disk = {str(p.relative_to(data)): p for p in data.rglob("*.csv")}
    assert sorted(on_disk) == sorted(expected)
    for path, text in expected.items():
        actual = on_disk[path].read_text()
        if actual != text:
            got, want = actual.splitlines(), text.splitlines()
            first = next(
                (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                min(len(got), len(want)),
            )
            raise AssertionError(
                f"{path}: {len(got)} lines, expected {len(want)}; first difference at line "
                f"{first + 1}: {got[first : first + 1]} != {want[first : first + 1]}"
            )
        day = path.split("/")[1][:10]
        assert (
            not counts
            or client.hget(KEYS.day_counts(day), path) == str(text.count("\n") - 1).encode()
        )


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


# --- tests --------------------------------------------------------------------------------


def test_golden_rows_same_in_any_machine_zone(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    records = [
        BookRecord("BBCA", "BID", 41, "2026-03-02T23:59:59.900000+07:00",
                   "8200;123;4567800|8175;88;1203450", "2026-03-02T23:59:59.950000+07:00", "i"),
        BookRecord("BBCA", "OFFER", 42, "2026-03-03T00:00:00.100000+07:00",
                   "8225;5;50000", "2026-03-03T00:00:00.120000+07:00", "i"),
        # As a UTC-stamped record would arrive: still the WIB day of 2026-03-03.
        BookRecord("BBCA", "BID", 43, "2026-03-02T17:00:00.2Z",
                   "8200;1;100", "2026-03-02T17:00:00.25+00:00", "i"),
    ]  # fmt: skip
    golden = {
        "orderbook/2026-03-02_BBCA.csv": BOOK_HEADER
        + "2026-03-02T23:59:59.900000+07:00,8200,45678,37455960000,BID,1,123,41,2026-03-02T23:59:59.950000+07:00\n"
        + "2026-03-02T23:59:59.900000+07:00,8175,12034.5,9838203750,BID,2,88,41,2026-03-02T23:59:59.950000+07:00\n",
        "orderbook/2026-03-03_BBCA.csv": BOOK_HEADER
        + "2026-03-03T00:00:00.100000+07:00,8225,500,411250000,OFFER,1,5,42,2026-03-03T00:00:00.120000+07:00\n"
        + "2026-03-03T00:00:00.200000+07:00,8200,1,820000,BID,1,1,43,2026-03-03T00:00:00.250000+07:00\n",
    }
    results = []
    for zone in ("UTC", "Asia/Jakarta", "America/Los_Angeles"):
        client.flushall()
        data = tmp_path / zone.replace("/", "_")
        ids = [client.xadd(KEYS.stream_for("BBCA"), r.fields()) for r in records]  # type: ignore[arg-type]
        proc = spawn(redis_url, data, "golden", TZ=zone)
        try:
            part = int(KEYS.stream_for("BBCA").rsplit(":", 1)[1])
            last = ids[-1]
            # Called at once, inside this iteration: the late binding B023 warns of cannot bite.
            wait_for(lambda: client.hget(KEYS.commit(part), "id") == last, 20, "commit")  # noqa: B023
            wait_for(
                lambda: (s := status_of(client, "golden")) is not None and s.rows == 4,
                10,
                "the status to count the rows",
            )
            status = status_of(client, "golden")
            assert status is not None and status.partitions == [-1, *range(PARTITIONS)]
            assert status.files_open == 2 and status.lag_entries == 0
            assert status.last_commit_at is not None and status.last_error is None
        finally:
            assert stop(proc) == 0
        files = {str(p.relative_to(data)): p.read_text() for p in data.rglob("*.csv")}
        assert files == golden
        results.append(files)
        # a clean stop gives everything back
        assert client.zcard(KEYS.writers) == 0 and client.get(KEYS.writer("golden")) is None
        assert not [k for k in client.keys(f"{KEYS.prefix}lease:*")]
    assert results[0] == results[1] == results[2]


def test_exactly_once_across_twenty_kills(
    client: redis.Redis, redis_url: str, data_dir: Path
) -> None:
    rng = random.Random(2024)
    feed = Feed(client, seed=5, start=MIDNIGHT - timedelta(seconds=6))
    feeder = threading.Thread(target=feed.run, args=(4000, 450.0))
    procs = {f"w{n}": spawn(redis_url, data_dir, f"w{n}") for n in range(3)}
    kills = 0
    generation = 0
    try:
        feeder.start()
        while kills < 22 or feeder.is_alive():
            time.sleep(rng.uniform(0.1, 0.45))
            victim = rng.choice(sorted(procs))
            procs[victim].kill()
            procs[victim].wait()
            kills += 1
            del procs[victim]
            # Restart half of them under their old id (takes its old leases over at once) and
            # half under a new one (its old leases must expire first).
            generation += 1
            wid = victim if generation % 2 else f"{victim.split('.')[0]}.{generation}"
            procs[wid] = spawn(redis_url, data_dir, wid)
        feeder.join()
        wait_for(lambda: committed(client, feed), 60, "every entry committed")
    finally:
        feed.stop.set()
        codes = {wid: stop(p) for wid, p in procs.items()}
    assert set(codes.values()) == {0}
    assert kills >= 20 and feed.added > 4000
    audit(client, data_dir, feed)
    days = {p.split("/")[1][:10] for p in feed.expected}
    assert days == {"2026-03-02", "2026-03-03"}


def test_writers_joining_and_leaving(client: redis.Redis, redis_url: str, data_dir: Path) -> None:
    feed = Feed(client, seed=9, start=MIDNIGHT - timedelta(hours=3))
    feeder = threading.Thread(target=feed.run, args=(2500, 500.0))
    procs = {"a": spawn(redis_url, data_dir, "a")}
    seen_partitions: dict[str, set[int]] = {}

    def owners() -> dict[str, list[int]]:
        out = {}
        for wid in procs:
            status = status_of(client, wid)
            if status is not None:
                out[wid] = status.partitions
                seen_partitions.setdefault(wid, set()).update(out[wid])
        return out

    def spread() -> bool:
        # Each (pseudo-)partition held by the writer rendezvous hashing gives it, and only by it.
        held = owners()
        items = [str(p) for p in range(PARTITIONS)] + ["gaps"]
        want = {
            wid: sorted(-1 if i == "gaps" else int(i) for i in mine(items, list(procs), wid))
            for wid in procs
        }
        return {wid: sorted(ps) for wid, ps in held.items()} == want

    try:
        feeder.start()
        time.sleep(1.0)
        procs["b"] = spawn(redis_url, data_dir, "b")
        procs["c"] = spawn(redis_url, data_dir, "c")
        wait_for(spread, 20, "three writers sharing the partitions")
        assert stop(procs.pop("a")) == 0  # leaves cleanly: its partitions move at once
        wait_for(spread, 20, "two writers sharing the partitions")
        procs["d"] = spawn(redis_url, data_dir, "d")
        wait_for(spread, 20, "the newcomer taking its share")
        feeder.join()
        wait_for(lambda: committed(client, feed), 60, "every entry committed")
    finally:
        feed.stop.set()
        codes = [stop(p) for p in procs.values()]
    assert codes == [0, 0, 0]
    assert {"b", "c", "d"} <= set(seen_partitions)
    audit(client, data_dir, feed)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, check=False,
    )  # fmt: skip
    return result.returncode == 0


def test_disk_full_loses_nothing_and_recovers(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    disk = tmp_path / "disk"
    if shutil.which("mount") is None or not _mount_tmpfs(disk, "96k"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    proc = None
    try:
        data = disk / "data"
        feed = Feed(client, seed=3, start=MIDNIGHT - timedelta(hours=5), levels=30)
        proc = spawn(redis_url, data, "full")
        feed.run(400, 2000.0)  # far more than 96 KiB of rows
        status: list[WriterStatus] = []

        def failing() -> bool:
            now = status_of(client, "full")
            status[:] = [now] if now is not None else []
            return bool(status) and status[0].state == "disk_error"

        wait_for(failing, 20, "the writer to report the full disk")
        assert "No space left" in (status[0].last_error or "")
        assert not committed(client, feed)
        # the disk grows: the writer recovers by itself
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        wait_for(lambda: committed(client, feed), 30, "every entry committed after the disk grew")
        assert stop(proc) == 0
        proc = None
        audit(client, data, feed)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_removed_directory_is_recreated(
    client: redis.Redis, redis_url: str, data_dir: Path
) -> None:
    feed = Feed(client, seed=4, start=MIDNIGHT - timedelta(hours=4))
    proc = spawn(redis_url, data_dir, "rm")
    try:
        feed.run(150, 1000.0)
        wait_for(lambda: committed(client, feed), 20, "the first commit")
        shutil.rmtree(data_dir / "orderbook")  # an operator's mistake: those rows are gone
        feed.expected = {p: t for p, t in feed.expected.items() if not p.startswith("orderbook/")}
        feed.run(150, 1000.0)
        wait_for(lambda: committed(client, feed), 20, "every entry committed again")
        wait_for(
            lambda: "removed" in (((s := status_of(client, "rm")) and s.last_error) or ""),
            10,
            "the status to show the error",
        )
    finally:
        assert stop(proc) == 0
    audit(client, data_dir, feed, counts=False)


def test_a_paused_writer_is_fenced(client: redis.Redis, redis_url: str, data_dir: Path) -> None:
    feed = Feed(client, seed=8, start=MIDNIGHT - timedelta(hours=2))
    feeder = threading.Thread(target=feed.run, args=(1500, 400.0))
    first = spawn(redis_url, data_dir, "paused")
    second = None
    try:
        wait_for(lambda: (s := status_of(client, "paused")) is not None and s.partitions, 10, "w1")
        feeder.start()
        time.sleep(1.0)
        first.send_signal(signal.SIGSTOP)  # frozen mid-work: its leases expire
        second = spawn(redis_url, data_dir, "successor")
        wait_for(
            lambda: all(
                cast(bytes, client.get(KEYS.lease(p)) or b"").startswith(b"successor|")
                for p in [-1, *range(PARTITIONS)]
            ),
            10,
            "the successor to hold every lease",
        )
        time.sleep(0.5)  # it cannot touch the files: the frozen writer still holds their locks
        first.send_signal(signal.SIGCONT)  # wakes up, finds its leases gone, lets go
        feeder.join()
        wait_for(lambda: committed(client, feed), 30, "every entry committed")
    finally:
        feed.stop.set()
        first.send_signal(signal.SIGCONT)
        codes = [stop(first)] + ([stop(second)] if second is not None else [])
    assert codes == [0, 0]
    audit(client, data_dir, feed)


def test_more_files_than_the_open_file_limit(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    # 100 tickers: about 200 day files to keep writing, under a limit of 64 descriptors. The
    # writer may keep 64 // 2 - 5 = 27 open (4 partitions and the gaps one hold a lock each).
    codes = tuple(f"{a}{b}{c}{c}" for a in "ABCD" for b in "EFGHI" for c in "KLMNO")[:100]
    data, log = tmp_path / "data", tmp_path / "writer.log"
    feed = Feed(client, seed=11, start=MIDNIGHT - timedelta(hours=6), codes=codes)
    proc = spawn(redis_url, data, "few-fds", nofile=64, log=log, LOG_LEVEL="INFO")
    open_counts: list[int] = []

    def sample() -> bool:
        if (status := status_of(client, "few-fds")) is not None:
            open_counts.append(status.files_open)
        return committed(client, feed)

    try:
        for _ in range(3):  # three bursts: every file is reopened (and appended to) twice
            feed.run(1500, 3000.0)
            wait_for(sample, 60, "every entry committed")
        status = status_of(client, "few-fds")
        assert status is not None and status.last_error is None and status.state == "running"
    finally:
        code = stop(proc)
    assert code == 0
    text = log.read_text()
    assert "Too many open files" not in text and "ERROR" not in text, text[-3000:]
    assert "at most 27 day-file descriptors" in text
    assert len(feed.expected) > 150 and open_counts and max(open_counts) <= 27
    audit(client, data, feed)
