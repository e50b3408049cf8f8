"""Every path under ``DATA_DIR``, spelled once: the disk twin of :class:`pipeline.keys.Keys`.

Relative paths (``orderbook/2026-03-02_BBCA.csv``) are what the writers record in Redis (commit
records, ``day:<day>:rows``) and what manifests list; :class:`Layout` turns them into real paths
under one root. Nothing else joins these folder names. Pure: no file is touched here.

::

    orderbook/YYYY-MM-DD_CODE.csv   trades/YYYY-MM-DD_CODE.csv   prices/YYYY-MM-DD_CODE.csv
    gaps/YYYY-MM-DD.csv             manifests/YYYY-MM-DD.json    raw/YYYY-MM-DD/<ingestor>.<n>.zst
    parquet/<kind>/date=YYYY-MM-DD/CODE.parquet                  replay/YYYY-MM-DD/<kind>/…
    recaps/YYYY-MM-DD.json          .locks/NAME.lock
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from pipeline.days import check_day, is_day

ORDERBOOK = "orderbook"
TRADES = "trades"
PRICES = "prices"
GAPS = "gaps"
MANIFESTS = "manifests"
RECAPS = "recaps"
RAW = "raw"
PARQUET = "parquet"
REPLAY = "replay"
LOCKS = ".locks"

TICKER_KINDS = (ORDERBOOK, TRADES, PRICES)
"""Folders of one file per ticker per day (``YYYY-MM-DD_CODE.csv``)."""
DAY_KINDS = (*TICKER_KINDS, GAPS)
"""Folders of a day's CSV files, in the order manifests list them."""
CSV = ".csv"
GZ = ".gz"


class DayFile(NamedTuple):
    """What a day file's relative path says: its kind (folder), day and ticker (None for gaps)."""

    kind: str
    day: str
    code: str | None


def ticker_file(kind: str, day: str, code: str) -> str:
    """``<kind>/YYYY-MM-DD_CODE.csv`` (relative to ``DATA_DIR``)."""
    return f"{kind}/{day}_{code}{CSV}"


def book_file(day: str, code: str) -> str:
    """``orderbook/YYYY-MM-DD_CODE.csv``."""
    return f"{ORDERBOOK}/{day}_{code}{CSV}"


def trade_file(day: str, code: str) -> str:
    """``trades/YYYY-MM-DD_CODE.csv``."""
    return f"{TRADES}/{day}_{code}{CSV}"


def price_file(day: str, code: str) -> str:
    """``prices/YYYY-MM-DD_CODE.csv``."""
    return f"{PRICES}/{day}_{code}{CSV}"


def parquet_file(kind: str, day: str, code: str) -> str:
    """``parquet/<kind>/date=YYYY-MM-DD/CODE.parquet``: a ticker file's Parquet twin, in hive
    partitions so that one glob reads a month into DuckDB or polars."""
    return f"{PARQUET}/{kind}/date={check_day(day)}/{code}.parquet"


def gap_file(day: str) -> str:
    """``gaps/YYYY-MM-DD.csv``."""
    return f"{GAPS}/{day}{CSV}"


RAW_SUFFIX = ".zst"
"""Raw archive files: ``<ingestor>.<n>.zst`` (format: :mod:`pipeline.rawfile`)."""
REPLAY_REPORT = "replay-report.json"
"""What ``obpipe replay`` found, beside the files it rebuilt."""


def raw_file(day: str, ingestor: str, number: int) -> str:
    """``raw/YYYY-MM-DD/<ingestor>.<n>.zst``: the ``n``-th raw file of one ingestor that day
    (a new ``n`` per process start, day and recovery, so no file is ever appended to after a
    crash may have torn it)."""
    return f"{RAW}/{check_day(day)}/{ingestor}.{number}{RAW_SUFFIX}"


def parse_raw_name(name: str) -> tuple[str, int] | None:
    """``<ingestor>.<n>.zst`` → (ingestor, n); None for any other name (ids may hold dots)."""
    stem = name.removesuffix(RAW_SUFFIX)
    ingestor, dot, number = stem.rpartition(".")
    if stem == name or not dot or not ingestor or not number.isdigit():
        return None
    return ingestor, int(number)


def kind_of(relpath: str) -> str:
    """The folder (kind) of a relative day-file path."""
    return relpath.split("/", 1)[0]


def day_of_file(relpath: str) -> str:
    """The day of a relative day-file path: ``orderbook/2026-03-02_BBCA.csv`` → ``2026-03-02``."""
    return relpath.rsplit("/", 1)[-1][:10]


def parse_file(relpath: str) -> DayFile:
    """Take a relative day-file path apart (``.csv`` or ``.csv.gz``); ``ValueError`` if foreign."""
    kind, _, name = relpath.partition("/")
    stem = name.removesuffix(GZ)
    if kind not in DAY_KINDS or "/" in name or not stem.endswith(CSV):
        raise ValueError(f"not a day file: {relpath!r}")
    stem = stem.removesuffix(CSV)
    if kind == GAPS:
        return DayFile(kind, check_day(stem), None)
    day, sep, code = stem.partition("_")
    if not sep or not code:
        raise ValueError(f"not a day file: {relpath!r}")
    return DayFile(kind, check_day(day), code)


