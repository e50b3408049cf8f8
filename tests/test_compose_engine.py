"""docker-compose.yml on a real Docker engine: the README's demo, scaled, stopped, audited."""

# The image is built through the compose file, then the `docker-compose` (v1) CLI does what the
# README tells a user: `--profile demo up -d`, a simulator token pair stored in the `tokens`
# volume with `obpipe token set` (the simulator feeding redis, ingestor, writer, web and jobs),
# `up -d --scale ingestor=2 --scale writer=3`, and `stop`. Every container must become healthy
# (the compose healthchecks, run inside the image), never restart, and exit 0 on SIGTERM. The CSV
# files of the data volume are then audited: no torn or duplicated row, and in every order-book
# file each side's `seq` only goes up, one step at a time, except across a gap recorded for that
# ticker in `gaps/YYYY-MM-DD.csv`.
#
# Skipped when no Docker engine answers `docker info`; CI prepares one (with local stand-ins for
# the two base images) with `../shared/tools/docker-standins.sh`.

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
STANDINS = ROOT.parent / "shared" / "tools" / "docker-standins.sh"
TICKERS = ("BBCA", "BBRI", "BMRI", "TLKM", "ASII", "GOTO")
BOOK_COLUMNS = ["timestamp", "price", "lots", "total_value", "side", "level", "orders", "seq"]
TRADE_COLUMNS = ["timestamp", "price", "lots", "total_value", "side", "trade_number", "board"]
GAP_COLUMNS = ["start", "end", "cause", "tickers", "ingestor", "detail"]
GAP_SLACK = timedelta(seconds=2)
"""Around a recorded gap, the receive times of the rows that bracket a hole may differ a little
from the gap's own start and end (both are the ingestor's wall clock, taken at other points)."""
# Variables a user's shell could hold that would change what compose interpolates; the test
# passes the engine's variables only and puts the demo's settings in its own --env-file.
KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR")
KEEP_ENV_LOWER = ("http_proxy", "https_proxy", "no_proxy")


# ---- the audit of a data directory (pure) ----------------------------------------------------


@dataclass
class Findings:
    """What the audit of one DATA_DIR found: figures, and every problem as one line."""

    book_files: int = 0
    trade_files: int = 0
    rows: int = 0
    snapshots: int = 0
    trades: int = 0
    gaps: int = 0
    holes_in_gaps: int = 0
    tickers: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        """Note one problem (the first 50 are kept in full, then only counted)."""
        if len(self.problems) < 50:
            self.problems.append(text)
        elif len(self.problems) == 50:
            self.problems.append("... more problems not listed")


Gap = tuple[datetime, datetime, frozenset[str], str]
"""(start, end, tickers (empty: all), cause) of one recorded gap."""


def read_csv(path: Path, columns: list[str], findings: Findings) -> list[list[str]]:
    """The rows of one CSV file below its header, after the file-level checks: complete last
    line, the expected leading columns, as many cells in every row as in the header, and no
    line twice."""
    data = path.read_bytes()
    if not data:
        findings.problem(f"{path.name}: empty file (no header)")
        return []
    if not data.endswith(b"\n"):
        findings.problem(f"{path.name}: torn last line {data[-80:]!r}")
    lines = data.decode().splitlines()
    for line, count in Counter(lines[1:]).items():
        if count > 1:
            findings.problem(f"{path.name}: row written {count} times: {line}")
    header, *rows = list(csv.reader(lines))
    if header[: len(columns)] != columns:
        findings.problem(f"{path.name}: header {header}, expected {columns} first")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            findings.problem(f"{path.name}:{number}: {len(row)} cells, header has {len(header)}")
    return [row for row in rows if len(row) == len(header)]


def read_gaps(data_dir: Path, findings: Findings) -> list[Gap]:
    """Every gap recorded in ``gaps/*.csv``."""
    gaps: list[Gap] = []
    for path in sorted((data_dir / "gaps").glob("*.csv")):
        for row in read_csv(path, GAP_COLUMNS, findings):
            tickers = frozenset(t for t in row[3].split(",") if t)
            gaps.append(
                (datetime.fromisoformat(row[0]), datetime.fromisoformat(row[1]), tickers, row[2])
            )
    findings.gaps = len(gaps)
    return gaps


def covered(code: str, before: datetime, after: datetime, gaps: list[Gap]) -> bool:
    """Does a recorded gap of ``code`` (or of every ticker) overlap (before, after)?"""
    return any(
        (not tickers or code in tickers)
        and start - GAP_SLACK <= after
        and before <= end + GAP_SLACK
        for start, end, tickers, _cause in gaps
    )


