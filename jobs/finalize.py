"""``finalize_day``: verify a finished day's files, write their Parquet twins and the manifest,
compress old days, drop old CSVs (``KEEP_CSV_DAYS``).

An RQ job function (``jobs.finalize.finalize_day``), run by ``obpipe jobs``, or in process by
``obpipe finalize DAY``. Jobs get everything they need as arguments (the enqueuing process has
the settings), and the Redis connection from RQ, so they read no environment of their own.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from jobs import manifest, parquet
from pipeline.days import WIB, age_days, bounds, parse_day
from pipeline.keys import Keys
from pipeline.layout import CSV, GZ, Layout

log = logging.getLogger("obpipe.jobs")


class DayNotFinishedError(ValueError):
    """The day is today (or later) in Jakarta time: its files may still be open."""


def _connection() -> redis.Redis:
    from rq import get_current_job  # noqa: PLC0415 (only inside a worker)

    job = get_current_job()
    if job is None:
        raise RuntimeError("finalize_day needs a Redis connection outside an RQ worker")
    connection: redis.Redis = job.connection
    return connection


def check_finished(day: str, now: datetime, grace_min: int) -> date:
    """Parse ``day`` (``DayError`` unless ``YYYY-MM-DD``) and refuse one that has not ended
    (plus the grace period) in WIB."""
    the_day = parse_day(day)
    if now < bounds(the_day)[1] + timedelta(minutes=grace_min):
        raise DayNotFinishedError(
            f"{day} has not finished in Jakarta time (plus {grace_min} min grace); "
            "its files may still be written"
        )
    return the_day


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _gzip(path: Path) -> None:
    target = path.with_name(path.name + ".gz")
    tmp = target.with_name(target.name + ".tmp")
    with path.open("rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    if gzip.decompress(tmp.read_bytes()) != path.read_bytes():
        tmp.unlink()
        raise OSError(f"gzip of {path} did not verify")
    tmp.replace(target)
    path.unlink()


def _gaps(layout: Layout, day: str) -> list[dict[str, str]]:
    path = layout.gaps(day)
    packed = path.with_name(path.name + GZ)  # a re-run after COMPRESS_AFTER_DAYS gzipped it
    if packed.is_file() and not path.is_file():
        with gzip.open(packed, "rt", newline="") as handle:
            return list(csv.DictReader(handle))
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def finalize_day(
    day: str,
    data_dir: str,
    *,
    key_prefix: str = "obpipe:",
    compress_after_days: int = 0,
    keep_csv_days: int = 0,
    grace_min: int = 30,
    connection: redis.Redis | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Verify a finished day's files against the writers' counts and write its manifest.

    Writes the Parquet twin of every ticker CSV (:mod:`jobs.parquet`, checked row for row),
    then ``$DATA_DIR/manifests/YYYY-MM-DD.json`` (atomically) and, when the day is at least
    ``compress_after_days`` old (0 = never), gzips its CSVs. With ``keep_csv_days`` > 0 it
    then removes the ticker CSVs of every finalized day that old whose Parquet verifies.
    Idempotent: running it again yields the same manifest figures (and keeps unchanged Parquet
    files). Problems (a corrupt file, a count mismatch) are written into the manifest and
    returned, never hidden; I/O errors raise so RQ retries the job.
    """
    moment = now or datetime.now(WIB)
    the_day = check_finished(day, moment, grace_min)
    layout = Layout(Path(data_dir))
    client = connection if connection is not None else _connection()
    counts_raw = client.hgetall(Keys(key_prefix).day_counts(day))
    expected = {_text(k): int(v) for k, v in counts_raw.items()}
    previous = parquet.load_manifest(layout, day)
    # CSVs that retention removed are re-verified through their Parquet twins, not re-read.
    removed = parquet.removed_files(previous)
    parquet.finish_removal(layout, removed)
    present = {path: rows for path, rows in expected.items() if path not in removed}
    result = manifest.build(layout, day, present, _gaps(layout, day))
    if previous is not None and removed:
        parquet.carry(result, previous, removed, expected)
        result["coverage"] = manifest.coverage(result)  # over the carried tickers too
    # Before any gzip or removal: the twins are made from (and checked against) the CSVs.
    parquet.merge(result, parquet.write_day(layout, result["files"], previous))
    result["generated_at"] = moment.astimezone(WIB).isoformat(timespec="seconds")
    compress = compress_after_days > 0 and age_days(the_day, moment) >= compress_after_days
    if compress and result["ok"]:
        for _kind, path in layout.day_files(day):
            if path.suffix == CSV:
                _gzip(path)
        result["compressed"] = True
    _save_manifest(layout, day, result)
    swept = parquet.sweep(layout, moment, keep_csv_days, lambda d, m: _save_manifest(layout, d, m))
    if day in swept:
        result = parquet.load_manifest(layout, day) or result
    if result["ok"]:
        log.info("finalized %s: %d files, all verified", day, len(result["files"]))
    else:
        log.error(
            "finalized %s with %d problem(s): %s",
            day,
            len(result["problems"]),
            result["problems"][:5],
        )
    return result


def _save_manifest(layout: Layout, day: str, result: dict[str, Any]) -> None:
    _write_atomically(layout.manifest(day), json.dumps(result, indent=2) + "\n")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
