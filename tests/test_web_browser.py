"""The status page in headless Chromium against the real pipeline."""

# The simulator, an ingestor, a writer and the web app run as real processes on the session's
# redis-server; Playwright drives Debian's Chromium (never a downloaded browser). The test watches
# the badge turn green, the counts rise, the depth ladder draw, ticker control refused without the
# admin token and working with it, the Days section list today's scheduled finalize job and queue
# one for a past day, the badge turn amber when the feed goes away, and the "data stale" banner
# when the web process stops. It saves the page at 1280 px and 390 px as ``status-1280.png`` and
# ``status-390.png`` in a temporary folder, or in ``$OBPIPE_SCREENSHOTS_DIR`` (``make
# screenshots`` sets it to ``docs/``, shown in the README).

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import redis
from playwright.sync_api import Browser, expect, sync_playwright

from pipeline.keys import Keys
from simulator.harness import SimulatorProcess

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS_ENV = "OBPIPE_SCREENSHOTS_DIR"
"""Where the screenshots go: ``make screenshots`` points it at ``docs/``; otherwise a temporary
folder (a test run never rewrites the committed pictures)."""
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_TOKEN = "browser-test-admin-token"
PAST_DAY = "2025-12-01"
KEYS = Keys()

pytestmark = [
    pytest.mark.browser,
    pytest.mark.redis,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing: install Debian's chromium package "
        "(apt-get install chromium) to run the browser test",
    ),
]


