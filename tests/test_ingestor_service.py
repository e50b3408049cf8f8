"""The ingestor as a real process against the simulator and a real redis-server."""

# Each test starts ``python -m ingestor`` subprocesses with environment variables, drives the
# simulator's fault options, and checks what reached Redis against the simulator's journal (the
# ground truth of every frame it sent). Conditions are polled with deadlines, not slept on.
#
# The connection state machine itself (a 401 frame, the dead-connection timer, ping timing, the
# gap a reconnect closes, resubscribing, malformed frames) is unit-tested without processes in
# ``test_ingestor_protocol.py``; these tests check what only real processes and sockets show.

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin, Subprotocol

from bench import audit
from bench.stack import Stack, wait_for
from ingestor.continuity import PATIENCE_S
from ingestor.credentials import ORIGIN, USER_AGENT
from ingestor.service import Ingestor as IngestorService
from pipeline import cli
from pipeline.calendar import TradingCalendar
from pipeline.embedded_redis import EmbeddedRedis
from pipeline.keys import Keys
from pipeline.membership import assign
from pipeline.secret import Secret
from pipeline.settings import Settings
from pipeline.status import render
from simulator.harness import SimulatorProcess
from stockbit import request
from stockbit.book import split_header
from stockbit.timestamps import WIB, parse_iso, wib_iso
from stockbit.token import read_claims
from web.snapshot import build_status, read_state

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(180)]

KEYS = Keys()
KEY_SHAPE = re.compile(r"[A-Za-z0-9+/]{43}=")
"""A Stockbit/simulator WS key: base64 of 32 bytes."""


class Ingestor:
    """One ``python -m ingestor`` subprocess."""

    def __init__(  # noqa: PLR0917  (test helper mirroring the environment it sets)
        self,
        workdir: Path,
        name: str,
        redis_url: str,
        sim: SimulatorProcess,
        token_file: Path,
        tickers: str,
        *,
        env: dict[str, str],
    ) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith(("STOCKBIT_", "OBPIPE_"))
        }
        environment.update(
            REDIS_URL=redis_url,
            STOCKBIT_WS_URL=sim.ws_url,
            STOCKBIT_API_URL=sim.api_url,
            STOCKBIT_TOKEN_FILE=str(token_file),
            TICKERS=tickers,
            OBPIPE_ID=name,
            HEARTBEAT_S="0.2",
            STATUS_TTL_S="5",
            PING_INTERVAL_S="0.5",
            DEAD_AFTER_S="5",
            LOG_LEVEL="DEBUG",
            # The raw archive is on by default: its files go under the test's own folder.
            DATA_DIR=str(workdir / "data"),
            RAW_MIN_FREE_MB="100",
        )
        environment.update(env)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ingestor"],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def status(self, client: Any) -> dict[str, Any]:
        raw = client.get(KEYS.ingestor(self.name))
        return json.loads(raw) if raw else {}

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush."""
        self.process.kill()
        self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def raw(redis_url: str) -> Iterator[Any]:
    """A bytes client on the flushed session server."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """The CLI commands configure the root logger; give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    """Processes to stop at the end of a test, whatever happens."""
    started: list[Any] = []
    yield started
    for proc in reversed(started):
        if isinstance(proc, Ingestor):
            if proc.process.poll() is None:
                proc.kill()
        else:
            proc.stop()


def start_sim(tmp_path: Path, procs: list[Any], *args: str) -> SimulatorProcess:
    sim = SimulatorProcess.start(tmp_path / "sim", *args)
    procs.append(sim)
    return sim


def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(SimulatorProcess.token() + "\n")
    return path


def start(procs: list[Any], *args: Any, **env: str) -> Ingestor:
    ingestor = Ingestor(*args, env=env)
    procs.append(ingestor)
    return ingestor


def frames(client: Any, code: str) -> int:
    return int(client.hget(KEYS.ticker(code), "frames") or 0)


