"""``finalize_day``'s Parquet twins and CSV retention (``KEEP_CSV_DAYS``).

For every ticker CSV of a finished day (order book, trades, prices), before any gzip or
removal: convert it to its typed table (:mod:`obpipe.tables`), write
``parquet/<kind>/date=YYYY-MM-DD/CODE.parquet`` atomically (zstd), read the file back and check
that it holds the CSV's rows, value for value. The manifest lists each file with rows, bytes and
sha256, and ``rebuilds_csv``: whether the CSV text rebuilt from the Parquet has the CSV's own
sha256 (then ``obpipe export --format csv`` reproduces the original file byte for byte).
Hive partitions (``date=``) let DuckDB and polars read a month with one glob; one file per
ticker and day keeps the unit the CSVs, the writers' counts and the manifest already use.

Re-running is idempotent: a Parquet file whose CSV has not changed since the manifest recorded
both (same CSV sha256, same Parquet sha256 on disk) is kept, not rewritten.

Retention: with ``KEEP_CSV_DAYS`` > 0, each run also removes the ticker CSVs of every
finalized day at least that old whose manifest is clean and whose Parquet files still match it.
The manifest is rewritten first (entries marked ``removed``, ``csv_removed_at`` set), so a crash
in between leaves a manifest that the next run completes; the gaps CSV and the manifest stay.
A day whose CSVs are gone is re-verified against its Parquet files and carries its CSV figures
over from the manifest that recorded them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from obpipe import tables
from pipeline.days import WIB, age_days
from pipeline.layout import DAY_KINDS, GZ, TICKER_KINDS, Layout, kind_of, parquet_file, parse_file

log = logging.getLogger("obpipe.jobs")

SaveManifest = Callable[[str, dict[str, Any]], None]
"""Writes a day's manifest (atomically): ``finalize_day``'s own writer."""


@dataclass
class ParquetFacts:
    """One Parquet twin as the manifest lists it."""

    path: str
    """``parquet/orderbook/date=2026-03-02/BBCA.parquet`` (relative to DATA_DIR)."""
    csv: str
    """The CSV it was made from (``orderbook/2026-03-02_BBCA.csv``)."""
    rows: int = 0
    bytes: int = 0
    sha256: str = ""
    rebuilds_csv: bool = False
    """The CSV rebuilt from this file has the CSV's sha256 (byte-identical)."""
    ok: bool = True
    problems: list[str] = field(default_factory=list)


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _on_disk(layout: Layout, relative: str) -> Path | None:
    plain = layout.path(relative)
    for path in (plain, plain.with_name(plain.name + GZ)):
        if path.is_file():
            return path
    return None


def _convert(layout: Layout, entry: dict[str, Any], target: str) -> ParquetFacts:
    """Write and verify the Parquet twin of one CSV (manifest entry ``entry``)."""
    relative = entry["path"]
    facts = ParquetFacts(path=target, csv=relative)
    kind, _, code = parse_file(relative)
    source = _on_disk(layout, relative)
    if source is None:
        facts.ok = False
        facts.problems.append("not written: its CSV is gone")
        return facts
    try:
        table = tables.read_csv(source, kind, code)
    except (tables.TableError, pa.ArrowInvalid) as exc:
        facts.ok = False
        facts.problems.append(f"not written: {exc}")
        return facts
    path = layout.path(target)
    tables.write_parquet(table, path)
    back = tables.read_parquet(path)
    facts.rows = back.num_rows
    facts.bytes = path.stat().st_size
    facts.sha256 = sha256_of(path)
    if back.num_rows != entry["rows"]:
        facts.ok = False
        facts.problems.append(f"{back.num_rows} rows, the CSV has {entry['rows']}")
    elif not tables.canonical(back).equals(tables.canonical(table)):
        facts.ok = False
        facts.problems.append("does not hold the CSV's values")
    rebuilt = hashlib.sha256(tables.to_csv(back, kind)).hexdigest()
    facts.rebuilds_csv = rebuilt == entry["sha256"]
    return facts


def _kept(layout: Layout, earlier: dict[str, Any] | None) -> bool:
    """Whether ``earlier`` (a recorded Parquet entry) is still on disk, byte for byte."""
    if earlier is None or not earlier.get("ok") or not earlier.get("sha256"):
        return False
    path = layout.path(earlier["path"])
    return path.is_file() and sha256_of(path) == earlier["sha256"]


def write_day(
    layout: Layout, files: list[dict[str, Any]], previous: dict[str, Any] | None
) -> list[ParquetFacts]:
    """The Parquet twin of every ticker CSV in a day's manifest ``files`` (written if needed).

    ``previous`` is the day's earlier manifest, if any: a twin it recorded for the same CSV
    bytes, still on disk unchanged, is kept as it is.
    """
    before_files = {f["path"]: f for f in (previous or {}).get("files", [])}
    before = {p["csv"]: p for p in (previous or {}).get("parquet", [])}
    out: list[ParquetFacts] = []
    for entry in files:
        kind, day, code = parse_file(entry["path"])
        if kind not in TICKER_KINDS or code is None:
            continue
        target = parquet_file(kind, day, code)
        earlier = before.get(entry["path"])
        same_csv = before_files.get(entry["path"], {}).get("sha256") == entry["sha256"]
        if entry.get("removed"):
            # The CSV is gone: its twin must be the one the manifest recorded.
            if earlier is not None and _kept(layout, earlier):
                out.append(ParquetFacts(**earlier))
            else:
                lost = ParquetFacts(path=target, csv=entry["path"], ok=False)
                lost.problems.append("missing or changed since its CSV was removed")
                out.append(lost)
            continue
        if same_csv and earlier is not None and _kept(layout, earlier):
            out.append(ParquetFacts(**earlier))
            continue
        out.append(_convert(layout, entry, target))
    return out