class Processes:
    """The pipeline's processes for one test, with their logs, stopped on exit."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        self._logs.append(log)
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**self.env, "OBPIPE_ID": name},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.running[name] = process
        return process

    def stop(self, name: str, timeout: float = 10.0) -> int:
        process = self.running[name]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def close(self) -> None:
        for name in list(self.running):
            self.stop(name)
        for log in self._logs:
            log.close()

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-25:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)


def wait_for_port(path: Path, process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text().strip())
        assert process.poll() is None, f"process exited with {process.returncode}"
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written within {timeout}s")


@pytest.fixture
def pipeline(
    redis_url: str, tmp_path: Path, data_dir: Path
) -> Iterator[tuple[Processes, SimulatorProcess, str]]:
    """Simulator + ingestor + writer + web; yields (processes, simulator, web base URL)."""
    sim = SimulatorProcess.start(tmp_path / "sim", "--levels", "12", "--rate", "2", journal=False)
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STOCKBIT_", "REDIS_", "WEB_", "OBPIPE_", "TICKERS", "DATA_DIR"))
    }
    env = {
        **clean,
        "REDIS_URL": redis_url,
        "DATA_DIR": str(data_dir),
        "STOCKBIT_WS_URL": sim.ws_url,
        "STOCKBIT_API_URL": sim.api_url,
        "STOCKBIT_TOKEN": sim.token(),
        "TICKERS": "BBCA,TLKM",
        "PING_INTERVAL_S": "1",
        "HEARTBEAT_S": "0.5",
        "COMMIT_INTERVAL_MS": "200",
        "WEB_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    procs = Processes(tmp_path, env)
    try:
        procs.start("ingestor-1", "-m", "ingestor")
        procs.start("writer-1", "-m", "writer")
        port_file = tmp_path / "web.port"
        web = procs.start("web", "-m", "web", "--port", "0", "--port-file", str(port_file))
        port = wait_for_port(port_file, web)
        yield procs, sim, f"http://127.0.0.1:{port}"
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.close()
        sim.stop()


def number(text: str) -> int:
    digits = re.sub(r"[^0-9]", "", text)
    return int(digits) if digits else 0


def test_status_page_live(
    pipeline: tuple[Processes, SimulatorProcess, str],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    procs, sim, base = pipeline
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                run_page_checks(browser, base, redis_client, procs, sim, shots=tmp_path)
            finally:
                browser.close()
    except BaseException:
        print(procs.logs())
        raise


def run_page_checks(
    browser: Browser,
    base: str,
    redis_client: redis.Redis,
    procs: Processes,
    sim: SimulatorProcess,
    *,
    shots: Path,
) -> None:
    """The page checks, in the order the pipeline's life allows (the feed dies near the end)."""
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(base + "/")

    # The badge turns green once the ingestor is connected to the simulator.
    badge = page.locator(".ingestor[data-id='ingestor-1'] [data-testid=badge]")
    expect(badge).to_have_text("Connected", timeout=15_000)
    expect(badge).to_have_class(re.compile(r"\bgreen\b"))
    expect(page.locator("#stale-banner")).to_be_hidden()

    # Counts rise: the ingestor's frames and a ticker's frames grow between polls.
    frames = page.locator(".ingestor[data-id='ingestor-1'] dd.frames")
    expect(frames).not_to_have_text("0", timeout=10_000)
    first = number(frames.inner_text())
    bbca_frames = page.locator("#tickers tr[data-code=BBCA] td.frames")
    expect(bbca_frames).to_be_visible()
    # Its share of today's trading time outside its gaps ("—" before the open, "100%" ...).
    expect(page.locator("#tickers tr[data-code=BBCA] td.covered")).to_have_text(
        re.compile(r"^(—|\d+(\.\d+)?%)$")
    )
    page.wait_for_function(
        "n => Number(document.querySelector(\".ingestor[data-id='ingestor-1'] dd.frames\")"
        ".textContent.replace(/[^0-9]/g, '')) > n",
        arg=first,
        timeout=10_000,
    )
    # The writer shows up and writes rows; today's file appears.
    writer_row = page.locator("#writers tr", has_text="writer-1")
    expect(writer_row).to_be_visible(timeout=10_000)
    expect(page.locator("#files tr", has_text="_BBCA.csv")).to_be_visible(timeout=15_000)
    # The writer scheduled today's finalize job; the Days section lists the day.
    today_row = page.locator("#days tr[data-day]")
    expect(today_row).to_have_count(1, timeout=15_000)
    expect(today_row.locator("td.job .badge")).to_have_text("scheduled")

    # The depth ladder draws ten levels a side, with bars.
    page.locator("button[data-depth=BBCA]").click()
    expect(page.locator("#depth-code")).to_have_text("BBCA")
    expect(page.locator("#depth .lvl.bid .price")).to_have_count(10, timeout=10_000)
    expect(page.locator("#depth .lvl.offer .price")).to_have_count(10)
    widths = page.eval_on_selector_all(
        "#depth .bar", "bars => bars.map(b => b.getBoundingClientRect().width)"
    )
    assert max(widths) > 50

    # Control without a token: the page asks for it and nothing is sent.
    page.fill("#add-input", "ASII")
    page.click("#add-button")
    expect(page.locator("#control-msg")).to_contain_text("Enter the admin token first")
    # A wrong token is refused by the server (401) and forgotten.
    page.fill("#token-input", "not-the-admin-token")
    page.click("#token-form button[type=submit]")
    page.click("#add-button")
    expect(page.locator("#control-msg")).to_contain_text("Admin token refused")
    expect(page.locator("#token-form")).to_be_visible()
    assert "ASII" not in redis_client.smembers(KEYS.desired_tickers)
    # ... as is an API call without any token.
    refused = page.request.post(base + "/api/tickers", data={"add": ["ASII"]})
    assert refused.status == 401
    # An invalid code is named.
    page.fill("#token-input", ADMIN_TOKEN)
    page.click("#token-form button[type=submit]")
    page.fill("#add-input", "ASII, 9X")
    page.click("#add-button")
    expect(page.locator("#control-msg")).to_contain_text("'9X'")
    # With the token, adding works, and the ingestor starts streaming the new ticker.
    page.fill("#add-input", "asii")
    page.click("#add-button")
    expect(page.locator("#control-msg")).to_contain_text("added ASII")
    assert "ASII" in redis_client.smembers(KEYS.desired_tickers)
    expect(page.locator("#tickers tr[data-code=ASII] td.frames")).not_to_have_text(
        "0", timeout=10_000
    )
    # With the token, a finished day gets a Finalize button; today does not.
    redis_client.sadd(KEYS.finalize_scheduled, PAST_DAY)
    past = page.locator(f"#days tr[data-day='{PAST_DAY}']")
    expect(past.locator("button[data-finalize]")).to_have_text("Finalize", timeout=15_000)
    expect(page.locator("#days tr[data-day]").first.locator("td.job")).to_contain_text(
        "day not over"
    )
    past.locator("button[data-finalize]").click()
    expect(page.locator("#days-msg")).to_contain_text(f"finalize of {PAST_DAY} queued")
    # No jobs worker runs here, so the job stays queued.
    expect(past.locator("td.job .badge")).to_have_text("queued", timeout=10_000)

    shots = Path(os.environ.get(SCREENSHOTS_ENV) or shots / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    # A few sparkline points (the server samples every 2 s) make a more telling screenshot.
    # (A function, not a bare expression: Playwright evaluates bare expressions with eval(),
    # which the page's CSP rightly forbids.)
    page.wait_for_function(
        "() => (document.querySelector('#sparkline polyline')?.getAttribute('points') || '')"
        ".split(' ').length >= 4",
        timeout=15_000,
    )
    expect(page.locator("#depth .lvl.offer .price")).to_have_count(10)
    page.screenshot(path=str(shots / "status-1280.png"), full_page=True)
    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    phone.goto(base + "/")
    expect(phone.locator("[data-testid=badge]").first).to_have_text("Connected", timeout=10_000)
    phone.locator("button[data-depth=BBCA]").click()
    expect(phone.locator("#depth .lvl.bid .price")).to_have_count(10, timeout=10_000)
    # At phone width nothing may force the page wider than the screen.
    overflow = phone.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 390
    phone.screenshot(path=str(shots / "status-390.png"), full_page=True)
    phone.close()

    # The feed goes away: the ingestor reconnects and the badge turns amber.
    sim.stop()
    expect(badge).to_have_text("Reconnecting", timeout=15_000)
    expect(badge).to_have_class(re.compile(r"\bamber\b"))

    # The web process stops: the page says its data is stale.
    assert procs.stop("web") == 0
    expect(page.locator("#stale-banner")).to_be_visible(timeout=10_000)
    expect(page.locator("#stale-banner")).to_contain_text("Data stale")
    assert errors == [] or all("Failed to load resource" in e for e in errors), errors
