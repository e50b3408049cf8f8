"""``obpipe replay DAY``: rebuild a day's CSV files from its raw frame archive.

The raw archive (:mod:`ingestor.archive`, format :mod:`pipeline.rawfile`) holds every frame the
ingestors received on a Jakarta day, with its receive time. Replay runs them through exactly
the code the live pipeline runs, so a decoder fix can be applied to days already captured:

1. each ingestor's frames, in its own arrival order, through its own
   :class:`ingestor.protocol.FeedProtocol` (the ingestor's codec and entry packer: the same
   ``XADD`` command it would send to Redis, fast path and all);
2. the stream-entry fields of those commands through :func:`pipeline.schema.render` and, per
   file, the writer's duplicate window (:class:`pipeline.schema.Recent`), so replicas and
   reconnect backfills are dropped as the writer drops them;
3. with several ingestors, their streams interleaved by receive time (each one's order kept),
   as entries interleave in a partition stream.

With nothing lost on the way, the files equal the writer's byte for byte — ``received_at``
included, since the archive keeps the very receive time the entries carried. (Only with
``REPLICATION`` > 1 can a row differ: the writer keeps whichever replica's entry reached Redis
first, replay the one received first, and the two replicas' receive times differ by
microseconds.)

Files go to ``$DATA_DIR/replay/DAY/<kind>/`` (or ``--out``), never over the originals nor
where the manifest or the web look for a day's files; each is compared with its original.
Replay also proves what it cannot rebuild: silences longer than ``hole_s`` in the archive
(the feed's pongs arrive every ``PING_INTERVAL_S`` while connected, so a connected ingestor
is never that quiet), the trading hours before the first or after the last frame
(:mod:`pipeline.calendar`), frames the archive itself counted as lost (``LOSS`` records) and
files torn by a crash. Each hole is matched against the gaps file: a hole the capture
recorded as a gap is one the CSVs share; any other is a warning. Everything goes into
``replay-report.json`` beside the files.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import heapq
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ingestor.entries import Entry, EntryPacker
from ingestor.protocol import BadFrame, FeedProtocol
from pipeline import rawfile
from pipeline.calendar import TradingCalendar
from pipeline.days import WIB, check_day
from pipeline.keys import Keys
from pipeline.layout import (
    CSV,
    GZ,
    REPLAY_REPORT,
    TICKER_KINDS,
    Layout,
    day_of_file,
    kind_of,
)
from pipeline.schema import HEADERS, WINDOWS, EntryError, Recent, render

HOLE_S = 30.0
"""Default: an archive silent this long while it should hear the feed is a hole. The feed
answers the ingestor's ping every ``PING_INTERVAL_S`` (10 s) and a connection silent for
``DEAD_AFTER_S`` (30 s) is dropped, so a connected ingestor is never quieter than this."""
FLUSH_BYTES = 32 * 1024 * 1024
"""Rebuilt text held in memory before it is appended to the files (a whole-market day has
thousands of files: they cannot all stay open)."""
_MICROS = 1_000_000
SILENCE = "silence"
BEFORE_FIRST = "before_first_frame"
AFTER_LAST = "after_last_frame"


class ReplayError(Exception):
    """Nothing to replay (no raw files), or an output place that would overwrite originals."""


@dataclass
class _Output:
    """One rebuilt file: its duplicate window, pending text, running hash and counts."""

    relpath: str
    dedup: Recent | None
    pending: list[str] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    digest: Any = field(default_factory=hashlib.sha256)


@dataclass
class _Stream:
    """One ingestor's part of the day: its protocol, files, silences and losses."""

    ingestor: str
    protocol: FeedProtocol
    files: list[rawfile.RawFile] = field(default_factory=list)
    frames: int = 0
    first_us: int | None = None
    last_us: int | None = None
    silences: list[tuple[int, int]] = field(default_factory=list)
    losses: list[dict[str, Any]] = field(default_factory=list)