def audit_book(path: Path, gaps: list[Gap], findings: Findings) -> None:
    """One order-book file: whole snapshots (levels 1, 2, ... sharing timestamp, side and
    seq), each dated on the file's Jakarta day, and per side a seq that rises by one from
    snapshot to snapshot unless a recorded gap of the ticker explains the hole."""
    day, code = path.stem.split("_", 1)
    findings.book_files += 1
    findings.tickers.add(code)
    rows = read_csv(path, [*BOOK_COLUMNS, "received_at"], findings)
    findings.rows += len(rows)
    snapshots: list[tuple[str, str, int, datetime]] = []  # (timestamp, side, seq, received_at)
    levels = 0
    for row in rows:
        timestamp, side, level, seq = row[0], row[4], int(row[5]), int(row[7])
        key = (timestamp, side, seq)
        if snapshots and snapshots[-1][:3] == key and level == levels + 1:
            levels = level
            continue
        if level != 1:
            findings.problem(f"{path.name}: snapshot {key} starts at level {level}")
        if not timestamp.startswith(day):
            findings.problem(f"{path.name}: snapshot {key} is not on the file's day")
        snapshots.append((timestamp, side, seq, datetime.fromisoformat(row[8])))
        levels = level
    findings.snapshots += len(snapshots)
    last: dict[str, tuple[int, datetime]] = {}
    for timestamp, side, seq, received in snapshots:
        if side not in ("BID", "OFFER"):
            findings.problem(f"{path.name}: side {side!r} at {timestamp}")
        previous = last.get(side)
        last[side] = (seq, received)
        if previous is None or seq == previous[0] + 1:
            continue
        if seq == previous[0]:
            findings.problem(f"{path.name}: {side} seq {seq} written twice")
        elif seq < previous[0]:
            findings.problem(f"{path.name}: {side} seq steps back {previous[0]} -> {seq}")
        elif covered(code, previous[1], received, gaps):
            findings.holes_in_gaps += 1
        else:
            findings.problem(
                f"{path.name}: {side} seq hole {previous[0]} -> {seq} "
                f"({previous[1].isoformat()} -> {received.isoformat()}) and no recorded gap"
            )


def audit_trades(path: Path, findings: Findings) -> None:
    """One trade file: each trade number once (the tape is deduplicated on it)."""
    findings.trade_files += 1
    rows = read_csv(path, [*TRADE_COLUMNS, "received_at"], findings)
    findings.trades += len(rows)
    for number, count in Counter(row[5] for row in rows).items():
        if count > 1:
            findings.problem(f"{path.name}: trade number {number} written {count} times")


def audit(data_dir: Path) -> Findings:
    """Audit every order-book and trade file under ``data_dir`` against its gaps."""
    findings = Findings()
    gaps = read_gaps(data_dir, findings)
    for path in sorted((data_dir / "orderbook").glob("*.csv")):
        audit_book(path, gaps, findings)
    for path in sorted((data_dir / "trades").glob("*.csv")):
        audit_trades(path, findings)
    return findings


# ---- the audit, checked on files made by hand -------------------------------------------------

HEADER = ",".join([*BOOK_COLUMNS, "received_at"])


def book_rows(side: str, seq: int, second: int, levels: int = 2) -> list[str]:
    stamp = f"2026-03-02T10:00:{second:02d}.000000+07:00"
    return [
        f"{stamp},8200,{level},{8200 * level * 100},{side},{level},3,{seq},{stamp}"
        for level in range(1, levels + 1)
    ]


def write_day(data_dir: Path, rows: list[str], gaps: tuple[str, ...] = ()) -> Path:
    (data_dir / "orderbook").mkdir(parents=True)
    (data_dir / "gaps").mkdir()
    (data_dir / "orderbook" / "2026-03-02_BBCA.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    (data_dir / "gaps" / "2026-03-02.csv").write_text(
        "\n".join([",".join(GAP_COLUMNS), *gaps]) + "\n"
    )
    return data_dir


def test_audit_accepts_a_clean_file(tmp_path: Path) -> None:
    rows = [*book_rows("BID", 10, 1), *book_rows("OFFER", 40, 1), *book_rows("BID", 11, 2)]
    findings = audit(write_day(tmp_path, rows))
    assert findings.problems == []
    assert (findings.rows, findings.snapshots, findings.tickers) == (6, 3, {"BBCA"})


def test_audit_finds_duplicates_holes_and_steps_back(tmp_path: Path) -> None:
    rows = [
        *book_rows("BID", 10, 1),
        *book_rows("BID", 10, 1),  # the same snapshot twice
        *book_rows("BID", 13, 5),  # a hole, no gap recorded
        *book_rows("BID", 12, 6),  # a step back
        book_rows("OFFER", 40, 7)[1],  # a snapshot without its level 1
    ]
    problems = "\n".join(audit(write_day(tmp_path, rows)).problems)
    assert "written 2 times" in problems and "seq 10 written twice" in problems
    assert "seq hole 10 -> 13" in problems and "steps back 13 -> 12" in problems
    assert "starts at level 2" in problems