def merge(result: dict[str, Any], parquet: list[ParquetFacts]) -> None:
    """Add the Parquet entries and their problems to a manifest ``result``."""
    result["parquet"] = [asdict(p) for p in parquet]
    result["problems"] = result["problems"] + [
        f"{p.path}: {problem}" for p in parquet for problem in p.problems
    ]
    result["ok"] = not result["problems"]


# -- days whose CSVs were removed --------------------------------------------------------------


def load_manifest(layout: Layout, day: str) -> dict[str, Any] | None:
    """A day's manifest as last written, or None (missing or unreadable)."""
    try:
        data: dict[str, Any] = json.loads(layout.manifest(day).read_text())
    except (OSError, ValueError):
        return None
    return data


def removed_files(previous: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The CSV entries of ``previous`` whose files retention removed, by relative path."""
    if not previous:
        return {}
    return {f["path"]: f for f in previous.get("files", []) if f.get("removed")}


def finish_removal(layout: Layout, removed: dict[str, dict[str, Any]]) -> None:
    """Delete any CSV the manifest already marks removed (a run that stopped half-way)."""
    for relative in removed:
        path = _on_disk(layout, relative)
        if path is not None:
            path.unlink()
            log.info("removed %s (marked removed by an earlier run)", relative)


def carry(
    result: dict[str, Any],
    previous: dict[str, Any],
    removed: dict[str, dict[str, Any]],
    expected: dict[str, int],
) -> None:
    """Put the removed CSVs' entries (and their tickers' figures) back into ``result``,
    re-checked against the writers' counts."""
    for relative, entry in removed.items():
        carried = dict(entry, problems=[], ok=True)
        carried["expected_rows"] = expected.get(relative)
        if carried["expected_rows"] is not None and carried["expected_rows"] != carried["rows"]:
            carried["ok"] = False
            carried["problems"].append(
                f"{carried['rows']} rows recorded, the writers committed {carried['expected_rows']}"
            )
            result["problems"].append(f"{relative}: {carried['problems'][-1]}")
        result["files"].append(carried)
    result["files"].sort(key=lambda f: (DAY_KINDS.index(kind_of(f["path"])), f["path"]))
    result["tickers"] = {**previous.get("tickers", {}), **result["tickers"]}
    result["csv_removed_at"] = previous.get("csv_removed_at")
    result["ok"] = not result["problems"]


# -- retention --------------------------------------------------------------------------------


def _removable(layout: Layout, manifest: dict[str, Any]) -> list[str] | None:
    """The ticker CSVs of a clean manifest whose twins verify on disk; None if any does not."""
    if not manifest.get("ok"):
        return None
    twins = {p["csv"]: p for p in manifest.get("parquet", [])}
    doomed = []
    for entry in manifest.get("files", []):
        if kind_of(entry["path"]) not in TICKER_KINDS or entry.get("removed"):
            continue
        twin = twins.get(entry["path"])
        if twin is None or twin["rows"] != entry["rows"] or not _kept(layout, twin):
            return None
        doomed.append(entry["path"])
    return doomed


def drop_csvs(
    layout: Layout, day: str, manifest: dict[str, Any], now: datetime, save: SaveManifest
) -> list[str]:
    """Remove a finalized day's ticker CSVs once every Parquet twin verifies; returns them.

    The manifest is saved first with the entries marked ``removed``, then the files go.
    """
    doomed = _removable(layout, manifest)
    if not doomed:
        return []
    gone = set(doomed)
    for entry in manifest["files"]:
        if entry["path"] in gone:
            entry["removed"] = True
    manifest["csv_removed_at"] = now.astimezone(WIB).isoformat(timespec="seconds")
    save(day, manifest)
    folders = set()
    for relative in doomed:
        path = _on_disk(layout, relative)
        if path is not None:
            path.unlink()
            folders.add(path.parent)
    for folder in folders:
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    log.info("removed %d CSV file(s) of %s (Parquet verified)", len(doomed), day)
    return doomed


def sweep(layout: Layout, now: datetime, keep_days: int, save: SaveManifest) -> dict[str, int]:
    """Apply ``KEEP_CSV_DAYS``: drop the CSVs of every finalized day ``keep_days`` or more old.

    Returns day → files removed. Days with problems, or whose Parquet no longer matches its
    manifest, keep their CSVs (and are logged).
    """
    if keep_days <= 0:
        return {}
    removed: dict[str, int] = {}
    for day in layout.manifest_days():
        if age_days(day, now) < keep_days:
            continue
        manifest = load_manifest(layout, day)
        if manifest is None:
            continue
        pending = [
            f
            for f in manifest.get("files", [])
            if kind_of(f["path"]) in TICKER_KINDS and not f.get("removed")
        ]
        if not pending:
            finish_removal(layout, removed_files(manifest))
            continue
        gone = drop_csvs(layout, day, manifest, now, save)
        if gone:
            removed[day] = len(gone)
        else:
            log.warning("kept the CSVs of %s: its manifest or Parquet files do not verify", day)
    return removed