def stream_books(client: Any) -> dict[tuple[str, str], list[dict[str, str]]]:
    """Every book entry in Redis, per (code, side), in stream order."""
    books: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for stream in KEYS.streams():
        for _, fields in client.xrange(stream):
            entry = {k.decode(): v.decode() for k, v in fields.items()}
            if entry["k"] == "b":
                books[(entry["c"], entry["s"])].append(entry)
    return books


def journal_books(sim: SimulatorProcess) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """Every book frame the simulator sent, per (code, side) and seq (any connection)."""
    sent: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for line in sim.journal():
        if line["kind"] == "book":
            sent[(line["code"], line["side"][0])][line["seq"]] = line
    return sent


def assert_nothing_missing(client: Any, sim: SimulatorProcess) -> int:
    """Every sent book frame up to the last one stored is in Redis, decoded right; returns count."""
    stored = stream_books(client)
    sent = journal_books(sim)
    checked = 0
    assert stored, "nothing reached Redis"
    for key, entries in stored.items():
        seqs = [int(e["q"]) for e in entries]
        by_seq = {int(e["q"]): e for e in entries}
        # In arrival order per ingestor, and the same snapshot never differs between copies.
        for source in {e["i"] for e in entries}:
            own = [int(e["q"]) for e in entries if e["i"] == source]
            assert own == sorted(own), f"{key} out of order from {source}"
        first, last = min(seqs), max(seqs)
        for seq, line in sent[key].items():
            if not first <= seq <= last:
                continue
            assert seq in by_seq, f"{key} seq {seq} sent but missing in Redis"
            entry = by_seq[seq]
            assert entry["t"] == wib_iso(parse_iso(line["time"]))
            assert entry["l"] == split_header(line["body"])[2]
            checked += 1
    return checked


def assert_no_secrets(client: Any, token: str, *logs: str) -> None:
    """Neither the token nor anything shaped like a WS key in any Redis key/value or log."""
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = [*client.hkeys(key), *client.hvals(key)]
        elif kind == b"set":
            values = list(client.smembers(key))
        elif kind == b"zset":
            values = list(client.zrange(key, 0, -1))
        elif kind == b"stream":
            values = [v for _, f in client.xrange(key) for kv in f.items() for v in kv]
        else:
            values = []
        for value in [key, *values]:
            text = value.decode(errors="replace")
            assert token not in text, f"token found in {key!r}"
            assert not KEY_SHAPE.search(text), f"key-shaped secret in {key!r}"
    for text in logs:
        assert token not in text
        assert not KEY_SHAPE.search(text)