def code_of(path: Path | str) -> str:
    """The ticker of a per-ticker file name: ``2026-03-02_BBCA.csv[.gz]`` → ``BBCA``."""
    name = Path(path).name
    return name.split("_", 1)[1].split(".", 1)[0]


@dataclass(frozen=True)
class Layout:
    """The folders and files under one ``DATA_DIR`` root."""

    root: Path

    def path(self, relpath: str) -> Path:
        """The real path of a relative one (as recorded in Redis and manifests)."""
        return self.root / relpath

    def folder(self, kind: str) -> Path:
        """``DATA_DIR/<kind>``."""
        return self.root / kind

    def gaps(self, day: str) -> Path:
        """``DATA_DIR/gaps/YYYY-MM-DD.csv``."""
        return self.root / gap_file(day)

    @property
    def manifests(self) -> Path:
        """``DATA_DIR/manifests``."""
        return self.root / MANIFESTS

    def manifest(self, day: str) -> Path:
        """``DATA_DIR/manifests/YYYY-MM-DD.json`` (``DayError`` for anything but a day)."""
        return self.root / MANIFESTS / f"{check_day(day)}.json"

    def manifest_days(self) -> list[str]:
        """The days that have a manifest, newest first."""
        return _json_days(self.manifests)

    def recap(self, day: str) -> Path:
        """``DATA_DIR/recaps/YYYY-MM-DD.json``: the day's recap (``jobs/recap.py``)."""
        return self.root / RECAPS / f"{check_day(day)}.json"

    def recap_days(self) -> list[str]:
        """The days that have a recap, newest first."""
        return _json_days(self.root / RECAPS)

    def raw_dir(self, day: str) -> Path:
        """``DATA_DIR/raw/YYYY-MM-DD``: the day's raw frame archive."""
        return self.root / RAW / check_day(day)

    def raw_files(self, day: str) -> list[tuple[str, int, Path]]:
        """The day's raw files as (ingestor, n, path), by ingestor then n."""
        folder = self.raw_dir(day)
        try:
            names = [p.name for p in folder.iterdir() if p.is_file()]
        except OSError:
            return []
        found = [(parsed, name) for name in names if (parsed := parse_raw_name(name))]
        return [(ing, n, folder / name) for (ing, n), name in sorted(found)]

    def raw_days(self) -> list[str]:
        """The days that have a raw folder, oldest first."""
        try:
            names = [p.name for p in (self.root / RAW).iterdir() if p.is_dir()]
        except OSError:
            return []
        return sorted(n for n in names if is_day(n))

    def parquet(self, kind: str, day: str, code: str) -> Path:
        """``DATA_DIR/parquet/<kind>/date=YYYY-MM-DD/CODE.parquet`` (hive-partitioned)."""
        return self.root / parquet_file(kind, day, code)

    def parquet_day(self, kind: str, day: str) -> Path:
        """``DATA_DIR/parquet/<kind>/date=YYYY-MM-DD``: one day's Parquet files of a kind."""
        return self.root / PARQUET / kind / f"date={check_day(day)}"

    def replay_dir(self, day: str) -> Path:
        """``DATA_DIR/replay/YYYY-MM-DD``: where ``obpipe replay`` rebuilds a day."""
        return self.root / REPLAY / check_day(day)

    def lock(self, name: str) -> Path:
        """``DATA_DIR/.locks/NAME.lock``: a writer's per-partition file fence."""
        return self.root / LOCKS / f"{name}.lock"

    def day_files(self, day: str) -> list[tuple[str, Path]]:
        """The day's CSV files (plain or gzipped) as (kind, path), by kind then name."""
        check_day(day)
        found: list[tuple[str, Path]] = []
        for kind in DAY_KINDS:
            folder = self.folder(kind)
            if not folder.is_dir():
                continue
            pattern = f"{day}{CSV}*" if kind == GAPS else f"{day}_*{CSV}*"
            found += [
                (kind, path)
                for path in sorted(folder.glob(pattern))
                if path.name.endswith((CSV, CSV + GZ))
            ]
        return found

    def relative(self, kind: str, path: Path) -> str:
        """The relative path a day file is recorded under (without any ``.gz``)."""
        return f"{kind}/{path.name.removesuffix(GZ)}"


def _json_days(folder: Path) -> list[str]:
    """The days of the ``YYYY-MM-DD.json`` files in ``folder``, newest first."""
    try:
        names = [p.name for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []
    days = {n.removesuffix(".json") for n in names if n.endswith(".json")}
    return sorted((d for d in days if is_day(d)), reverse=True)
