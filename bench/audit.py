"""The audit of a run: the simulator's journal (what was sent) against the CSV files (what landed).

Every book snapshot the simulator sent is looked up in the order-book files by its identity
(code, side, seq, exchange time). A snapshot on disk twice is *duplicated*; one that is not on
disk is *missing* unless a recorded gap for its ticker covers its time (the feed cannot be
replayed, so an outage the pipeline recorded is the honest outcome — an unrecorded loss is the
failure). Rows must match the sent body level by level, in order.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from pipeline.layout import GAPS, ORDERBOOK, Layout, code_of
from stockbit.book import parse_body
from stockbit.timestamps import parse_iso, wib_iso

Snapshot = tuple[str, str, int, str]
"""(code, side, seq, exchange time normalised to WIB microseconds)."""

GAP_SLACK = timedelta(seconds=2)


@dataclass
class Audit:
    """Figures of one audit; ``ok`` when nothing is missing, doubled, torn or mismatched."""

    frames: int = 0
    rows: int = 0
    snapshots_on_disk: int = 0
    duplicated: int = 0
    missing: int = 0
    covered_by_gaps: int = 0
    mismatched: int = 0
    torn_lines: int = 0
    out_of_order: int = 0
    unknown: int = 0
    gaps: int = 0
    gap_causes: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every sent snapshot is on disk once or inside a recorded gap."""
        return not (
            self.duplicated or self.missing or self.mismatched or self.torn_lines or self.unknown
        )

    def line(self, **extra: int) -> str:
        """The one line of figures the soak prints."""
        figures = {
            "frames": self.frames,
            "rows": self.rows,
            **extra,
            "gaps": self.gaps,
            **{f"gaps_{cause}": n for cause, n in sorted(self.gap_causes.items())},
            "covered": self.covered_by_gaps,
            "missing": self.missing,
            "duplicated": self.duplicated,
            "mismatched": self.mismatched,
            "torn": self.torn_lines,
            "out_of_order": self.out_of_order,
        }
        return " ".join(f"{k}={v}" for k, v in figures.items())


def sent_books(journal: Path) -> dict[Snapshot, str]:
    """Every book snapshot the simulator delivered (malformed replacements excluded)."""
    sent: dict[Snapshot, str] = {}
    with journal.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break  # the journal's own last line may be torn if the simulator was killed
            item = json.loads(line)
            if item.get("kind") != "book":
                continue
            moment = wib_iso(parse_iso(item["time"]))
            sent[(item["code"], item["side"], int(item["seq"]), moment)] = item["body"]
    return sent


def gap_windows(data_dir: Path) -> list[tuple[datetime, datetime, set[str], str]]:
    """(start, end, tickers, cause) of every recorded gap (empty tickers = all)."""
    windows = []
    for path in sorted(Layout(data_dir).folder(GAPS).glob("*.csv")):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                tickers = {t for t in row.get("tickers", "").split(",") if t}
                windows.append(
                    (parse_iso(row["start"]), parse_iso(row["end"]), tickers, row["cause"])
                )
    return windows


def run(journal: Path, data_dir: Path) -> Audit:
    """Audit ``data_dir``'s order-book files against the simulator's ``journal``."""
    audit = Audit()
    sent = sent_books(journal)
    audit.frames = len(sent)
    seen: dict[Snapshot, int] = defaultdict(int)
    for path in sorted(Layout(data_dir).folder(ORDERBOOK).glob("*.csv")):
        code = code_of(path)
        _read_file(path, code, sent, seen, audit)
    audit.snapshots_on_disk = len(seen)
    audit.duplicated = sum(count - 1 for count in seen.values() if count > 1)
    windows = gap_windows(data_dir)
    audit.gaps = len(windows)
    for *_span, cause in windows:
        audit.gap_causes[cause] = audit.gap_causes.get(cause, 0) + 1
    for key in sent.keys() - seen.keys():
        moment = parse_iso(key[3])
        if any(
            (not tickers or key[0] in tickers) and start - GAP_SLACK <= moment <= end + GAP_SLACK
            for start, end, tickers, _cause in windows
        ):
            audit.covered_by_gaps += 1
        else:
            audit.missing += 1
            if len(audit.examples) < 5:
                audit.examples.append(f"missing {key}")
    return audit


def _read_file(
    path: Path, code: str, sent: dict[Snapshot, str], seen: dict[Snapshot, int], audit: Audit
) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        audit.torn_lines += 1
    lines = data.decode().splitlines()[1:]
    groups: list[tuple[Snapshot, list[list[str]]]] = []
    for line in lines:
        row = line.split(",")
        if len(row) != 9:
            audit.torn_lines += 1
            continue
        audit.rows += 1
        key = (code, row[4], int(row[7]), row[0])
        if groups and groups[-1][0] == key and int(row[5]) == len(groups[-1][1]) + 1:
            groups[-1][1].append(row)
        else:
            groups.append((key, [row]))
    last_seq: dict[str, int] = {}
    for key, rows in groups:
        seen[key] += 1
        if key[2] < last_seq.get(key[1], -1):
            audit.out_of_order += 1
        last_seq[key[1]] = key[2]
        body = sent.get(key)
        if body is None:
            audit.unknown += 1
            if len(audit.examples) < 5:
                audit.examples.append(f"on disk but never sent {key}")
            continue
        levels = parse_body(body).levels
        expected = [
            [str(lv.price), _lots(lv.shares), str(lv.price * lv.shares), str(lv.orders)]
            for lv in levels
        ]
        actual = [[r[1], r[2], r[3], r[6]] for r in rows]
        if expected != actual:
            audit.mismatched += 1
            if len(audit.examples) < 5:
                audit.examples.append(f"rows differ from the sent body {key}")


def _lots(shares: int) -> str:
    whole, rest = divmod(shares, 100)
    return str(whole) if not rest else f"{shares / 100:g}"
