"""Start the simulator as a real subprocess, for tests and scripts.

::

    with SimulatorProcess.start(tmp_path, "--ping-window", "5") as sim:
        key = sim.fetch_key(sim.token())
        ...  # connect to sim.ws_url with subprotocol "web"
    assert sim.returncode == 0

The process listens on a free port (``--port 0 --port-file``), journals to
``sim.journal_path`` and is stopped with SIGTERM on exit (killed if it does not stop in time).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from simulator.credentials import DEFAULT_SECRET, DEFAULT_TOKEN_TTL, DEFAULT_USER_ID, mint_token


class SimulatorProcess:
    """A running ``python -m simulator`` and how to reach it."""

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, journal_path: Path, log_path: Path
    ) -> None:
        self.process = process
        self.port = port
        self.journal_path = journal_path
        self.log_path = log_path
        self.returncode: int | None = None

    @classmethod
    def start(
        cls, workdir: Path, *args: str, journal: bool = True, timeout: float = 10.0
    ) -> SimulatorProcess:
        """Launch with extra ``args`` and wait until it listens (files go under ``workdir``).

        ``journal=False`` leaves the journal off (benchmarks: it costs a JSON line per frame).
        """
        workdir.mkdir(parents=True, exist_ok=True)
        port_file = workdir / "simulator.port"
        port_file.unlink(missing_ok=True)
        journal_path = workdir / "simulator.jsonl"
        log_path = workdir / "simulator.log"
        command = [
            sys.executable,
            "-m",
            "simulator",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            *(["--journal", str(journal_path)] if journal else []),
            *args,
        ]
        with log_path.open("ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if process.poll() is not None:
                raise RuntimeError(f"simulator exited with {process.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                process.kill()
                raise TimeoutError(f"simulator did not start listening; see {log_path}")
            time.sleep(0.02)
        port = int(port_file.read_text().strip())
        return cls(process, port, journal_path, log_path)

    @property
    def ws_url(self) -> str:
        """The feed URL (``STOCKBIT_WS_URL``)."""
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def api_url(self) -> str:
        """The REST base (``STOCKBIT_API_URL``); the key is at ``{api_url}/auth/websocket/key``."""
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def token(
        user_id: int = DEFAULT_USER_ID,
        ttl: float = DEFAULT_TOKEN_TTL,
        secret: str = DEFAULT_SECRET,
    ) -> str:
        """A token the simulator accepts (when started with the default ``--secret``)."""
        return mint_token(secret, time.time(), user_id, ttl)

    def fetch_key(self, token: str) -> str:
        """GET the websocket key for ``token``; raise ``urllib.error.HTTPError`` on 401."""
        request = urllib.request.Request(
            f"{self.api_url}/auth/websocket/key", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            payload = json.load(response)
        key: str = payload["data"]["key"]
        return key

    def journal(self) -> list[dict[str, Any]]:
        """Every journal line written so far (flushed every ~0.5 s and at exit)."""
        if not self.journal_path.exists():
            return []
        with self.journal_path.open(encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.endswith("\n")]

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.returncode = self.process.returncode
        return self.returncode

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