@pytest.mark.usefixtures("cli_logging")
def test_frames_subscriptions_pings_and_no_secrets(  # noqa: PLR0917  (fixtures)
    tmp_path: Path,
    redis_url: str,
    raw: Any,
    procs: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Frames land decoded and in order; ticker edits apply live; pings beat the ping window."""
    sim = start_sim(tmp_path, procs, "--rate", "10", "--ping-window", "2")
    tokens = token_file(tmp_path)
    ing = start(procs, tmp_path, "ing-a", redis_url, sim, tokens, "BBCA,TLKM")
    wait_for(lambda: frames(raw, "BBCA") > 5 and frames(raw, "TLKM") > 5)
    wait_for(lambda: ing.status(raw).get("state") == "connected", 5, "connected")

    monkeypatch.setenv("REDIS_URL", redis_url)
    assert cli.main(["tickers", "add", "asii"]) == 0
    assert cli.main(["tickers", "add", "BAD CODE"]) == 2
    added = time.monotonic()
    wait_for(lambda: frames(raw, "ASII") > 0, 10, "ASII frames")
    assert time.monotonic() - added < 5
    assert cli.main(["tickers", "remove", "TLKM"]) == 0
    wait_for(lambda: "TLKM" not in ing.status(raw)["tickers"], 5, "TLKM dropped")
    # What the new subscribe frame carries is tests/test_ingestor_protocol.py's business.

    # Past the 2 s ping window: the application pings on the wire kept the one connection.
    since = parse_iso(ing.status(raw)["connected_since"])
    wait_for(lambda: datetime.now(UTC) - since > timedelta(seconds=3), 10, "3 s connected")
    status = ing.status(raw)
    assert status["reconnects"] == 0 and status["state"] == "connected"
    assert status["token_expires_at"].endswith("+07:00")
    capsys.readouterr()
    assert cli.main(["status"]) == 0
    printed = capsys.readouterr().out
    assert "ing-a" in printed and "connected" in printed and "ASII" in printed

    assert ing.stop() == 0
    final = ing.status(raw)
    assert final["state"] == "stopped" and final["buffered"] == 0
    assert raw.zscore(KEYS.ingestors, "ing-a") is None
    sim.stop()
    assert assert_nothing_missing(raw, sim) > 50
    trades = [f for stream in KEYS.streams() for _, f in raw.xrange(stream) if f[b"k"] == b"t"]
    assert trades and all(float(t[b"p"]) > 0 for t in trades)
    assert_no_secrets(raw, tokens.read_text().strip(), ing.log(), sim.log_path.read_text())


def test_reconnects_after_drops_with_gaps_and_dead_letters(
    tmp_path: Path, redis_url: str, raw: Any, procs: list[Any]
) -> None:
    """A dropped socket is reconnected and recorded as a gap; bad frames go to dead letters."""
    sim = start_sim(
        tmp_path, procs, "--rate", "10", "--drop-every", "1.5", "--malformed-every", "20"
    )
    ing = start(procs, tmp_path, "ing-a", redis_url, sim, token_file(tmp_path), "BBCA,TLKM")

    def disconnect_gaps() -> list[dict[bytes, bytes]]:
        gaps = [f for _, f in raw.xrange(KEYS.gaps)]
        return [g for g in gaps if g[b"cause"] == b"disconnect"]

    gaps = wait_for(lambda: len(disconnect_gaps()) >= 2 and disconnect_gaps(), 20, "gaps")
    gap = gaps[0]
    assert gap[b"ingestor"] == b"ing-a" and gap[b"tickers"] == b"BBCA,TLKM"
    assert parse_iso(gap[b"start"].decode()) <= parse_iso(gap[b"end"].decode())
    wait_for(lambda: ing.status(raw)["reconnects"] >= 2, 5, "reconnects in the status")
    wait_for(lambda: raw.xlen(KEYS.deadletter) > 0, 10, "dead letters")
    dead = raw.xrange(KEYS.deadletter, count=1)[0][1]
    assert dead[b"error"] and dead[b"raw"]
    assert int(raw.hget(KEYS.counters, "bad_frames") or 0) > 0
    before = frames(raw, "BBCA")
    wait_for(lambda: frames(raw, "BBCA") > before, 10, "frames after reconnects")
    assert ing.stop() == 0


def test_a_stalled_connection_is_declared_dead_and_replaced(
    tmp_path: Path, redis_url: str, raw: Any, procs: list[Any]
) -> None:
    """A socket that goes quiet (no data, no pongs) is given up and recorded as a dead gap."""
    sim = start_sim(tmp_path, procs, "--rate", "10", "--stall-every", "1.5", "--stall-for", "5")
    ing = start(
        procs, tmp_path, "ing-a", redis_url, sim, token_file(tmp_path), "BBCA", DEAD_AFTER_S="1"
    )

    def dead_gaps() -> list[dict[bytes, bytes]]:
        return [f for _, f in raw.xrange(KEYS.gaps) if f[b"cause"] == b"dead"]

    gap = wait_for(dead_gaps, 20, "a dead gap")[0]
    assert gap[b"detail"] == b"no frame for 1s" and gap[b"tickers"] == b"BBCA"
    # From the last frame before the stall to the first one on the next connection.
    lasted = parse_iso(gap[b"end"].decode()) - parse_iso(gap[b"start"].decode())
    assert timedelta(seconds=1) <= lasted < timedelta(seconds=5)
    wait_for(lambda: ing.status(raw)["reconnects"] >= 1, 5, "reconnects in the status")
    assert "connection is dead" in ing.log()
    assert ing.stop() == 0


def test_auth_failure_waits_and_a_new_token_file_heals_it(
    tmp_path: Path, redis_url: str, raw: Any, procs: list[Any]
) -> None:
    """A 401 parks the ingestor in auth_failed (no tight loop) until the token file changes."""
    sim = start_sim(tmp_path, procs, "--rate", "10", "--expire-token-after", "1")
    tokens = token_file(tmp_path)
    ing = start(procs, tmp_path, "ing-a", redis_url, sim, tokens, "BBCA")
    wait_for(lambda: ing.status(raw).get("state") == "auth_failed", 20, "auth_failed")
    attempts = ing.status(raw)["reconnects"]
    time.sleep(3)
    status = ing.status(raw)
    assert status["state"] == "auth_failed" and status["reconnects"] == attempts
    assert "401" in (status["last_error"] or "")
    frames_before = frames(raw, "BBCA")

    tokens.write_text(SimulatorProcess.token() + "\n")
    wait_for(lambda: frames(raw, "BBCA") > frames_before, 10, "data with the new token")
    gap = wait_for(
        lambda: [f for _, f in raw.xrange(KEYS.gaps) if f[b"cause"] == b"auth_failed"],
        10,
        "auth gap",
    )[0]
    assert gap[b"tickers"] == b"BBCA"
    assert ing.stop() == 0
    assert_no_secrets(raw, tokens.read_text().strip(), ing.log())


def test_redis_restart_loses_nothing(tmp_path: Path, procs: list[Any]) -> None:
    """Frames received while Redis is down wait in the buffer and all arrive afterwards."""
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        sim = start_sim(tmp_path, procs, "--rate", "20")
        ing = start(procs, tmp_path, "ing-a", server.url, sim, token_file(tmp_path), "BBCA,TLKM")
        wait_for(lambda: frames(client, "BBCA") > 10)
        server.stop()
        time.sleep(2.0)
        server.start()
        stored_before = frames(client, "BBCA")
        wait_for(lambda: frames(client, "BBCA") > stored_before + 20, 20, "frames after restart")
        assert ing.stop() == 0
        sim.stop()
        assert "Redis unreachable" in ing.log()
        checked = assert_nothing_missing(client, sim)
        assert checked > 100
        client.close()
    finally:
        server.stop()


def test_two_then_three_ingestors_share_and_take_over(
    tmp_path: Path, redis_url: str, raw: Any, procs: list[Any]
) -> None:
    """Tickers spread over the live ingestors and move within seconds when one is killed."""
    codes = ["BBCA", "BBRI", "BMRI", "BBNI", "TLKM", "ASII", "UNVR", "ICBP", "GOTO", "ADRO"]
    sim = start_sim(tmp_path, procs, "--rate", "2")
    tokens = token_file(tmp_path)

    def grew(code: str, before: int) -> bool:
        return frames(raw, code) > before

    def held(name: str) -> set[str]:
        doc = raw.get(KEYS.ingestor(name))
        return set(json.loads(doc)["tickers"]) if doc else set()

    def spread(names: list[str]) -> bool:
        table = assign(codes, sorted(names))
        return all(held(n) == set(table[n]) for n in names)

    a = start(procs, tmp_path, "ing-a", redis_url, sim, tokens, ",".join(codes))
    b = start(procs, tmp_path, "ing-b", redis_url, sim, tokens, ",".join(codes))
    wait_for(lambda: spread(["ing-a", "ing-b"]), 20, "two-way spread")
    c = start(procs, tmp_path, "ing-c", redis_url, sim, tokens, ",".join(codes))
    wait_for(lambda: spread(["ing-a", "ing-b", "ing-c"]), 20, "three-way spread")
    b_tickers = set(b.status(raw)["tickers"])
    b.kill()
    killed = time.monotonic()
    wait_for(lambda: spread(["ing-a", "ing-c"]), 20, "take-over")
    assert time.monotonic() - killed < 8
    # A different id took over: b might still be handing over, so the verdict waits out the
    # patience before calling it a crash (no overlap, no clean release).
    moved = wait_for(
        lambda: [f for _, f in raw.xrange(KEYS.gaps) if f[b"cause"] == b"ticker_moved"],
        PATIENCE_S + 15,
        "ticker_moved gap",
    )
    assert set().union(*(set(g[b"tickers"].decode().split(",")) for g in moved)) == b_tickers
    assert all(g[b"detail"].startswith(b"crash: ing-b gone") for g in moved)
    for code in b_tickers:
        before = frames(raw, code)
        wait_for(partial(grew, code, before), 10, f"{code} frames on the new owner")
    assert a.stop() == 0
    wait_for(lambda: set(c.status(raw)["tickers"]) == set(codes), 10, "all on c")
    assert c.stop() == 0


def test_replication_two_survives_a_kill_without_a_hole(
    tmp_path: Path, redis_url: str, raw: Any, procs: list[Any]
) -> None:
    """With R = 2 both ingestors stream every ticker; killing one loses no snapshot."""
    sim = start_sim(tmp_path, procs, "--rate", "20")
    tokens = token_file(tmp_path)
    codes = "BBCA,TLKM,ASII"

    def holds_all(ing: Ingestor) -> bool:
        return len(ing.status(raw).get("tickers", [])) == 3

    a = start(procs, tmp_path, "ing-a", redis_url, sim, tokens, codes, REPLICATION="2")
    b = start(procs, tmp_path, "ing-b", redis_url, sim, tokens, codes, REPLICATION="2")
    for ing in (a, b):
        wait_for(partial(holds_all, ing), 20, f"{ing.name} holds all")
    wait_for(lambda: len({e["i"] for e in stream_books(raw)[("BBCA", "B")]}) == 2, 20)
    a.kill()
    time.sleep(2.0)
    assert b.stop() == 0
    sim.stop()
    stored = stream_books(raw)
    for key, entries in stored.items():
        seqs = sorted({int(e["q"]) for e in entries})
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"hole in {key}"
    assert assert_nothing_missing(raw, sim) > 100
    gaps = [f for _, f in raw.xrange(KEYS.gaps) if f[b"cause"] == b"ticker_moved"]
    assert gaps == []  # the other replica held every ticker all along


# ---- no silent gap: continuity across owners, proven (issue 13) ---------------------------


def drain_and_audit(stack: Stack, then: Callable[[Stack], None] | None = None) -> audit.Audit:
    """Stop the feed, let the writers put every entry and gap record on disk (and trim them
    from the streams), run ``then``, stop the processes (each must exit 0) and audit the
    files against the simulator's journal."""
    assert stack.sim is not None and stack.client is not None
    wait_for(stack.custody_settled, 60, "every takeover judged")
    stack.sim.stop()
    client = stack.client
    streams = [*KEYS.streams(), KEYS.gaps]
    wait_for(lambda: sum(client.xlen(s) for s in streams) == 0, 30, "writers caught up")
    if then is not None:
        then(stack)
    running = {name for name, child in stack.children.items() if child.alive()}
    codes = stack.stop()
    assert all(codes[name] in (0, None) for name in running), codes
    return audit.run(stack.sim.journal_path, stack.data_dir)


def holders(stack: Stack) -> dict[str, set[str]]:
    """Ticker → the live ingestors holding it (their status keys)."""
    held: dict[str, set[str]] = defaultdict(set)
    for status in stack.live()["ingestors"]:
        for code in status.tickers:
            held[code].add(status.id)
    return held


def spread_over(stack: Stack, names: list[str], replicas: int = 1) -> bool:
    table = assign(stack.tickers.split(","), sorted(names), replicas)
    want = {code: {n for n in names if code in table[n]} for code in stack.tickers.split(",")}
    return holders(stack) == want


class Witness:
    """A second subscriber to the simulator (a bare websocket client in a thread), so the market
    goes on while no ingestor is subscribed, as a real exchange does: every snapshot sent while
    the ingestor is down is in the journal too, and must fall in a recorded gap."""

    def __init__(self, sim: SimulatorProcess, codes: tuple[str, ...]) -> None:
        self.sim = sim
        self.codes = codes
        self.stopping = threading.Event()
        self.frames = 0
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()

    async def _run(self) -> None:
        token = SimulatorProcess.token()
        key = self.sim.fetch_key(token)
        user = read_claims(token).user_id or ""
        async with ws_connect(
            self.sim.ws_url,
            subprotocols=[Subprotocol("web")],
            origin=Origin(ORIGIN),
            user_agent_header=USER_AGENT,
            ping_interval=None,
            max_size=16 * 1024 * 1024,
            compression=None,
        ) as ws:
            await ws.send(request.auth(user, key, token))
            await ws.send(request.subscribe_books(user, key, token, self.codes, trades=False))
            next_ping = time.monotonic()
            with contextlib.suppress(ConnectionClosed):  # the simulator stopped
                while not self.stopping.is_set():
                    if time.monotonic() >= next_ping:
                        await ws.send(request.PING)
                        next_ping += 5
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ws.recv(), 0.5)
                        self.frames += 1

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)


