"""``obpipe run``: the whole pipeline on one machine, supervised.

Starts, in order: an embedded Redis (unless ``REDIS_URL`` is set), the simulator (unless a
Stockbit token is configured — said loudly), the ingestors, the writers, an RQ worker and the
web app. A child that dies is restarted with exponential backoff and the restart is reported.
Ctrl-C or SIGTERM stops them in the safe order: ingestors first (they flush what they hold),
then writers (they commit), then web and worker, the simulator, and Redis last.

Children run in their own sessions so a Ctrl-C in the terminal reaches only the supervisor,
which then stops them in that order instead of all at once.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

from pipeline.embedded_redis import EmbeddedRedis, RedisUnavailableError, free_port
from pipeline.layout import book_file, gap_file, trade_file
from pipeline.settings import Settings

log = logging.getLogger("obpipe.run")

DEMO_TICKERS = "BBCA,BBRI,BMRI,TLKM,ASII,GOTO,BUMI,ANTM"
SIMULATOR_SECRET = "obpipe-run-demo"
STOP_TIMEOUT_S = 20.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 30.0


@dataclass
class Child:
    """One supervised process: how to start it and how it has fared."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    backoff: float = 0.5
    stopping: bool = field(default=False)

    def start(self) -> None:
        """Start (or restart) the process in its own session."""
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True
        )
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait, then SIGKILL if it will not go; returns the exit code."""
        self.stopping = True
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class Supervisor:
    """Owns the children and the embedded Redis; restarts and stops them in order."""

    def __init__(self, settings: Settings, ingestors: int, writers: int, web: bool, worker: bool):
        self.settings = settings
        self.counts = (ingestors, writers)
        self.with_web = web
        self.with_worker = worker
        self.redis: EmbeddedRedis | None = None
        self.simulator: Child | None = None
        self.groups: list[list[Child]] = []
        self.stop_requested = threading.Event()

    def child_env(self) -> dict[str, str]:
        """The environment every child inherits (with the chosen Redis and feed)."""
        env = dict(os.environ)
        env["DATA_DIR"] = str(self.settings.data_dir.resolve())
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start_redis(self, env: dict[str, str]) -> None:
        """Start the embedded Redis unless REDIS_URL points elsewhere."""
        if self.settings.redis_url_set:
            log.info("using Redis from REDIS_URL")
            return
        directory = self.settings.data_dir.resolve() / "redis"
        self.redis = EmbeddedRedis(directory, appendonly=True)
        self.redis.start()
        env["REDIS_URL"] = self.redis.url
        log.info("embedded Redis on %s (append-only file in %s)", self.redis.url, directory)

    def start_simulator(self, env: dict[str, str]) -> None:
        """Start the simulator and point the ingestors at it when no token is configured."""
        if self.settings.has_stockbit_token:
            log.info("Stockbit token configured: capturing the real feed")
            return
        port = free_port()
        log.warning(
            "NO STOCKBIT TOKEN CONFIGURED: running against the built-in SIMULATOR (demo data, "
            "not real market data). Set STOCKBIT_TOKEN_FILE to capture the real feed."
        )
        sim_env = {**env, "PYTHONUNBUFFERED": "1"}
        self.simulator = Child(
            "simulator",
            _python_module("simulator", "--port", str(port), "--secret", SIMULATOR_SECRET),
            sim_env,
        )
        self.simulator.start()
        token = subprocess.run(
            _python_module("simulator", "--print-token", "--secret", SIMULATOR_SECRET),
            env=sim_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        env["STOCKBIT_TOKEN"] = token
        env["STOCKBIT_WS_URL"] = f"ws://127.0.0.1:{port}/ws"
        env["STOCKBIT_API_URL"] = f"http://127.0.0.1:{port}"
        env.pop("STOCKBIT_TOKEN_FILE", None)
        if not self.settings.tickers:
            env["TICKERS"] = DEMO_TICKERS

    def build(self, env: dict[str, str]) -> None:
        """Declare the children in start order (stop order is the same)."""
        ingestors, writers = self.counts
        self.groups = [
            [
                Child(
                    f"ingestor-{i}",
                    _python_module("ingestor"),
                    {**env, "OBPIPE_ID": f"ingestor-{i}"},
                )
                for i in range(1, ingestors + 1)
            ],
            [
                Child(f"writer-{i}", _python_module("writer"), {**env, "OBPIPE_ID": f"writer-{i}"})
                for i in range(1, writers + 1)
            ],
        ]
        if self.with_web:
            self.groups.append([Child("web", _python_module("web"), env)])
        if self.with_worker:
            self.groups.append([Child("jobs", _python_module("jobs"), env)])

    def children(self) -> list[Child]:
        """Every supervised child except the simulator."""
        return [child for group in self.groups for child in group]

    def supervise_once(self) -> None:
        """Restart children that died, with backoff, and say so."""
        now = time.monotonic()
        watched = self.children() + ([self.simulator] if self.simulator else [])
        for child in watched:
            if child.stopping or child.process is None or child.alive():
                continue
            if child.next_start == 0.0:
                ran = now - child.started_at
                if ran > STABLE_AFTER_S:
                    child.backoff = 0.5
                child.next_start = now + child.backoff
                log.error(
                    "%s exited with code %s after %.1fs; restarting in %.1fs",
                    child.name, child.process.returncode, ran, child.backoff,
                )  # fmt: skip
                child.backoff = min(child.backoff * 2, MAX_BACKOFF_S)
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                child.start()
                log.warning("%s restarted (restart #%d)", child.name, child.restarts)

    def run(self) -> int:
        """Start everything, supervise until asked to stop, then stop in order."""
        env = self.child_env()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.start_redis(env)
        except RedisUnavailableError as exc:
            log.error("cannot start the embedded Redis: %s", exc)
            return 1
        try:
            self.start_simulator(env)
            self.build(env)
            for child in self.children():
                child.start()
            self.announce()
            while not self.stop_requested.wait(0.2):
                self.supervise_once()
        finally:
            self.shutdown()
        return 0

    def announce(self) -> None:
        """Tell the user where to look."""
        data = self.settings.data_dir.resolve()
        lines = [
            "obpipe is running:",
            f"  status page  http://{self.settings.web_host}:{self.settings.web_port}/",
            f"  order books  {data / book_file('YYYY-MM-DD', 'CODE')}",
            f"  trades       {data / trade_file('YYYY-MM-DD', 'CODE')}",
            f"  gaps         {data / gap_file('YYYY-MM-DD')}",
            f"  processes    {', '.join(c.name for c in self.children())}",
            "Press Ctrl-C to stop (ingestors flush, writers commit, then the rest).",
        ]
        print("\n".join(lines), file=sys.stderr, flush=True)

    def shutdown(self) -> None:
        """Stop children group by group, then the simulator, then Redis."""
        for group in self.groups:
            for child in group:
                child.stopping = True
                if child.alive() and child.process is not None:
                    child.process.terminate()
            for child in group:
                code = child.stop()
                if code not in (0, None, -signal.SIGTERM):
                    log.warning("%s stopped with exit code %s", child.name, code)
        if self.simulator is not None:
            self.simulator.stop()
        if self.redis is not None:
            self.redis.stop()
        log.info("all processes stopped")


def run_pipeline(
    settings: Settings, *, ingestors: int, writers: int, web: bool, worker: bool
) -> int:
    """``obpipe run``: supervise the whole pipeline until SIGTERM/SIGINT; the exit code."""
    supervisor = Supervisor(settings, ingestors, writers, web, worker)

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        supervisor.stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return supervisor.run()
