"""``obpipe run`` as a real subprocess: the whole pipeline up, rows on disk, clean stop, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bench.stack import wait_for
from pipeline.embedded_redis import free_port

pytestmark = pytest.mark.e2e


def page_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def csv_rows(data_dir: Path) -> int:
    total = 0
    for path in (data_dir / "orderbook").glob("*.csv"):
        total += max(0, len(path.read_bytes().splitlines()) - 1)
    return total


def children_named(parent: psutil.Process, module: str) -> list[psutil.Process]:
    found = []
    for child in parent.children(recursive=True):
        try:
            if module in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path, Path]]:
    data_dir = tmp_path / "data"
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STOCKBIT_", "REDIS_URL", "TICKERS", "OBPIPE_"))
    }
    env.update({"DATA_DIR": str(data_dir), "WEB_PORT": str(port), "TICKERS": "BBCA,TLKM"})
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run"],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own process group, like a terminal's foreground job
        )
        try:
            yield process, port, data_dir, log_path
        finally:
            if process.poll() is None:
                process.kill()
                for child in psutil.Process().children(recursive=True):
                    child.kill()


def test_run_serves_page_writes_rows_and_stops_cleanly(
    running: tuple[subprocess.Popen[bytes], int, Path, Path],
) -> None:
    process, port, data_dir, log_path = running
    wait_for(lambda: page_answers(port), 30, "the status page")
    started = time.monotonic()
    wait_for(lambda: csv_rows(data_dir) > 0, 15 + 10, "CSV rows")
    assert time.monotonic() - started < 25
    supervisor = psutil.Process(process.pid)
    children = supervisor.children(recursive=True)
    assert len(children) >= 5, [c.cmdline() for c in children]
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, log_path.read_text()[-3000:]
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child
    text = log_path.read_text()
    assert "SIMULATOR" in text and "all processes stopped" in text
    assert "Traceback" not in text


def test_ctrl_c_reaches_only_the_supervisor(
    running: tuple[subprocess.Popen[bytes], int, Path, Path],
) -> None:
    # A terminal's Ctrl-C signals the whole foreground process group at once; the children
    # (Redis included) live in their own sessions, so they still stop in the safe order.
    process, port, data_dir, log_path = running
    wait_for(lambda: page_answers(port), 30, "the status page")
    wait_for(lambda: csv_rows(data_dir) > 0, 25, "CSV rows")
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(60) == 0
    text = log_path.read_text()
    assert "Traceback" not in text, text[-3000:]
    order = [
        text.index(f"{name}")
        for name in ("ingestor: stopped", "writer-1: stopped", "all processes stopped")
    ]
    assert order == sorted(order)


def test_a_killed_child_is_restarted(
    running: tuple[subprocess.Popen[bytes], int, Path, Path],
) -> None:
    process, port, data_dir, log_path = running
    wait_for(lambda: page_answers(port), 30, "the status page")
    supervisor = psutil.Process(process.pid)
    wait_for(lambda: children_named(supervisor, "writer"), 20, "the writer")
    writer = children_named(supervisor, "writer")[0]
    writer.kill()
    wait_for(
        lambda: [c for c in children_named(supervisor, "writer") if c.pid != writer.pid],
        30,
        "a new writer",
    )
    wait_for(lambda: "restarted" in log_path.read_text(), 10, "the restart report")
    before = csv_rows(data_dir)
    wait_for(lambda: csv_rows(data_dir) > before, 30, "rows from the restarted writer")
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
