"""A whole pipeline as real processes, for the soak and the end-to-end benchmark.

Redis (append-only, on a fixed port so a restart keeps the address), the simulator, N ingestors
and M writers, each a real subprocess configured only through the environment, as in
production. Processes are :class:`pipeline.supervisor.Child` values, so killing, restarting
and stopping them works the way ``obpipe run`` does it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import redis

from pipeline.embedded_redis import EmbeddedRedis
from pipeline.keys import Keys
from pipeline.status import CONNECTED, read_live
from pipeline.supervisor import Child
from simulator.harness import SimulatorProcess

KEYS = Keys()


def wait_for(
    condition: Callable[[], object], timeout: float = 20.0, what: str = "", every: float = 0.05
) -> Any:
    """Poll ``condition`` until it returns something truthy (and return it); raise
    TimeoutError naming ``what`` after ``timeout`` seconds. Tests and benchmarks wait on
    conditions with deadlines rather than sleeping fixed times."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what or condition}")
        time.sleep(every)


class Stack:
    """Redis + simulator + ingestors + writers under one working directory."""

    def __init__(
        self,
        workdir: Path,
        *,
        ingestors: int = 1,
        writers: int = 1,
        replication: int = 1,
        tickers: str = "BBCA,BBRI,BMRI,TLKM,ASII,GOTO",
        sim_args: tuple[str, ...] = (),
        journal: bool = True,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.data_dir = data_dir or workdir / "data"
        self.redis = EmbeddedRedis(workdir / "redis", appendonly=True)
        self.sim_args = sim_args
        self.journal = journal
        self.sim: SimulatorProcess | None = None
        self.token_file = workdir / "token"
        self.counts = (ingestors, writers)
        self.replication = replication
        self.tickers = tickers
        self.extra_env = env or {}
        self.children: dict[str, Child] = {}
        self.client: redis.Redis | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start Redis, the simulator, then the ingestors and writers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        self.client = redis.Redis.from_url(self.redis.url, socket_timeout=5)
        self.sim = SimulatorProcess.start(
            self.workdir / "sim", *self.sim_args, journal=self.journal
        )
        self.replace_token()
        env = self.base_env()
        ingestors, writers = self.counts
        for i in range(1, ingestors + 1):
            self.add(f"ingestor-{i}", "ingestor", env)
        for i in range(1, writers + 1):
            self.add(f"writer-{i}", "writer", env)

    def base_env(self) -> dict[str, str]:
        """The environment every pipeline process gets."""
        assert self.sim is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STOCKBIT_", "OBPIPE_"))}
        env.update(
            REDIS_URL=self.redis.url,
            DATA_DIR=str(self.data_dir),
            STOCKBIT_WS_URL=self.sim.ws_url,
            STOCKBIT_API_URL=self.sim.api_url,
            STOCKBIT_TOKEN_FILE=str(self.token_file),
            TICKERS=self.tickers,
            REPLICATION=str(self.replication),
            HEARTBEAT_S="0.5",
            STATUS_TTL_S="5",
            LEASE_TTL_MS="2000",
            COMMIT_INTERVAL_MS="200",
            PING_INTERVAL_S="1",
            DEAD_AFTER_S="5",
            # The raw archive is on (the default), but a test machine's disk may be smaller
            # than the production floor: archiving must not stop (and alert) for that.
            RAW_MIN_FREE_MB="100",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def add(self, name: str, module: str, env: dict[str, str]) -> Child:
        """Start one pipeline process with its own id and log file."""
        log = self.workdir / f"{name}.log"
        argv = ["sh", "-c", f'exec "$0" -m {module} >>"$1" 2>&1', sys.executable, str(log)]
        child = Child(name, argv, {**env, "OBPIPE_ID": name})
        child.start()
        self.children[name] = child
        return child

    def stop(self) -> dict[str, int | None]:
        """Stop the simulator first, then ingestors, then writers, then Redis; exit codes."""
        codes: dict[str, int | None] = {}
        if self.sim is not None:
            codes["simulator"] = self.sim.stop()
        for prefix in ("ingestor", "writer"):
            for name, child in self.children.items():
                if name.startswith(prefix):
                    codes[name] = child.stop(30)
        if self.client is not None:
            self.client.close()
        self.redis.stop()
        return codes

    # --- faults ---------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL a pipeline process (no flush, no goodbye)."""
        child = self.children[name]
        if child.process is not None and child.process.poll() is None:
            child.process.send_signal(signal.SIGKILL)
            child.process.wait()

    def restart(self, name: str) -> None:
        """Start a stopped or killed process again under the same id."""
        self.children[name].start()

    def restart_redis(self) -> None:
        """Stop Redis (SIGTERM: the append-only file is flushed) and start it on the same port."""
        self.redis.stop()
        self.redis.start()

    def replace_token(self) -> None:
        """Write a fresh simulator token into the token file (atomically)."""
        tmp = self.token_file.with_suffix(".tmp")
        tmp.write_text(SimulatorProcess.token())
        tmp.replace(self.token_file)

    # --- what the processes say -----------------------------------------------------------

    def live(self) -> dict[str, Any]:
        """The live ingestor and writer statuses (``pipeline.status.read_live``)."""
        assert self.client is not None
        try:
            return read_live(self.client, KEYS)
        except redis.RedisError:
            return {"ingestors": [], "writers": [], "tickers": []}

    def ready(self) -> bool:
        """Every ingestor connected and every writer live, every partition owned."""
        return self._check(caught_up=False)

    def settled(self) -> bool:
        """Every ingestor connected, every writer live and caught up, every partition owned."""
        return self._check(caught_up=True)

    def custody_settled(self) -> bool:
        """Every ticker takeover judged (its gap, if any, recorded): no pending ``<holder>~``
        field in any ``custody:<CODE>`` HASH (``ingestor.continuity``)."""
        assert self.client is not None
        try:
            for key in self.client.scan_iter(match=KEYS.custody("*")):
                fields = cast(list[bytes], self.client.hkeys(key))
                if any(field.endswith(b"~") for field in fields):
                    return False
        except redis.RedisError:
            return False
        return True

    def gaps_copied(self) -> bool:
        """The gap stream is empty: every record is in a gap file (the commit trims it)."""
        assert self.client is not None
        try:
            return int(self.client.xlen(KEYS.gaps)) == 0
        except redis.RedisError:
            return False

    def _check(self, caught_up: bool) -> bool:
        ingestors, writers = self.counts
        live = self.live()
        connected = [s for s in live["ingestors"] if s.state == CONNECTED]
        if len(connected) != ingestors or len(live["writers"]) != writers:
            return False
        # Entries keep arriving, so "caught up" means nothing older than a second is pending.
        if caught_up and any(s.lag_seconds > 1.0 for s in live["writers"]):
            return False
        owned = sorted(p for s in live["writers"] for p in s.partitions)
        return owned == sorted([-1, *range(KEYS.partitions)])