def entry_fields(command: bytes) -> list[bytes]:
    """The ``[name, value, ...]`` arguments of an ``XADD`` command in RESP: what Redis stores
    and the writer reads back. ``ValueError`` if ``command`` is not such a command."""
    if command[:1] != b"*":
        raise ValueError("not a RESP array")
    pos = command.index(b"\r\n")
    count = int(command[1:pos])
    pos += 2
    args: list[bytes] = []
    for _ in range(count):
        end = command.index(b"\r\n", pos)
        if command[pos : pos + 1] != b"$":
            raise ValueError("not a bulk string")
        start = end + 2
        stop = start + int(command[pos + 1 : end])
        args.append(command[start:stop])
        pos = stop + 2
    if len(args) < 3 or args[0].upper() != b"XADD":
        raise ValueError("not an XADD command")
    # XADD key [MAXLEN|MINID [~|=] n] * field value ...: the id is the first "*".
    return args[args.index(b"*", 2) + 1 :]


def _micros(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=WIB)
    return int(moment.timestamp() * _MICROS)


def _read_gaps(layout: Layout, day: str) -> list[dict[str, Any]]:
    path = layout.gaps(day)
    packed = path.with_name(path.name + GZ)
    try:
        if path.is_file():
            text = path.read_text()
        elif packed.is_file():
            text = gzip.decompress(packed.read_bytes()).decode()
        else:
            return []
    except OSError:
        return []
    gaps = []
    for row in csv.DictReader(io.StringIO(text)):
        try:
            start = _micros(row["start"])
            end = _micros(row["end"]) if row.get("end") else start + 86_400 * _MICROS
        except (KeyError, ValueError):
            continue
        gaps.append({**row, "start": start, "end": end})
    return gaps


def _trading_spans(calendar: TradingCalendar, day: str) -> list[tuple[int, int]]:
    """The day's open phases (pre-opening to post-trading, lunch excluded) as µs spans."""
    spans: list[tuple[int, int]] = []
    for span in calendar.phases(day):
        if not span.phase.open:
            continue
        start, end = _micros(span.start.isoformat()), _micros(span.end.isoformat())
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def _covered(span: tuple[int, int], pieces: list[tuple[int, int]]) -> int:
    """How many µs of ``span`` the union of ``pieces`` covers."""
    start, end = span
    total = 0
    cursor = start
    for low, high in sorted(pieces):
        a, b = max(low, cursor), min(high, end)
        if b > a:
            total += b - a
            cursor = b
    return total


