"""``make soak``: the full pipeline under injected faults, then an audit against the feed's journal.

Faults, for the whole run: the feed drops every connection every few seconds, sends a
malformed frame in every 20 (5 %), and expires each token 15 s after its first use (the
soak then replaces the token file, as an operator would); writers are SIGKILLed at random and
restarted; ingestors too, with ``REPLICATION=1`` (so whatever a killed ingestor held in
flight is lost, and only the continuity rule's gaps can account for it); Redis is restarted
(append-only file on); the data disk fills up and is freed again.

Afterwards every process must be back (ingestors connected, writers live with no lag, every
partition owned), and the audit (``bench.audit``) must find every snapshot the simulator sent
in the CSV files exactly once, unless a recorded gap of its ticker covers it (``missing=0``).
One line of figures is printed.

    python -m bench.soak --duration 300
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import audit
from bench.stack import Stack, wait_for
from pipeline.status import AUTH_FAILED

DISK_SIZE = 512 * 1024 * 1024


@dataclass
class Figures:
    """What the soak did."""

    kills: int = 0
    ingestor_kills: int = 0
    restarts: int = 0
    redis_restarts: int = 0
    token_replacements: int = 0
    disk_full: int = 0
    feed_drops: int = 0
    notes: list[str] = field(default_factory=list)


class Disk:
    """A small tmpfs for DATA_DIR that can be filled to the brim and freed (needs root)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.mounted = self._mount("mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs")

    def _mount(self, *args: str) -> bool:
        done = subprocess.run([*args, str(self.path)], capture_output=True, check=False)
        return done.returncode == 0

    def fill(self) -> bool:
        """Shrink the file system to just above what it holds: the next writes hit ENOSPC."""
        stats = os.statvfs(self.path)
        used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
        return self._mount("mount", "-o", f"remount,size={used + 64 * 1024}")

    def free(self) -> None:
        """Give the space back."""
        self._mount("mount", "-o", f"remount,size={DISK_SIZE}")

    def release(self) -> None:
        """Unmount (after the audit has read the files)."""
        if self.mounted:
            self._mount("umount", "-l")


def run(duration: float, workdir: Path, seed: int = 7) -> tuple[audit.Audit, Figures, bool]:
    """Run the soak; return the audit, what was injected, and whether every process came back."""
    rng = random.Random(seed)
    figures = Figures()
    disk = Disk(workdir / "disk")
    if not disk.mounted:
        figures.notes.append("disk-full fault skipped: cannot mount a tmpfs (needs root)")
    stack = Stack(
        workdir,
        ingestors=2,
        writers=3,
        replication=1,
        data_dir=disk.path / "data",
        sim_args=(
            "--rate", "4", "--drop-every", "6", "--malformed-every", "20",
            "--expire-token-after", "15", "--ping-window", "10",
        ),
    )  # fmt: skip
    stack.start()
    writers = [n for n in stack.children if n.startswith("writer")]
    ingestors = [n for n in stack.children if n.startswith("ingestor")]
    pending: list[tuple[float, str]] = []  # (when, name) restarts due
    start = time.monotonic()
    next_kill = start + rng.uniform(2, 5)
    next_ingestor_kill = start + rng.uniform(4, 8)
    redis_at = start + duration * 0.6 if duration >= 30 else float("inf")
    disk_at = start + duration * 0.75 if disk.mounted else float("inf")
    disk_free_at = float("inf")
    try:
        while (now := time.monotonic()) < start + duration:
            if now >= next_kill:
                victim = rng.choice(writers)
                if stack.children[victim].alive():
                    stack.kill(victim)
                    figures.kills += 1
                    pending.append((now + rng.uniform(0.3, 2.0), victim))
                next_kill = now + rng.uniform(3, 7)
            if now >= next_ingestor_kill:
                victim = rng.choice(ingestors)
                if stack.children[victim].alive() and now < start + duration - 3:
                    stack.kill(victim)
                    figures.kills += 1
                    figures.ingestor_kills += 1
                    pending.append((now + rng.uniform(0.5, 3.0), victim))
                next_ingestor_kill = now + rng.uniform(6, 12)
            if now >= redis_at:
                redis_at = float("inf")
                stack.restart_redis()
                figures.redis_restarts += 1
            if now >= disk_at:
                disk_at = float("inf")
                if disk.fill():
                    figures.disk_full += 1
                    disk_free_at = now + 3
            if now >= disk_free_at:
                disk_free_at = float("inf")
                disk.free()
            for due in [p for p in pending if p[0] <= now]:
                pending.remove(due)
                stack.restart(due[1])
                figures.restarts += 1
            if any(s.state == AUTH_FAILED for s in stack.live()["ingestors"]):
                stack.replace_token()
                figures.token_replacements += 1
                time.sleep(0.5)
            time.sleep(0.1)
        disk.free()
        for _when, name in pending:
            stack.restart(name)
            figures.restarts += 1
        recovered = _settle(stack)
    finally:
        codes = stack.stop()
    bad_exits = {name: code for name, code in codes.items() if code not in (0, None)}
    if bad_exits:
        figures.notes.append(f"non-zero exit codes at the end: {bad_exits}")
    assert stack.sim is not None
    result = audit.run(stack.sim.journal_path, stack.data_dir)
    figures.feed_drops = _feed_drops(stack.sim.log_path)
    disk.release()
    return result, figures, recovered and not bad_exits


def _feed_drops(log: Path) -> int:
    """Connections the simulator aborted on purpose (its closing statistics line)."""
    match = re.findall(r"(\d+) fault drops", log.read_text(errors="replace"))
    return int(match[-1]) if match else 0


def _settle(stack: Stack) -> bool:
    # Keep replacing expired tokens while waiting: the feed keeps expiring them.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(s.state == AUTH_FAILED for s in stack.live()["ingestors"]):
            stack.replace_token()
        try:
            wait_for(stack.settled, 2, "the pipeline to settle")
            # Every takeover judged, so the gaps of the last ingestor kills are recorded, and
            # every gap record copied to disk.
            wait_for(stack.custody_settled, 2, "every takeover judged")
            wait_for(stack.gaps_copied, 2, "the gap records on disk")
            return True
        except TimeoutError:
            continue
    return False


def main(argv: list[str] | None = None) -> int:
    """Run the soak from the command line and print the audit line."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=300, help="seconds of faults (300)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the fault schedule")
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: temporary)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="obpipe-soak-") as tmp:
        workdir = args.keep or Path(tmp)
        result, figures, recovered = run(args.duration, workdir, args.seed)
    line = result.line(
        kills=figures.kills,
        ingestor_kills=figures.ingestor_kills,
        restarts=figures.restarts,
        redis_restarts=figures.redis_restarts,
        token_replacements=figures.token_replacements,
        disk_full=figures.disk_full,
        feed_drops=figures.feed_drops,
    )
    print(f"soak: {line} recovered={'yes' if recovered else 'NO'}")
    for note in figures.notes + result.examples:
        print(f"soak: {note}", file=sys.stderr)
    return 0 if result.ok and recovered else 1


if __name__ == "__main__":
    raise SystemExit(main())
