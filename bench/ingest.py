"""Ingest benchmark: one ingestor's frames/s into Redis beside a bare websockets receive loop.

Both read the simulator's ``--max-rate`` feed (book snapshots as fast as the client drains
them, 60 levels a side, ~1.1 KB a frame) in separate processes, alternately, in the same run:

- **bare loop**: connect, authenticate, subscribe, then ``async for frame in ws`` and count —
  the ceiling for any Python client on this machine. It subscribes as the ingestor does (each
  ticker's ``order_book`` with ``liveprice``, ``iepiev`` and ``best_bid_offer``, no tape), so
  the strict simulator streams it the books; the few live-price and quote frames count too;
- **ingestor**: ``python -m ingestor`` into a local redis-server; frames/s is measured as the
  growth of the per-ticker ``frames`` counters, i.e. snapshots *acknowledged by Redis* — once
  with the raw archive off and once on (``RAW_ARCHIVE``, :mod:`ingestor.archive`: every frame
  also compressed to ``raw/``), so the archive's cost on the hot path shows in the same run.

Then the ingestor's resident memory over a longer max-rate run (``BENCH_RSS_SECONDS``,
default 600, sampled every 10 s; streams capped by ``STREAM_MAXLEN`` so Redis stays small).

``python -m bench.ingest bare WS_URL API_URL TOKEN SECONDS`` runs just the bare loop (this is
how the benchmark starts it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.report import spread
from pipeline.embedded_redis import EmbeddedRedis
from pipeline.keys import Keys

TICKERS = ("BBCA", "BBRI", "BMRI", "BBNI", "TLKM", "ASII", "UNVR", "ICBP", "GOTO", "ADRO")
RUNS = int(os.environ.get("BENCH_INGEST_RUNS", "3"))
WARMUP_S = 2.0
MEASURE_S = float(os.environ.get("BENCH_INGEST_SECONDS", "5"))
RSS_SECONDS = float(os.environ.get("BENCH_RSS_SECONDS", "600"))
RSS_EVERY_S = 10.0
RSS_MAXLEN = 100_000


async def bare_loop(ws_url: str, api_url: str, token: str, seconds: float) -> float:
    """Frames/s of the plainest websockets client after a warm-up (what the bench compares to)."""
    from websockets.asyncio.client import connect  # noqa: PLC0415
    from websockets.typing import Origin, Subprotocol  # noqa: PLC0415

    from ingestor.credentials import ORIGIN, USER_AGENT, fetch_key  # noqa: PLC0415
    from stockbit import request  # noqa: PLC0415
    from stockbit.token import read_claims  # noqa: PLC0415

    key = fetch_key(api_url, token)
    user = read_claims(token).user_id or ""
    async with connect(
        ws_url,
        subprotocols=[Subprotocol("web")],
        origin=Origin(ORIGIN),
        user_agent_header=USER_AGENT,
        ping_interval=None,
        max_size=16 * 1024 * 1024,
        compression=None,
    ) as ws:
        await ws.send(request.auth(user, key, token))
        # As the ingestor subscribes: without the companions a strict simulator sends no book.
        await ws.send(request.subscribe_books(user, key, token, TICKERS, trades=False))
        count = 0
        start = time.monotonic()
        measure_from = start + WARMUP_S
        base = 0
        async for _frame in ws:
            count += 1
            if count & 255 == 0:
                now = time.monotonic()
                if base == 0 and now >= measure_from:
                    base, measure_from = count, now
                elif base and now - measure_from >= seconds:
                    return (count - base) / (now - measure_from)
    return 0.0


def _simulator(workdir: Path) -> tuple[object, str, str, str]:
    from simulator.harness import SimulatorProcess  # noqa: PLC0415

    sim = SimulatorProcess.start(workdir / "sim", "--max-rate", journal=False)
    return sim, sim.ws_url, sim.api_url, sim.token()


def _run_bare(ws_url: str, api_url: str, token: str) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "bare", ws_url, api_url, token, str(MEASURE_S)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _ingestor(
    redis_url: str,
    ws_url: str,
    api_url: str,
    token_file: Path,
    log: Path,
    *,
    maxlen: int,
    archive: bool = True,
) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        RAW_ARCHIVE="true" if archive else "false",
        DATA_DIR=str(log.parent / "data"),
        RAW_MIN_FREE_MB="100",
        REDIS_URL=redis_url,
        STOCKBIT_WS_URL=ws_url,
        STOCKBIT_API_URL=api_url,
        STOCKBIT_TOKEN_FILE=str(token_file),
        TICKERS=",".join(TICKERS),
        SUBSCRIBE_TRADES="false",
        OBPIPE_ID="bench-ingestor",
        STREAM_MAXLEN=str(maxlen),
    )
    env.pop("STOCKBIT_TOKEN", None)
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "ingestor"], env=env, stdout=sink, stderr=subprocess.STDOUT
        )


def _frames_in_redis(client: redis.Redis, keys: Keys) -> int:
    pipe = client.pipeline(transaction=False)
    for code in TICKERS:
        pipe.hget(keys.ticker(code), "frames")
    return sum(int(v or 0) for v in pipe.execute())


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _run_ingestor(
    server: EmbeddedRedis, ws: str, api: str, token_file: Path, log: Path, *, archive: bool
) -> float:
    client = redis.Redis.from_url(server.url)
    client.flushall()
    keys = Keys()
    shutil.rmtree(log.parent / "data", ignore_errors=True)
    process = _ingestor(server.url, ws, api, token_file, log, maxlen=10_000_000, archive=archive)
    try:
        deadline = time.monotonic() + 20
        while _frames_in_redis(client, keys) == 0:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the ingestor wrote nothing; see {log}")
            time.sleep(0.1)
        time.sleep(WARMUP_S)
        first, start = _frames_in_redis(client, keys), time.monotonic()
        time.sleep(MEASURE_S)
        last, stop = _frames_in_redis(client, keys), time.monotonic()
        return (last - first) / (stop - start)
    finally:
        _stop(process)
        client.flushall()
        client.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _rss_run(
    server: EmbeddedRedis, ws: str, api: str, token_file: Path, log: Path
) -> tuple[list[int], float]:
    client = redis.Redis.from_url(server.url)
    client.flushall()
    process = _ingestor(server.url, ws, api, token_file, log, maxlen=RSS_MAXLEN)
    samples: list[int] = []
    try:
        start = time.monotonic()
        time.sleep(min(RSS_EVERY_S, 5.0))
        while True:
            samples.append(_rss_kib(process.pid))
            if time.monotonic() - start >= RSS_SECONDS:
                break
            time.sleep(RSS_EVERY_S)
        frames = _frames_in_redis(client, Keys())
        return samples, frames / (time.monotonic() - start)
    finally:
        _stop(process)
        client.flushall()
        client.close()


def run() -> str:
    """Run the benchmark and return its BENCHMARKS.md section."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        server = EmbeddedRedis(work / "redis", appendonly=False)
        server.start()
        sim, ws, api, token = _simulator(work)
        token_file = work / "token"
        token_file.write_text(token)
        log = work / "ingestor.log"
        try:
            bare: list[float] = []
            ingest: list[float] = []
            archived: list[float] = []
            for _ in range(RUNS):
                bare.append(_run_bare(ws, api, token))
                ingest.append(_run_ingestor(server, ws, api, token_file, log, archive=False))
                archived.append(_run_ingestor(server, ws, api, token_file, log, archive=True))
            rss, rss_rate = _rss_run(server, ws, api, token_file, log)
        finally:
            sim.stop()  # type: ignore[attr-defined]
            server.stop()
    ratios = [i / b for i, b in zip(ingest, bare, strict=True)]
    archived_ratios = [i / b for i, b in zip(archived, bare, strict=True)]
    kept = [a / i for a, i in zip(archived, ingest, strict=True)]
    mib = [r / 1024 for r in rss]
    return "\n".join(
        [
            "## Ingest",
            "",
            f"One ingestor reading the simulator's `--max-rate` feed ({len(TICKERS)} tickers, "
            "order books only, 60 levels a side, ~1.1 KB a frame) into a local redis-server, "
            "against a bare `websockets` receive loop on the same feed in the same run "
            f"(alternating; {MEASURE_S:g} s measured after a {WARMUP_S:g} s warm-up). The "
            "ingestor's figure counts snapshots acknowledged by Redis.",
            "",
            "| | frames/s |",
            "|---|---|",
            f"| bare websockets receive loop | {spread(bare, digits=0)} |",
            f"| ingestor → Redis, raw archive off | {spread(ingest, digits=0)} |",
            f"| ingestor → Redis, raw archive on (the default) | {spread(archived, digits=0)} |",
            f"| ratio archive off / bare (per run) | {spread([r * 100 for r in ratios], '%', 0)} |",
            f"| ratio archive on / bare (per run) | "
            f"{spread([r * 100 for r in archived_ratios], '%', 0)} |",
            f"| archive on / off (per run) | {spread([r * 100 for r in kept], '%', 0)} |",
            "",
            "Target: at least 50 % of the bare loop (with the archive on).",
            "",
            f"Ingestor RSS over {RSS_SECONDS:g} s at max rate (streams capped at "
            f"`STREAM_MAXLEN={RSS_MAXLEN}`, sampled every {RSS_EVERY_S:g} s; "
            f"{rss_rate:,.0f} frames/s on average): first {mib[0]:.1f} MiB, "
            f"last {mib[-1]:.1f} MiB, max {max(mib):.1f} MiB ({len(mib)} samples).",
        ]
    )


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "bare":
        rate = asyncio.run(bare_loop(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])))
        print(f"{rate:.1f}")
    else:
        print(run())