def test_audit_accepts_a_hole_inside_a_gap_of_that_ticker(tmp_path: Path) -> None:
    rows = [*book_rows("BID", 10, 1), *book_rows("BID", 14, 9)]
    gap = '2026-03-02T10:00:02+07:00,2026-03-02T10:00:08+07:00,disconnect,"BBCA,TLKM",i-1,'
    other = '2026-03-02T10:00:02+07:00,2026-03-02T10:00:08+07:00,disconnect,"TLKM",i-1,'
    findings = audit(write_day(tmp_path / "a", rows, (gap,)))
    assert (findings.problems, findings.holes_in_gaps, findings.gaps) == ([], 1, 1)
    assert audit(write_day(tmp_path / "b", rows, (other,))).problems != []


# ---- the engine ------------------------------------------------------------------------------


def engine_missing() -> str | None:
    """Why the compose test cannot run here, or None if a Docker engine answers."""
    hint = (
        f"prepare one with {STANDINS} (as .ci/run does)"
        if STANDINS.exists()
        else f"{STANDINS} is absent; install and start Docker to run this test"
    )
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed: {hint}"
    try:
        answer = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return f"`docker info` did not answer within 30 s: {hint}"
    if answer.returncode != 0:
        return f"no Docker engine answers `docker info`: {hint}"
    return None


class Compose:
    """The `docker-compose` v1 CLI on the repository's compose file, as one unique project."""

    def __init__(self, work: Path) -> None:
        self.project = f"obpipetest{uuid.uuid4().hex[:10]}"
        # A user's .env, for the demo: the simulator as the feed, a few tickers, and any free
        # loopback port for the status page (5151 may be taken on this machine).
        self.env_file = work / "demo.env"
        self.env_file.write_text(
            f"TICKERS={','.join(TICKERS)}\n"
            "STOCKBIT_WS_URL=ws://simulator:8765/ws\n"
            "STOCKBIT_API_URL=http://simulator:8765\n"
            "WEB_HOST_PORT=0\n"
        )
        self.log = work / "compose.log"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k in KEEP_ENV or k.lower() in KEEP_ENV_LOWER or k.startswith("DOCKER_")
        }

    def __call__(
        self, *args: str, timeout: float = 600, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [
            "docker-compose",
            *("-f", str(ROOT / "docker-compose.yml")),
            *("--env-file", str(self.env_file), "-p", self.project, "--profile", "demo"),
            *args,
        ]
        started = time.monotonic()
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=stdin,
        )
        with self.log.open("a") as log:
            took = time.monotonic() - started
            log.write(f"$ docker-compose {' '.join(args)}  -> {done.returncode} in {took:.0f} s\n")
            log.write(done.stdout + done.stderr)
        if check and done.returncode != 0:
            raise AssertionError(
                f"docker-compose {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        return done

    def containers(self) -> list[dict[str, Any]]:
        """`docker inspect` of every container of the project, running or not."""
        ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}")
        if not ids.split():
            return []
        found: list[dict[str, Any]] = json.loads(docker("inspect", *ids.split()))
        return found

    def web_port(self) -> int:
        """The loopback port docker-proxy publishes the status page on."""
        address = self("port", "web", "5151").stdout.strip()
        return int(address.rsplit(":", 1)[1])


def docker(*args: str) -> str:
    """Run one `docker` command and return its output."""
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout


def image_id(name: str) -> str | None:
    """The id of the image tagged ``name``, or None."""
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def service(container: dict[str, Any]) -> str:
    name: str = container["Config"]["Labels"]["com.docker.compose.service"]
    return name


def describe(containers: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{c['Name'].lstrip('/')}={c['State']['Status']}"
        f"/{c['State'].get('Health', {}).get('Status', '-')}"
        f"/exit {c['State']['ExitCode']}/restarts {c['RestartCount']}"
        for c in containers
    )


def wait_until(what: str, ready: Callable[[], bool], timeout: float = 180) -> None:
    """Poll ``ready`` once a second until it holds; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(1)


def wait_healthy(compose: Compose, expected: dict[str, int]) -> None:
    """Wait for exactly ``expected`` containers per service, every one healthy; fail at once
    if one turns unhealthy, stops or restarts."""
    state = ""

    def ready() -> bool:
        nonlocal state
        containers = compose.containers()
        state = describe(containers)
        for c in containers:
            health = c["State"].get("Health", {}).get("Status")
            assert health is not None, f"{c['Name']} has no healthcheck"
            assert c["State"]["Status"] == "running" and health != "unhealthy", state
            assert c["RestartCount"] == 0, state
        counts = Counter(service(c) for c in containers)
        healthy = all(c["State"]["Health"]["Status"] == "healthy" for c in containers)
        return dict(counts) == expected and healthy

    try:
        wait_until(f"{expected} healthy", ready)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {state}") from None


def api_status(port: int) -> dict[str, Any]:
    """The status page's JSON document, through the published port."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as answer:
        document: dict[str, Any] = json.load(answer)
    return document


