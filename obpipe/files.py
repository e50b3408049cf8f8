"""Where a day's data is: the data folder, the days a query covers, and the file to read.

Pure path logic (no pandas), shared by the reader and ``obpipe export``. Paths come from
:mod:`pipeline.layout` and days are checked by :mod:`pipeline.days`, as everywhere else. The
data folder is ``data_dir`` when given, else ``$DATA_DIR``, else ``./data``: the reader reads
that one variable and none of the pipeline's settings, so it works on any copy of the files.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from obpipe.tables import PARQUET_SUFFIX
from pipeline.days import check_day, days_in
from pipeline.layout import GZ, Layout, code_of, ticker_file

Day = str | date
PathLike = str | os.PathLike[str]


def data_root(data_dir: PathLike | None = None) -> Path:
    """``data_dir`` if given, else ``$DATA_DIR``, else ``./data``."""
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get("DATA_DIR") or "data")


def _text(day: Day) -> str:
    return day.isoformat() if isinstance(day, date) else day


def span(day: Day | None = None, start: Day | None = None, end: Day | None = None) -> list[str]:
    """The days a query covers: ``day`` (or ``"START..END"``), or ``start`` to ``end``
    (inclusive; ``end`` defaults to ``start``). :class:`pipeline.days.DayError` for a bad day."""
    if day is not None:
        if start is not None or end is not None:
            raise ValueError("give a day, or start= and end=, not both")
        first, dots, last = _text(day).partition("..")
        return list(days_in(first, last)) if dots else [check_day(first)]
    if start is None:
        raise ValueError("give a day (YYYY-MM-DD or START..END), or start= (and end=)")
    return list(days_in(_text(start), _text(end if end is not None else start)))


def csv_source(layout: Layout, kind: str, day: str, code: str) -> Path | None:
    """A ticker's CSV of the day: ``.csv``, else ``.csv.gz``, else None."""
    plain = layout.path(ticker_file(kind, day, code))
    for path in (plain, plain.with_name(plain.name + GZ)):
        if path.is_file():
            return path
    return None


def source(layout: Layout, kind: str, day: str, code: str) -> Path | None:
    """The file to read for one ticker and day: its Parquet twin, else its CSV."""
    parquet = layout.parquet(kind, day, code)
    return parquet if parquet.is_file() else csv_source(layout, kind, day, code)


def day_codes(layout: Layout, kind: str, day: str) -> list[str]:
    """Every ticker with a file of ``kind`` on ``day`` (Parquet or CSV)."""
    found = {p.stem for p in layout.parquet_day(kind, day).glob(f"*{PARQUET_SUFFIX}")}
    found |= {code_of(path) for k, path in layout.day_files(day) if k == kind}
    return sorted(found)
