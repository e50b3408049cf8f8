"""``python -m web`` as a real process: waitress serves the app; SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent


def wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if process.poll() is not None:
            raise AssertionError(f"web exited early with {process.returncode}")
        time.sleep(0.05)
    raise AssertionError(f"{path} not written within {timeout}s")


def test_serves_with_waitress_and_stops_on_sigterm(redis_url: str, tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WEB_", "REDIS_"))},
        "REDIS_URL": redis_url,
        "DATA_DIR": str(tmp_path / "data"),
        "WEB_ADMIN_TOKEN": "a-long-admin-token",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "web", "--port", "0", "--port-file", str(port_file)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        port = int(wait_for_file(port_file, process))
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            assert json.load(response) == {"status": "ok", "redis": "ok"}
            assert response.headers["Server"] == "obpipe"  # waitress, not werkzeug
        with urllib.request.urlopen(f"{base}/", timeout=5) as response:
            assert b"obpipe" in response.read()
        request = urllib.request.Request(
            f"{base}/api/tickers", data=b'{"add": ["BBCA"]}', method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.stdout.read().decode() if process.stdout else ""
    assert "a-long-admin-token" not in output
    assert "stopped" in output
