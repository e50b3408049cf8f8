"""End to end on this machine: simulator → ingestor → Redis → writer → CSV, all at once.

- **Throughput**: the simulator in ``--max-rate`` mode, one ingestor, one writer, Redis with
  its append-only file, everything on the same cores. Frames/s *ingested* (acknowledged by
  Redis) and *committed* (rows on disk, fsynced, committed / 60 levels) over a window after a
  warm-up. Beside it, in the same run, the naive pipeline of :mod:`bench.naive` (XADD per
  frame, XREADGROUP of one entry, a flush per row) measured the same way.
- **Latency**: exchange time → durable row (the commit that covered the entry), at 1,000 and
  5,000 book frames/s offered (10 tickers, both sides).
- **Memory**: RSS of every process and Redis's own memory through a long run at 2,000
  frames/s (``BENCH_PIPELINE_RSS_SECONDS``, default 600, sampled every 10 s).

Targets: ≥ 20,000 frames/s end to end; ≥ 8× the naive pipeline; p99 < 1 s at 5,000 frames/s;
flat RSS.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import psutil
import redis

from bench.naive import TICKERS
from bench.report import spread
from bench.stack import Stack, wait_for
from bench.writer import stream_id, watch_commits
from pipeline.days import day_of
from pipeline.embedded_redis import EmbeddedRedis
from pipeline.keys import Keys
from pipeline.layout import ORDERBOOK, kind_of
from simulator.harness import SimulatorProcess
from stockbit.timestamps import WIB, parse_iso

LEVELS = 60
RUNS = int(os.environ.get("BENCH_PIPELINE_RUNS", "3"))
WARMUP_S = 3.0
MEASURE_S = float(os.environ.get("BENCH_PIPELINE_SECONDS", "10"))
LATENCY_S = 10.0
RSS_SECONDS = float(os.environ.get("BENCH_PIPELINE_RSS_SECONDS", "600"))
RSS_EVERY_S = 10.0
PACES = (10_000, 15_000, 20_000, 25_000, 30_000, 35_000)
QUIET = {"LOG_LEVEL": "WARNING", "SUBSCRIBE_TRADES": "false", "RAW_ARCHIVE": "false"}
"""Books only, no raw archive: the configuration this section has always measured (the new
channels and the archive are measured beside it in bench/mix.py)."""
KEYS = Keys()


def _stack(work: Path, sim_args: tuple[str, ...], env: dict[str, str] | None = None) -> Stack:
    shutil.rmtree(work, ignore_errors=True)
    stack = Stack(
        work, tickers=",".join(TICKERS), sim_args=sim_args, journal=False, env=env or dict(QUIET)
    )
    stack.start()
    wait_for(stack.ready, 30, "the pipeline to start")
    return stack


def _counts(stack: Stack) -> tuple[int, dict[str, int]]:
    """(frames acknowledged by Redis, order-book rows committed per file) so far.

    Read from counters that move with every batch and every commit (the per-ticker hashes and
    the writers' per-day row counts), not from the once-a-heartbeat status documents, whose
    sampling jitter would be several percent of a ten-second window.
    """
    assert stack.client is not None
    pipe = stack.client.pipeline(transaction=False)
    for code in TICKERS:
        pipe.hget(KEYS.ticker(code), "frames")
    now = datetime.now(WIB)
    for moment in (now - timedelta(days=1), now):
        pipe.hgetall(KEYS.day_counts(day_of(moment)))
    replies = pipe.execute()
    frames = sum(int(v or 0) for v in replies[: len(TICKERS)])
    rows = {
        path.decode(): int(n)
        for counts in replies[len(TICKERS) :]
        for path, n in counts.items()
        if kind_of(path.decode()) == ORDERBOOK
    }
    return frames, rows


def ours_once(
    work: Path,
    pace: int | None = None,
    *,
    env: dict[str, str] | None = None,
    sim_args: tuple[str, ...] = (),
) -> tuple[float, float, float]:
    """(ingested frames/s, committed frames/s, writer lag s at the end) of the real pipeline,
    at the simulator's max rate or paced at ``pace`` book frames/s (``env`` and ``sim_args``:
    another configuration than :data:`QUIET`'s books only)."""
    paced = ("--pace", str(pace)) if pace else ()
    stack = _stack(work, ("--max-rate", *paced, *sim_args), env)
    try:
        time.sleep(WARMUP_S)
        frames0, rows0 = _counts(stack)
        start = time.monotonic()
        time.sleep(MEASURE_S)
        frames1, rows1 = _counts(stack)
        elapsed = time.monotonic() - start
        lag = max((s.lag_seconds for s in stack.live()["writers"]), default=0.0)
    finally:
        stack.stop()
    # Snapshots committed per file = its rows committed / its rows per snapshot (ladders are
    # not all 60 deep, and their depth differs by ticker).
    snapshots = sum(
        (rows1[path] - rows0.get(path, 0)) / levels_per_snapshot(stack.data_dir / path)
        for path in rows1
    )
    return (frames1 - frames0) / elapsed, snapshots / elapsed, lag


def levels_per_snapshot(path: Path, sample: int = 60_000) -> float:
    """Average rows per snapshot over the first ``sample`` rows of a CSV file (header
    skipped if present)."""
    rows = 0
    seen = set()
    with path.open() as handle:
        for line in handle:
            if line.startswith("timestamp,"):
                continue
            parts = line.split(",", 8)
            seen.add((parts[0], parts[4], parts[7]))
            rows += 1
            if rows >= sample:
                break
    return rows / len(seen) if seen else float(LEVELS)


def sustained(offered: int, ingested: float, committed: float, lag: float) -> bool:
    """Did the pipeline keep up: everything offered ingested and committed, no growing lag?"""
    return ingested >= 0.97 * offered and committed >= 0.97 * offered and lag < 1.0


def naive_once(work: Path) -> tuple[float, float]:
    """The same figures for the naive pipeline of bench.naive."""
    shutil.rmtree(work, ignore_errors=True)
    server = EmbeddedRedis(work / "redis", appendonly=True)
    server.start()
    sim = SimulatorProcess.start(work / "sim", "--max-rate", journal=False)
    client = redis.Redis.from_url(server.url)
    procs = [
        subprocess.Popen([sys.executable, "-m", "bench.naive", *args], stdout=subprocess.DEVNULL)
        for args in (
            ["write", server.url, str(work / "csv")],
            ["ingest", sim.ws_url, sim.api_url, sim.token(), server.url],
        )
    ]
    try:
        wait_for(lambda: client.get("naive:rows"), 30, "the naive writer")
        time.sleep(WARMUP_S)
        frames0, rows0 = int(client.get("naive:frames") or 0), int(client.get("naive:rows") or 0)
        start = time.monotonic()
        time.sleep(MEASURE_S)
        frames1, rows1 = int(client.get("naive:frames") or 0), int(client.get("naive:rows") or 0)
        elapsed = time.monotonic() - start
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        sim.stop()
        client.close()
        server.stop()
    files = sorted((work / "csv").glob("*.csv"))
    levels = statistics.mean(levels_per_snapshot(f) for f in files) if files else LEVELS
    return (frames1 - frames0) / elapsed, (rows1 - rows0) / levels / elapsed


def latency_once(work: Path, offered: int) -> list[float]:
    """Exchange time → commit time (s) of every book entry seen, at ``offered`` frames/s."""
    rate = offered / (2 * len(TICKERS))
    stack = _stack(work, ("--rate", str(rate)))
    assert stack.client is not None
    stamps: dict[tuple[int, bytes], float] = {}
    commits: list[tuple[int, tuple[int, int], int]] = []
    done = threading.Event()
    tail = threading.Thread(target=_tail, args=(stack.redis.url, stamps, done))
    watch = threading.Thread(target=watch_commits, args=(stack.redis.url, KEYS, commits, done))
    try:
        time.sleep(WARMUP_S)
        tail.start()
        watch.start()
        time.sleep(LATENCY_S)
        done.set()
        tail.join()
        watch.join()
    finally:
        stack.stop()
    return _match(stamps, commits)


def _tail(url: str, stamps: dict[tuple[int, bytes], float], done: threading.Event) -> None:
    """Read every new entry (plain XREAD: the writers are unaffected) and note its exchange time."""
    client = redis.Redis.from_url(url)
    last = {KEYS.stream(p): "$" for p in range(KEYS.partitions)}
    while not done.is_set():
        reply = cast(Any, client.xread(last, count=5000, block=200))  # type: ignore[arg-type]
        # RESP3 (redis-py's default with Redis >= 6) answers a map, RESP2 a list of pairs.
        pairs = reply.items() if isinstance(reply, dict) else reply or []
        for stream, entries in pairs:
            part = int(stream.rsplit(b":", 1)[1])
            for entry_id, fields in entries:
                if fields.get(b"k") == b"b":
                    stamps[(part, entry_id)] = parse_iso(fields[b"t"].decode()).timestamp()
            last[stream.decode()] = entries[-1][0]
    client.close()


def _match(
    stamps: dict[tuple[int, bytes], float], commits: list[tuple[int, tuple[int, int], int]]
) -> list[float]:
    by_part: dict[int, list[tuple[tuple[int, int], int]]] = {}
    for part, cid, at in commits:
        by_part.setdefault(part, []).append((cid, at))
    out = []
    for (part, raw_id), exchange in stamps.items():
        key = stream_id(raw_id)
        when = next((at for cid, at in by_part.get(part, []) if cid >= key), None)
        if when is not None:
            out.append(when / 1000 - exchange)
    return out


def memory(work: Path, seconds: float) -> dict[str, list[float]]:
    """RSS (MiB) of each process and Redis used_memory (MiB), sampled every RSS_EVERY_S."""
    stack = _stack(work, ("--rate", str(2000 / (2 * len(TICKERS)))))
    assert stack.client is not None and stack.sim is not None
    pids = {name: child.process.pid for name, child in stack.children.items() if child.process}
    pids["simulator"] = stack.sim.process.pid
    assert stack.redis.process is not None
    pids["redis-server"] = stack.redis.process.pid
    series: dict[str, list[float]] = {name: [] for name in pids}
    series["redis used_memory"] = []
    try:
        end = time.monotonic() + seconds
        while True:
            for name, pid in pids.items():
                series[name].append(psutil.Process(pid).memory_info().rss / 2**20)
            used = int(stack.client.info("memory")["used_memory"])
            series["redis used_memory"].append(used / 2**20)
            if time.monotonic() >= end:
                break
            time.sleep(min(RSS_EVERY_S, max(0.0, end - time.monotonic())))
    finally:
        stack.stop()
    return series


def run() -> str:
    """Measure and return the Markdown section."""
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        ours, naive = [], []
        for _ in range(RUNS):
            ours.append(ours_once(work / "ours"))
            naive.append(naive_once(work / "naive"))
        ladder = {rate: ours_once(work / "paced", rate) for rate in PACES}
        lat = {rate: latency_once(work / f"lat{rate}", rate) for rate in (1000, 5000)}
        mem = memory(work / "mem", RSS_SECONDS)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    committed = [c for _i, c, _l in ours]
    ingested = [i for i, _c, _l in ours]
    naive_committed = [c for _i, c in naive]
    kept_up = [rate for rate, figures in ladder.items() if sustained(rate, *figures)]
    best = max(kept_up, default=0)
    naive_median = statistics.median(naive_committed)
    lines = [
        "## End to end",
        "",
        f"Simulator `--max-rate` → 1 ingestor → Redis (append-only file on) → 1 writer → CSV, "
        f"{len(TICKERS)} tickers, {LEVELS}-level books, every process on this machine's "
        f"{os.cpu_count()} cores at once; {RUNS} runs of {MEASURE_S:.0f} s after a "
        f"{WARMUP_S:.0f} s warm-up, alternating with the naive pipeline (`bench/naive.py`: XADD "
        "per frame, XREADGROUP of one entry, a flush per row). *Ingested* = frames acknowledged "
        "by Redis (per-ticker counters); *committed* = order-book rows fsynced and committed "
        "(the writers' per-day counts) / rows per snapshot in the files.",
        "",
        "| | frames/s |",
        "|---|---|",
        f"| obpipe unpaced, ingested (acknowledged by Redis) | {spread(ingested, digits=0)} |",
        f"| obpipe unpaced, committed to CSV | {spread(committed, digits=0)} |",
        f"| naive, ingested | {spread([i for i, _c in naive], digits=0)} |",
        f"| naive, committed to CSV | {spread(naive_committed, digits=0)} |",
        "",
        "Sustained rate: the simulator paced at a fixed offered load (`--max-rate --pace N`, "
        "prebuilt frames) — kept up when ≥ 97 % of it is ingested *and* committed with the "
        "writer's lag under 1 s at the end:",
        "",
        "| offered frames/s | ingested | committed | writer lag | kept up |",
        "|---|---|---|---|---|",
        *[
            f"| {rate:,} | {i:,.0f} | {c:,.0f} | {lag:.2f} s | "
            f"{'yes' if sustained(rate, i, c, lag) else 'no'} |"
            for rate, (i, c, lag) in ladder.items()
        ],
        "",
        f"**Sustained end to end: {best:,} frames/s** (about {best * LEVELS:,} rows/s), "
        f"{best / naive_median:.1f}× the naive pipeline's {naive_median:,.0f} committed "
        "frames/s. At the unpaced maximum the ingestor takes more than its share of the two "
        "cores and the writer falls behind (backlog grows), so the paced figure is the one "
        "that can be kept up all day.",
        "",
        "Latency, exchange timestamp → the commit that made the row durable (the simulator "
        "stamps frames with this machine's clock), "
        f"{LATENCY_S:.0f} s per rate, COMMIT_INTERVAL_MS=200:",
        "",
        "| offered | entries | p50 | p99 | max |",
        "|---|---|---|---|---|",
    ]
    for rate, values in lat.items():
        q = statistics.quantiles(values, n=100) if len(values) > 1 else [0.0] * 99
        lines.append(
            f"| {rate:,} frames/s | {len(values):,} | {q[49] * 1000:,.0f} ms | "
            f"{q[98] * 1000:,.0f} ms | {max(values, default=0) * 1000:,.0f} ms |"
        )
    samples = len(next(iter(mem.values())))
    lines += [
        "",
        f"Memory at 2,000 frames/s for {RSS_SECONDS:.0f} s ({samples} samples, MiB):",
        "",
        "| process | first | last | max |",
        "|---|---|---|---|",
    ]
    for name, values in mem.items():
        lines.append(f"| {name} | {values[0]:.1f} | {values[-1]:.1f} | {max(values):.1f} |")
    lines += [
        "",
        "Targets: ≥ 20,000 frames/s end to end; ≥ 8× the naive pipeline; p99 < 1 s at "
        "5,000 frames/s; flat RSS.",
    ]
    return "\n".join(lines)