def gaps_stay_listed(stack: Stack) -> None:
    """The writer copied the gap records to disk and trimmed the stream: ten minutes later
    the status document and ``obpipe status`` still list them (read from the gap file)."""
    client: Any = stack.client
    assert client.xlen(KEYS.gaps) == 0
    later = datetime.now(UTC) + timedelta(minutes=10)
    on_disk = [
        line.split(",")[0]
        for p in (stack.data_dir / "gaps").glob("*.csv")
        for line in p.read_text().splitlines()[1:]
    ]
    day = on_disk[0][:10]
    web = redis.Redis.from_url(stack.redis.url, decode_responses=True)  # as the web app's
    raw = read_state(web, KEYS, day, stack.data_dir)
    web.close()
    doc = build_status(
        raw,
        now=later,
        rates={},
        history=[],
        data_dir=stack.data_dir,
        read_only=True,
        calendar=TradingCalendar(),
    )
    moved = [g for g in doc["gaps"] if g["cause"] == "ticker_moved"]
    assert len(moved) >= 3 and doc["gaps_today"] == len(on_disk)
    printed = render(client, KEYS, now=later, data_dir=stack.data_dir)
    assert f"gaps today ({len(on_disk)} shown, {len(on_disk)} in all):" in printed
    assert printed.count("ticker_moved") == len(moved)