@pytest.mark.docker
@pytest.mark.timeout(1800)  # the first build on a clean engine takes several minutes
def test_demo_profile_scales_and_stops_cleanly(tmp_path: Path) -> None:
    reason = engine_missing()
    if reason is not None:
        pytest.skip(reason)
    compose = Compose(tmp_path)
    phases: dict[str, float] = {}
    started = time.monotonic()

    def phase(name: str) -> None:
        phases[name] = time.monotonic() - started - sum(phases.values())

    try:
        # One image serves every service: building it once builds it for all of them.
        services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
        image: str = services["ingestor"]["image"]
        previous = image_id(image)
        compose("build", "ingestor", timeout=1500)
        if previous not in (None, image_id(image)):
            # The build it replaces: on a vfs engine (CI's) each one holds gigabytes. It may
            # still serve containers of another project, then it stays.
            subprocess.run(
                ["docker", "rmi", previous], capture_output=True, timeout=120, check=False
            )
        phase("build")
        pair = compose(
            "run", "--rm", "-T", "simulator", "simulate", "--print-token", "--pair"
        ).stdout
        assert '"refresh"' in pair, f"not a token pair: {pair[:200]!r}"

        compose("up", "-d")
        # The ingestor waits in auth_failed until the pair is in the tokens volume.
        stored = compose("run", "--rm", "-T", "ingestor", "token", "set", stdin=pair).stdout
        assert "stored in /tokens/stockbit_token" in stored, stored
        wait_healthy(
            compose, {"redis": 1, "simulator": 1, "ingestor": 1, "writer": 1, "web": 1, "jobs": 1}
        )
        port = compose.web_port()
        status = api_status(port)

        def writing() -> bool:
            nonlocal status
            status = api_status(port)
            rows: int = sum(w["rows"] for w in status["writers"])
            return rows > 0

        wait_until("the first rows on disk", writing)
        assert sorted(status["desired_tickers"]) == sorted(TICKERS)
        phase("up")

        compose("up", "-d", "--scale", "ingestor=2", "--scale", "writer=3")
        wait_healthy(
            compose, {"redis": 1, "simulator": 1, "ingestor": 2, "writer": 3, "web": 1, "jobs": 1}
        )
        before: int = sum(w["rows"] for w in api_status(port)["writers"])

        def scaled() -> bool:
            nonlocal status
            status = api_status(port)
            ingestors, writers = status["ingestors"], status["writers"]
            return (
                len(ingestors) == 2
                and all(i["state"] == "connected" and i["frames"] > 0 for i in ingestors)
                and sorted(t for i in ingestors for t in i["tickers"]) == sorted(TICKERS)
                and len(writers) == 3
                and all(w["partitions"] for w in writers)
                and sum(w["rows"] for w in writers) > before + 5_000
            )

        wait_until("two ingestors sharing the tickers and three writers writing", scaled)
        phase("scale")

        compose("stop")
        phase("stop")
        containers = compose.containers()
        assert len(containers) == 9, describe(containers)
        for c in containers:
            assert c["State"]["Status"] == "exited", describe(containers)
            assert (c["State"]["ExitCode"], c["RestartCount"]) == (0, 0), describe(containers)
            assert not c["State"]["OOMKilled"], describe(containers)

        writer = next(c for c in containers if service(c) == "writer")
        docker("cp", f"{writer['Id']}:/data", str(tmp_path / "data"))
        findings = audit(tmp_path / "data")
        print("phases: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items()))
        print(
            f"audit: {findings.book_files} book files, {findings.rows} rows, "
            f"{findings.snapshots} snapshots, {findings.trades} trades, {findings.gaps} gaps, "
            f"{findings.holes_in_gaps} seq holes inside recorded gaps, "
            f"{sum(w.get('duplicates_dropped', 0) for w in status['writers'])} duplicates "
            "dropped by the writers (hand-over overlap)"
        )
        assert findings.problems == [], "\n".join(findings.problems)
        assert findings.tickers == set(TICKERS)
        assert findings.snapshots > 100 and findings.trade_files > 0
    except BaseException:
        compose("logs", "--no-color", "--timestamps", check=False)
        print(f"compose log: {compose.log}\n" + compose.log.read_text()[-20_000:])
        raise
    finally:
        compose("down", "-v", "--remove-orphans", "--timeout", "60", check=False)
