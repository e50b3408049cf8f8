"""End to end with every channel and the raw archive, beside the books-only pipeline.

The same machine, the same simulator in ``--max-rate --pace N`` mode (10 tickers, 60-level
books), one ingestor, one writer, Redis with its append-only file — three configurations,
alternated at every offered rate in the same run:

- **before**: order books only, raw archive off (what ``bench/pipeline.py`` has measured);
- **+ raw archive**: the same feed with ``RAW_ARCHIVE=true`` (every frame compressed to
  ``raw/``);
- **+ trades, LivePrice, raw archive**: the production default — ``SUBSCRIBE_TRADES=true``,
  the archive on, and the simulator printing one trade per :data:`BOOKS_PER_PRINT` book
  frames, each in its own batch followed by its LivePrice (``--prints-per-batch 1``): one
  LivePrice per print, the mix the field-fidelity issue asks for. IDX publishes its trade
  count (~1.3 M prints a day) but not how many book updates Stockbit streams, so the ratio of
  prints to book frames is an assumption, chosen on the heavy side.

A rate is *kept up* when ≥ 97 % of the offered book frames are ingested and committed and
the writer's lag is under 1 s at the end (:func:`bench.pipeline.sustained`). The figure of
merit is the highest rate kept up by the full configuration over the one kept up before. One
disturbed rung (the machine's own background work: page-cache write-back, other jobs) moves
either figure by a whole step, so the ladder is climbed :data:`LADDERS` times and every
ladder's ratio is reported, with their median.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import psutil
import redis

from bench.naive import TICKERS
from bench.pipeline import QUIET, _stack, levels_per_snapshot, sustained
from bench.stack import Stack
from pipeline.days import day_of
from pipeline.keys import Keys
from pipeline.layout import ORDERBOOK, PRICES, TRADES, kind_of
from stockbit.timestamps import WIB

COST_PACE = 8_000
COST_RUNS = int(os.environ.get("BENCH_MIX_COST_RUNS", "3"))
PACES = tuple(
    int(p)
    for p in os.environ.get(
        "BENCH_MIX_PACES", ",".join(str(n) for n in range(17_000, 25_001, 1_000))
    ).split(",")
)
LADDERS = int(os.environ.get("BENCH_MIX_LADDERS", "2"))
"""How many times the whole ladder is climbed (all configurations at every rung each time)."""
WARMUP_S = 3.0
MEASURE_S = float(os.environ.get("BENCH_MIX_SECONDS", "10"))
BOOKS_PER_PRINT = int(os.environ.get("BENCH_MIX_BOOKS_PER_PRINT", "7"))
"""Book frames per print (and so per LivePrice) offered in the full configuration."""
KEYS = Keys()

BEFORE = "books only, raw archive off (before)"
ARCHIVE = "books only, raw archive on"
FULL = "books + trades + LivePrice, raw archive on (the default)"
CONFIGS = (BEFORE, ARCHIVE, FULL)


def _config(name: str, pace: int) -> tuple[dict[str, str], tuple[str, ...]]:
    env = dict(QUIET)
    if name == BEFORE:
        return env, ()
    env.update(RAW_ARCHIVE="true", RAW_MIN_FREE_MB="100")
    if name == ARCHIVE:
        return env, ()
    env["SUBSCRIBE_TRADES"] = "true"
    rate = pace / (len(TICKERS) * BOOKS_PER_PRINT)  # one-print batches per ticker per second
    return env, ("--rate", f"{rate:g}", "--prints-per-batch", "1")


def _committed(client: redis.Redis) -> dict[str, int]:
    """Rows committed so far per file (the writers' per-day counts, yesterday and today)."""
    now = datetime.now(WIB)
    out: dict[str, int] = {}
    for moment in (now - timedelta(days=1), now):
        counts = cast(dict[bytes, bytes], client.hgetall(KEYS.day_counts(day_of(moment))))
        out.update({path.decode(): int(n) for path, n in counts.items()})
    return out


def _frames(client: redis.Redis) -> int:
    pipe = client.pipeline(transaction=False)
    for code in TICKERS:
        pipe.hget(KEYS.ticker(code), "frames")
    return sum(int(v or 0) for v in pipe.execute())


def _cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each process of the stack."""
    assert stack.sim is not None and stack.redis.process is not None
    pids = {name: child.process.pid for name, child in stack.children.items() if child.process}
    pids["simulator"] = stack.sim.process.pid
    pids["redis-server"] = stack.redis.process.pid
    out = {}
    for name, pid in pids.items():
        times = psutil.Process(pid).cpu_times()
        out[name.removesuffix("-1")] = times.user + times.system
    return out


def once(work: Path, name: str, pace: int) -> dict[str, float]:
    """One configuration at one offered book rate: book frames/s ingested and committed,
    trade and price rows/s committed, the writer's lag, raw bytes per book frame, and each
    process's CPU (cores busy, ``cpu:<process>``)."""
    env, sim = _config(name, pace)
    stack = _stack(work, ("--max-rate", "--pace", str(pace), *sim), env)
    assert stack.client is not None
    try:
        time.sleep(WARMUP_S)
        frames0, rows0, cpu0 = _frames(stack.client), _committed(stack.client), _cpu(stack)
        start = time.monotonic()
        time.sleep(MEASURE_S)
        frames1, rows1, cpu1 = _frames(stack.client), _committed(stack.client), _cpu(stack)
        elapsed = time.monotonic() - start
        lag = max((s.lag_seconds for s in stack.live()["writers"]), default=0.0)
    finally:
        stack.stop()
    books = sum(
        (rows1[p] - rows0.get(p, 0)) / levels_per_snapshot(stack.data_dir / p)
        for p in rows1
        if kind_of(p) == ORDERBOOK
    )

    def rows(kind: str) -> float:
        return sum(rows1[p] - rows0.get(p, 0) for p in rows1 if kind_of(p) == kind) / elapsed

    raw = sum(f.stat().st_size for f in (stack.data_dir / "raw").rglob("*.zst"))
    ingested = (frames1 - frames0) / elapsed
    shutil.rmtree(work, ignore_errors=True)
    return {
        **{f"cpu:{proc}": (cpu1[proc] - cpu0[proc]) / elapsed for proc in cpu1},
        "ingested": ingested,
        "committed": books / elapsed,
        "trades": rows(TRADES),
        "prices": rows(PRICES),
        "lag": lag,
        "raw_bytes": raw,
        "frames_total": frames1,
    }


def run() -> str:
    """Measure and return the Markdown section."""
    work = Path(tempfile.mkdtemp(prefix="bench-mix-"))
    ladders: list[dict[str, dict[int, dict[str, float]]]] = []
    cost: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    try:
        for _ in range(COST_RUNS):
            for name in CONFIGS:
                cost[name].append(once(work / "run", name, COST_PACE))
        for _ in range(LADDERS):
            results: dict[str, dict[int, dict[str, float]]] = {name: {} for name in CONFIGS}
            for pace in PACES:
                for name in CONFIGS:
                    results[name][pace] = once(work / "run", name, pace)
            ladders.append(results)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def best(results: dict[str, dict[int, dict[str, float]]], name: str) -> int:
        kept = [
            pace
            for pace, r in results[name].items()
            if sustained(pace, r["ingested"], r["committed"], r["lag"])
        ]
        return max(kept, default=0)

    procs = ("ingestor", "writer", "redis-server", "simulator")

    def busy(name: str, proc: str) -> float:
        return statistics.median(r[f"cpu:{proc}"] for r in cost[name])

    def pipeline_cpu(name: str) -> float:
        return sum(busy(name, proc) for proc in procs[:3])

    lines = [
        "## End to end with every channel and the raw archive",
        "",
        f"The `bench/pipeline.py` setup (simulator → 1 ingestor → Redis with its append-only "
        f"file → 1 writer, {len(TICKERS)} tickers, 60-level books, all on this machine's "
        f"{os.cpu_count()} cores) at a fixed offered book rate (`--max-rate --pace N`), in three "
        "configurations alternated at every rate in the same run "
        f"({MEASURE_S:.0f} s after a {WARMUP_S:.0f} s warm-up each). The full configuration "
        "adds the running-trade tape and LivePrice, one LivePrice per print (`--prints-per-batch "
        f"1`), offered at one print per {BOOKS_PER_PRINT} book frames (`--rate "
        f"N/{len(TICKERS) * BOOKS_PER_PRINT}`; the simulator's timers deliver somewhat fewer, "
        "see the trade and LivePrice columns), and the raw archive. In max-rate mode the "
        "simulator writes the tape's frames with its next round of 256 books, as it writes the "
        "books (`simulator/feed.py`). *Kept up*: ≥ 97 % of the offered books ingested and "
        "committed, writer lag under 1 s at the end.",
        "",
        f"**Cost** at {COST_PACE:,} book frames/s offered, a rate every configuration keeps "
        "up with, so the figures are the work each does rather than how it copes with "
        f"overload: CPU cores busy per process (median of {COST_RUNS} runs; the simulator "
        "builds the feed on the same cores, so it is shown apart).",
        "",
        "| configuration | ingestor | writer | redis-server | pipeline (the three) | "
        "vs before | simulator |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {name} | {busy(name, 'ingestor'):.2f} | {busy(name, 'writer'):.2f} | "
            f"{busy(name, 'redis-server'):.2f} | {pipeline_cpu(name):.2f} | "
            f"{pipeline_cpu(name) / pipeline_cpu(BEFORE):.2f}× | {busy(name, 'simulator'):.2f} |"
            for name in CONFIGS
        ],
        "",
        f"**Sustained rate**: the highest offered book rate kept up, per configuration, the "
        f"ladder climbed {LADDERS} time(s).",
        "",
        "| ladder | offered books/s | configuration | ingested | committed | trade rows/s | "
        "LivePrice rows/s | writer lag | kept up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for number, results in enumerate(ladders, 1):
        for pace in PACES:
            for name in CONFIGS:
                r = results[name][pace]
                ok = sustained(pace, r["ingested"], r["committed"], r["lag"])
                lines.append(
                    f"| {number} | {pace:,} | {name} | {r['ingested']:,.0f} | "
                    f"{r['committed']:,.0f} | {r['trades']:,.0f} | {r['prices']:,.0f} | "
                    f"{r['lag']:.2f} s | {'yes' if ok else 'no'} |"
                )
    lines += [
        "",
        "| configuration | "
        + " | ".join(f"ladder {n}: books/s, vs before" for n in range(1, len(ladders) + 1))
        + " | median vs before |",
        "|---|" + "---|" * (len(ladders) + 1),
    ]
    for name in CONFIGS:
        cells = []
        ratios = []
        for results in ladders:
            rate, base = best(results, name), best(results, BEFORE)
            ratio = rate / base if base else 0.0
            ratios.append(ratio)
            cells.append(f"{rate:,}, {ratio:.2f}" if base else f"{rate:,}, —")
        lines.append(f"| {name} | {' | '.join(cells)} | {statistics.median(ratios):.2f} |")
    last = ladders[-1]
    base = best(last, BEFORE)
    full = last[FULL][max(p for p in PACES if p <= max(base, PACES[0]))]
    if full["frames_total"]:
        per_frame = full["raw_bytes"] / full["frames_total"]
        lines += [
            "",
            f"Raw archive of the full configuration: {per_frame:.0f} "
            "bytes per book frame on disk, trades and LivePrice included (the max-rate feed "
            "repeats 16 prebuilt ladders, so it compresses far better than a real one: see "
            '"Raw archive" for a whole-market simulation).',
        ]
    lines += [
        "",
        "Target: the full configuration sustains ≥ 0.85 of the books-only rate measured beside "
        "it. The ladder's step bounds the ratio's resolution "
        f"({PACES[1] - PACES[0]:,} frames/s).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