@pytest.mark.timeout(300)
def test_the_only_ingestor_sigkilled_three_times_loses_nothing_outside_a_gap(
    tmp_path: Path,
) -> None:
    """600 snapshots/s (6 tickers x 2 sides x 50/s, kept going by a second subscriber while the
    ingestor is down); every snapshot the files lack falls in a recorded gap of its ticker:
    each restart judges against the dead run's last stored frame."""
    stack = Stack(tmp_path, ingestors=1, writers=1, sim_args=("--rate", "50"))
    stack.start()
    witness: Witness | None = None
    try:
        wait_for(stack.ready, 30, "the pipeline up")
        assert stack.sim is not None
        witness = Witness(stack.sim, tuple(stack.tickers.split(",")))
        wait_for(lambda: witness.frames > 100, 10, "the witness streaming")
        rng = random.Random(13)
        for _ in range(3):
            time.sleep(rng.uniform(1.5, 4.0))
            stack.kill("ingestor-1")
            time.sleep(rng.uniform(0.3, 1.5))
            stack.restart("ingestor-1")
            wait_for(stack.ready, 30, "the ingestor back")
        time.sleep(2)
        result = drain_and_audit(stack, then=gaps_stay_listed)
    finally:
        if witness is not None:
            witness.stop()
        stack.stop()
    print(f"kill audit: {result.line()}")
    assert result.frames > 5000 and result.snapshots_on_disk > 0.4 * result.frames
    assert result.missing == 0, result.examples
    assert result.snapshots_on_disk + result.covered_by_gaps == result.frames
    assert result.ok, (result.line(), result.examples)
    assert result.covered_by_gaps > 0, "SIGKILL loses what is in flight: a gap must cover it"
    assert result.gap_causes.get("ticker_moved", 0) >= 3
    text = "".join(p.read_text() for p in (stack.data_dir / "gaps").glob("*.csv"))
    assert "restart: the previous run ended without a clean release" in text


