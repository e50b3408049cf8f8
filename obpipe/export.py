"""``obpipe export``: copy days out of DATA_DIR as Parquet or CSV, for a laptop or a colleague.

The export folder is laid out like a DATA_DIR (:class:`pipeline.layout.Layout`), so the reader
(``data_dir=OUT``), DuckDB and polars read it as they read the original. Each ticker file is
taken from the best source there is and converted only when it must be:

- Parquet wanted: the Parquet twin is copied as it is; a day not finalized yet is converted
  from its CSV (:mod:`obpipe.tables`, the same conversion as ``finalize_day``);
- CSV wanted: the CSV is copied (a ``.csv.gz`` is unpacked); a day whose CSVs were removed
  (``KEEP_CSV_DAYS``) is rebuilt from its Parquet, in the files' own format.

The day's gaps file is copied in both cases (analyses mask with it). Needs pyarrow only.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from obpipe import tables
from obpipe.files import csv_source, day_codes
from pipeline.layout import GZ, TICKER_KINDS, Layout, gap_file, ticker_file

PARQUET = "parquet"
CSV = "csv"
FORMATS = (PARQUET, CSV)


@dataclass
class Exported:
    """What an export wrote."""

    files: list[Path] = field(default_factory=list)
    bytes: int = 0
    converted: int = 0
    """Files that had to be converted (the others were copied)."""
    empty_days: list[str] = field(default_factory=list)
    """Days with no file of the chosen tickers (weekends, holidays, not captured)."""


def _copy(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.name.endswith(GZ):
        with gzip.open(source, "rb") as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        shutil.copyfile(source, tmp)
    tmp.replace(target)


def _write_bytes(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


def export(
    days: Iterable[str],
    data_dir: Path,
    out: Path,
    *,
    fmt: str = PARQUET,
    codes: Iterable[str] | None = None,
) -> Exported:
    """Write ``days`` (checked ``YYYY-MM-DD`` strings) of ``codes`` (all if None) under ``out``.

    Same-named files already in ``out`` are replaced (each atomically), so an export can be
    re-run; nothing under ``data_dir`` is changed.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    source, target = Layout(data_dir), Layout(out)
    if os.path.realpath(source.root) == os.path.realpath(target.root):
        raise ValueError("the export folder must not be DATA_DIR itself")
    wanted = set(codes) if codes is not None else None
    done = Exported()
    for day in days:
        before = len(done.files)
        for kind in TICKER_KINDS:
            for code in day_codes(source, kind, day):
                if wanted is not None and code not in wanted:
                    continue
                _one(source, target, kind=kind, day=day, code=code, fmt=fmt, done=done)
        if len(done.files) == before:
            done.empty_days.append(day)
            continue
        gaps = source.path(gap_file(day))
        for candidate in (gaps, gaps.with_name(gaps.name + GZ)):
            if candidate.is_file():
                _copy(candidate, target.path(gap_file(day)))
                done.files.append(target.path(gap_file(day)))
                break
    done.bytes = sum(path.stat().st_size for path in done.files)
    return done


def _one(
    source: Layout, target: Layout, *, kind: str, day: str, code: str, fmt: str, done: Exported
) -> None:
    parquet = source.parquet(kind, day, code)
    csv_file = csv_source(source, kind, day, code)
    if fmt == PARQUET:
        path = target.parquet(kind, day, code)
        if parquet.is_file():
            _copy(parquet, path)
        elif csv_file is not None:
            tables.write_parquet(tables.read_csv(csv_file, kind, code), path)
            done.converted += 1
        else:
            return
    else:
        path = target.path(ticker_file(kind, day, code))
        if csv_file is not None:
            _copy(csv_file, path)
        elif parquet.is_file():
            _write_bytes(path, tables.to_csv(tables.read_parquet(parquet), kind))
            done.converted += 1
        else:
            return
    done.files.append(path)