def _subtract(span: tuple[int, int], cuts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``span`` minus the union of ``cuts``."""
    left = [span]
    for a, b in sorted(cuts):
        out = []
        for s, e in left:
            if b <= s or a >= e:
                out.append((s, e))
                continue
            if a > s:
                out.append((s, a))
            if b < e:
                out.append((b, e))
        left = out
    return left


class Replay:
    """One day's rebuild (:func:`replay_day` runs it)."""

    def __init__(
        self,
        day: str,
        data_dir: Path,
        out: Path,
        *,
        hole_s: float = HOLE_S,
        calendar: TradingCalendar | None = None,
        now: datetime | None = None,
    ) -> None:
        self.day = check_day(day)
        self.now_us = int((now or datetime.now(WIB)).timestamp() * _MICROS)
        """Trading hours after this are not holes yet (a replay of today, mid-day)."""
        self.layout = Layout(data_dir)
        self.out = out
        self.hole_us = int(hole_s * _MICROS)
        self.calendar = calendar or TradingCalendar()
        self.keys = Keys()
        self.outputs: dict[str, _Output] = {}
        self.pending_bytes = 0
        self.streams: dict[str, _Stream] = {}
        self.counts: Counter[str] = Counter()
        self.union_silences: list[tuple[int, int]] = []
        self.first_us: int | None = None
        self.last_us: int | None = None

    # ---- reading ---------------------------------------------------------------------------

    def _records(
        self, stream: _Stream, paths: list[Path]
    ) -> Iterator[tuple[int, str, bytes | str, bytes]]:
        """One ingestor's frames in its own order: (µs, ingestor, frame, receive time text)."""
        stamps = rawfile.Stamps()
        for path in paths:
            info = rawfile.RawFile(path)
            stream.files.append(info)
            for record in rawfile.read(path, info):
                if record.kind == rawfile.LOSS:
                    stream.losses.append(record.json())
                elif record.kind in rawfile.FRAMES:
                    yield (
                        stamps.micros(record.received),
                        stream.ingestor,
                        record.frame,
                        record.received,
                    )

    def run(self) -> dict[str, Any]:
        """Rebuild the files and return the report (also written beside them)."""
        found = self.layout.raw_files(self.day)
        if not found:
            raise ReplayError(
                f"no raw files for {self.day} in {self.layout.raw_dir(self.day)} "
                "(RAW_ARCHIVE off that day, or pruned by RAW_KEEP_DAYS)"
            )
        self._prepare_out()
        by_ingestor: dict[str, list[Path]] = {}
        for ingestor, _n, path in found:
            by_ingestor.setdefault(ingestor, []).append(path)
        sources = []
        for ingestor, paths in by_ingestor.items():
            packer = EntryPacker(self.keys, ingestor, 1_000_000)
            protocol = FeedProtocol(packer, ping_interval_s=10.0, dead_after_s=30.0)
            stream = self.streams[ingestor] = _Stream(ingestor, protocol)
            sources.append(self._records(stream, paths))
        # heapq.merge keeps each ingestor's own order and interleaves them by receive time,
        # as their entries interleave in a partition stream.
        for time_us, ingestor, frame, received in heapq.merge(*sources, key=lambda i: i[0]):
            self._frame(self.streams[ingestor], time_us, frame, received)
        self._flush()
        return self._report()

    def _frame(self, stream: _Stream, time_us: int, frame: bytes | str, received: bytes) -> None:
        hole = self.hole_us
        if stream.last_us is not None and time_us - stream.last_us > hole:
            stream.silences.append((stream.last_us, time_us))
        if self.last_us is not None and time_us - self.last_us > hole:
            self.union_silences.append((self.last_us, time_us))
        if stream.first_us is None:
            stream.first_us = time_us
        if self.first_us is None:
            self.first_us = time_us
        stream.last_us = max(time_us, stream.last_us or time_us)
        self.last_us = max(time_us, self.last_us or time_us)
        stream.frames += 1
        self.counts["frames"] += 1
        # The receive time as the entry carried it: received_at comes out byte for byte.
        for event in stream.protocol.receive(frame, 0.0, received):
            if type(event) is Entry:
                self._entry(event)
            elif isinstance(event, BadFrame):
                self.counts["bad_frames"] += 1

    def _entry(self, entry: Entry) -> None:
        self.counts["entries"] += 1
        try:
            rendered = render(entry_fields(entry.command))
        except (EntryError, ValueError):
            self.counts["dead_entries"] += 1
            return
        output = self.outputs.get(rendered.path)
        if output is None:
            kind = kind_of(rendered.path)
            window = WINDOWS.get(kind)
            output = _Output(rendered.path, None if window is None else Recent(window))
            output.pending.append(HEADERS[kind])
            self.outputs[rendered.path] = output
        dedup = output.dedup
        if rendered.key is not None and dedup is not None and not dedup.add(rendered.key):
            self.counts["duplicates"] += 1
            return
        output.pending.append(rendered.text)
        output.rows += rendered.rows
        self.pending_bytes += len(rendered.text)
        if self.pending_bytes >= FLUSH_BYTES:
            self._flush()

    # ---- writing ---------------------------------------------------------------------------

    def _prepare_out(self) -> None:
        data = self.layout.root.resolve()
        out = self.out.resolve()
        if out == data:
            raise ReplayError(f"--out {self.out} is DATA_DIR itself: that would overwrite the day")
        for kind in TICKER_KINDS:
            folder = self.out / kind
            if folder.is_dir():
                # A previous replay of this day: start afresh (only its own kind of file).
                for old in folder.glob(f"*{CSV}"):
                    old.unlink()
        (self.out / REPLAY_REPORT).unlink(missing_ok=True)

    def _flush(self) -> None:
        for output in self.outputs.values():
            if not output.pending:
                continue
            data = "".join(output.pending).encode()
            output.pending.clear()
            path = self.out / output.relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as handle:
                handle.write(data)
            output.digest.update(data)
            output.bytes += len(data)
        self.pending_bytes = 0

    # ---- the report ------------------------------------------------------------------------

    def _original(self, relpath: str) -> str:
        path = self.layout.path(relpath)
        packed = path.with_name(path.name + GZ)
        try:
            if path.is_file():
                content = path.read_bytes()
            elif packed.is_file():
                content = gzip.decompress(packed.read_bytes())
            else:
                return "missing"
        except (OSError, EOFError, gzip.BadGzipFile):
            return "unreadable"
        return hashlib.sha256(content).hexdigest()

    def _holes(self, gaps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        hole = self.hole_us
        # (ingestor or "*" for all of them, where, span): silences inside the archive, and the
        # trading hours (up to now) before its first or after its last frame.
        spans = [("*", SILENCE, s) for s in self.union_silences]
        if self.first_us is not None and self.last_us is not None:
            for start, trading_end in _trading_spans(self.calendar, self.day):
                end = min(trading_end, self.now_us)
                if self.first_us - start > hole and end > start:
                    spans.append(("*", BEFORE_FIRST, (start, min(self.first_us, end))))
                if end - self.last_us > hole:
                    spans.append(("*", AFTER_LAST, (max(self.last_us, start), end)))
        union = [span for _, _, span in spans]
        for stream in self.streams.values():
            for silence in stream.silences:
                for part in _subtract(silence, union):
                    if part[1] - part[0] > hole:
                        spans.append((stream.ingestor, SILENCE, part))
        holes = []
        for ingestor, where, (start, end) in sorted(spans, key=lambda item: item[2]):
            mine = [g for g in gaps if ingestor in ("*", g.get("ingestor"))]
            recorded = [(g["start"] - hole, g["end"] + hole) for g in mine]
            losses = [
                (int(loss["first_us"]), int(loss["last_us"]))
                for stream in self.streams.values()
                if ingestor in ("*", stream.ingestor)
                for loss in stream.losses
            ]
            length = end - start
            lost = _covered((start, end), losses)
            if lost:
                cause = "archive_loss"
            elif length - _covered((start, end), recorded) <= hole:
                cause = "feed_gap"
            else:
                cause = "unexplained"
            touching = [g for g in mine if g["start"] < end and g["end"] > start]
            causes = sorted({str(g.get("cause") or "") for g in touching})
            holes.append(
                {
                    "start": rawfile.iso(start),
                    "end": rawfile.iso(end),
                    "seconds": round(length / _MICROS, 1),
                    "ingestor": ingestor,
                    "where": where,
                    "cause": cause,
                    "recorded_gaps": [c for c in causes if c],
                }
            )
        return holes

    def _report(self) -> dict[str, Any]:
        warnings: list[str] = []
        raw_files = []
        for stream in self.streams.values():
            for info in stream.files:
                problem = info.problem
                raw_files.append(
                    {
                        "path": str(info.path.relative_to(self.layout.root)),
                        "ingestor": stream.ingestor,
                        "records": info.records,
                        "frames": info.frames,
                        "complete": info.complete,
                        "torn_bytes": info.torn_bytes,
                        "problem": problem,
                    }
                )
                if info.error or info.torn_bytes:
                    warnings.append(f"{info.path.name}: {problem}")
                elif not info.complete:
                    warnings.append(
                        f"{info.path.name}: not closed cleanly (a crash or kill): the frames "
                        "of its last second may be missing"
                    )
        losses = []
        for stream in self.streams.values():
            for loss in stream.losses:
                item: dict[str, Any] = {
                    "ingestor": stream.ingestor,
                    "frames": loss.get("frames"),
                    "first": rawfile.iso(int(loss["first_us"])),
                    "last": rawfile.iso(int(loss["last_us"])),
                    "reason": loss.get("reason"),
                }
                losses.append(item)
                warnings.append(
                    f"the archive of {stream.ingestor} lost {item['frames']} frame(s) from "
                    f"{item['first'][11:19]} to {item['last'][11:19]} ({item['reason']})"
                )
        holes = self._holes(_read_gaps(self.layout, self.day))
        for hole in holes:
            if hole["cause"] == "feed_gap":
                continue
            who = "any ingestor" if hole["ingestor"] == "*" else hole["ingestor"]
            why = {
                BEFORE_FIRST: "trading hours before the first raw frame",
                AFTER_LAST: "trading hours after the last raw frame",
            }.get(hole["where"], f"no raw frame from {who}")
            warnings.append(
                f"raw coverage hole, {hole['start'][11:19]}–{hole['end'][11:19]} "
                f"({hole['seconds']:,.0f} s): {why} ({hole['cause']}); "
                "rows of that span cannot be rebuilt"
            )
        files = []
        other_days: Counter[str] = Counter()
        for relpath in sorted(self.outputs):
            output = self.outputs[relpath]
            sha = output.digest.hexdigest()
            original = self._original(relpath)
            files.append(
                {
                    "path": relpath,
                    "rows": output.rows,
                    "bytes": output.bytes,
                    "sha256": sha,
                    "original": original
                    if original in ("missing", "unreadable")
                    else "equal"
                    if original == sha
                    else "differs",
                }
            )
            if day_of_file(relpath) != self.day:
                other_days[day_of_file(relpath)] += output.rows
        rebuilt = set(self.outputs)
        only_original = [
            self.layout.relative(kind, path)
            for kind, path in self.layout.day_files(self.day)
            if kind in TICKER_KINDS and self.layout.relative(kind, path) not in rebuilt
        ]
        if other_days:
            warnings.append(
                "frames received on "
                f"{self.day} carry other exchange days ({', '.join(sorted(other_days))}): their "
                "files here are partial; replay those days too"
            )
        report = {
            "day": self.day,
            "generated_at": datetime.now(WIB).isoformat(timespec="seconds"),
            "out": str(self.out),
            "ok": not warnings,
            "warnings": warnings,
            "hole_s": self.hole_us / _MICROS,
            "first_frame_at": rawfile.iso(self.first_us) if self.first_us else None,
            "last_frame_at": rawfile.iso(self.last_us) if self.last_us else None,
            "frames": self.counts["frames"],
            "entries": self.counts["entries"],
            "bad_frames": self.counts["bad_frames"],
            "dead_entries": self.counts["dead_entries"],
            "duplicates_dropped": self.counts["duplicates"],
            "files": files,
            "equal": sum(1 for f in files if f["original"] == "equal"),
            "differ": [f["path"] for f in files if f["original"] == "differs"],
            "only_in_originals": only_original,
            "other_days": dict(other_days),
            "holes": holes,
            "archive_losses": losses,
            "raw_files": raw_files,
        }
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / REPLAY_REPORT).write_text(json.dumps(report, indent=2) + "\n")
        return report


def replay_day(
    day: str,
    data_dir: Path,
    out: Path | None = None,
    *,
    hole_s: float = HOLE_S,
    calendar: TradingCalendar | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Rebuild ``day``'s order-book, trade and price CSVs from its raw files into ``out``
    (default ``$DATA_DIR/replay/DAY``) and return the report (also in ``replay-report.json``).

    Raises :class:`ReplayError` when there are no raw files for the day or ``out`` is
    ``DATA_DIR`` itself; ``OSError`` on I/O trouble.
    """
    layout = Layout(data_dir)
    target = out if out is not None else layout.replay_dir(day)
    return Replay(day, data_dir, target, hole_s=hole_s, calendar=calendar, now=now).run()