@pytest.mark.timeout(300)
def test_make_before_break_hand_overs_record_no_gap_and_lose_nothing(tmp_path: Path) -> None:
    """Ingestors added (1 → 2 → 3) and removed with SIGTERM (3 → 2 → 1): every move overlaps
    or ends in a clean release after the newcomer's first frame."""
    stack = Stack(tmp_path, ingestors=1, writers=1, sim_args=("--rate", "20"))
    stack.start()
    try:
        wait_for(stack.ready, 30, "the pipeline up")
        env = stack.base_env()
        names = ["ingestor-1"]
        for name in ("ingestor-2", "ingestor-3"):
            stack.add(name, "ingestor", env)
            names.append(name)
            wait_for(partial(spread_over, stack, names), 30, f"spread over {names}")
            time.sleep(1)
        for name in ("ingestor-1", "ingestor-2"):
            assert stack.children[name].stop(30) == 0
            names.remove(name)
            wait_for(partial(spread_over, stack, names), 30, f"spread over {names}")
            time.sleep(1)
        result = drain_and_audit(stack)
    finally:
        stack.stop()
    print(f"hand-over audit: {result.line()}")
    assert result.frames > 1000 and result.ok, (result.line(), result.examples)
    assert result.gap_causes.get("ticker_moved", 0) == 0 and result.covered_by_gaps == 0
    assert result.snapshots_on_disk == result.frames


@pytest.mark.timeout(300)
def test_replication_two_fail_over_records_no_gap_and_loses_nothing(tmp_path: Path) -> None:
    """R = 2 over three ingestors: one SIGKILLed; the tickers it held get a new second owner,
    whose claim is proven by the surviving replica's overlapping frames."""
    stack = Stack(tmp_path, ingestors=3, writers=1, replication=2, sim_args=("--rate", "20"))
    stack.start()
    try:
        names = ["ingestor-1", "ingestor-2", "ingestor-3"]
        wait_for(partial(spread_over, stack, names, 2), 30, "two owners per ticker")
        time.sleep(2)
        stack.kill("ingestor-3")
        names.remove("ingestor-3")
        wait_for(partial(spread_over, stack, names, 2), 30, "two owners again")
        time.sleep(2)
        result = drain_and_audit(stack)
    finally:
        stack.stop()
    print(f"fail-over audit: {result.line()}")
    assert result.frames > 1000 and result.ok, (result.line(), result.examples)
    assert result.gap_causes.get("ticker_moved", 0) == 0 and result.covered_by_gaps == 0
    assert result.snapshots_on_disk == result.frames


# ---- the data watchdog ----------------------------------------------------------------------


class AlwaysTrading(TradingCalendar):
    """The calendar of a test that needs continuous trading whatever the machine's clock."""

    def is_continuous(self, moment: datetime) -> bool:
        return True


def test_the_data_watchdog_resubscribes_then_reconnects_a_muted_feed(
    tmp_path: Path, redis_url: str, raw: Any, procs: list[Any]
) -> None:
    """Pongs keep coming but no data (the simulator's mute fault) during continuous trading:
    resubscribe after STALE_RESUBSCRIBE_S, reconnect after STALE_RECONNECT_S, one stale gap."""
    sim = start_sim(tmp_path, procs, "--rate", "10", "--mute-every", "1.5", "--mute-for", "60")
    settings = Settings(
        redis_url=Secret(redis_url),
        redis_url_set=True,
        stockbit_ws_url=sim.ws_url,
        stockbit_api_url=sim.api_url,
        stockbit_token_file=token_file(tmp_path),
        tickers=("BBCA", "TLKM"),
        process_id="ing-w",
        data_dir=tmp_path / "data",  # the raw archive writes there
        heartbeat_s=0.2,
        status_ttl_s=5,
        ping_interval_s=0.5,
        dead_after_s=5,
        stale_resubscribe_s=2,
        stale_reconnect_s=4,
    )

    def stale_gaps() -> list[dict[bytes, bytes]]:
        return [f for _, f in raw.xrange(KEYS.gaps) if f[b"cause"] == b"stale"]

    async def scenario() -> int:
        ingestor = IngestorService(settings, auth_retry_s=1, calendar=AlwaysTrading())
        task = asyncio.create_task(ingestor.run())
        deadline = time.monotonic() + 30
        while not stale_gaps() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        ingestor.stop.set()
        return await task

    assert asyncio.run(scenario()) == 0
    gap = stale_gaps()[0]
    assert gap[b"tickers"] == b"BBCA,TLKM" and gap[b"ingestor"] == b"ing-w"
    detail = gap[b"detail"].decode()
    assert detail.startswith(
        "no data for 2s of continuous trading while pongs arrive: resubscribed"
    )
    assert "no data for 4s: reconnecting" in detail
    lasted = parse_iso(gap[b"end"].decode()) - parse_iso(gap[b"start"].decode())
    assert timedelta(seconds=4) <= lasted < timedelta(seconds=10)
    log = sim.log_path.read_text()
    assert log.count("conn 1 subscribed") == 2, "the resubscribe reached the server"
    assert "conn 2 opened" in log and "conn 1: muted" in log


def test_the_data_watchdog_stays_quiet_on_a_closed_day(
    tmp_path: Path, redis_url: str, raw: Any, procs: list[Any]
) -> None:
    """The same mute when the calendar says the market is closed (today closed by
    HOLIDAYS_FILE; lunch is the same flag, unit-tested in test_ingestor_protocol.py)."""
    sim = start_sim(tmp_path, procs, "--rate", "10", "--mute-every", "1.5", "--mute-for", "60")
    holidays = tmp_path / "holidays.txt"
    today = datetime.now(UTC).astimezone(WIB).date().isoformat()
    holidays.write_text(f"{today} closed  # the watchdog test\n")
    ing = start(
        procs,
        tmp_path,
        "ing-q",
        redis_url,
        sim,
        token_file(tmp_path),
        "BBCA",
        HOLIDAYS_FILE=str(holidays),
        STALE_RESUBSCRIBE_S="2",
        STALE_RECONNECT_S="4",
    )
    wait_for(lambda: ing.status(raw).get("state") == "connected", 20, "connected")
    wait_for(lambda: "conn 1: muted" in sim.log_path.read_text(), 10, "the mute")
    time.sleep(6)  # past both thresholds
    assert [f for _, f in raw.xrange(KEYS.gaps) if f[b"cause"] == b"stale"] == []
    assert ing.status(raw)["reconnects"] == 0
    log = sim.log_path.read_text()
    assert log.count("conn 1 subscribed") == 1 and "conn 2 opened" not in log
    assert "resubscribing" not in ing.log()
    assert ing.stop() == 0
