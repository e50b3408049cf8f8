"""RQ job functions (dotted paths like ``writer.jobs.finalize_day``), run by ``obpipe jobs``.

Jobs get everything they need as arguments (the enqueuing process has the settings), and the
Redis connection from RQ, so they read no environment of their own.
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

from pipeline.keys import Keys
from stockbit.timestamps import WIB
from writer import manifest

log = logging.getLogger("obpipe.jobs")

QUEUE = "obpipe"


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
    """Parse ``day`` and refuse one that has not ended (plus the grace period) in WIB."""
    try:
        the_day = date.fromisoformat(day)
    except ValueError:
        raise ValueError(f"not a day (YYYY-MM-DD): {day!r}") from None
    ends = datetime.combine(the_day + timedelta(days=1), datetime.min.time(), WIB)
    if now.astimezone(WIB) < ends + timedelta(minutes=grace_min):
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


def _gaps(data_dir: Path, day: str) -> list[dict[str, str]]:
    path = data_dir / "gaps" / f"{day}.csv"
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
    grace_min: int = 30,
    connection: redis.Redis | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Verify a finished day's files against the writers' counts and write its manifest.

    Writes ``$DATA_DIR/manifests/YYYY-MM-DD.json`` (atomically) and, when the day is at least
    ``compress_after_days`` old (0 = never), gzips its CSVs. Idempotent: running it again
    yields the same manifest figures. Problems (a corrupt file, a count mismatch) are written
    into the manifest and returned, never hidden; I/O errors raise so RQ retries the job.
    """
    moment = now or datetime.now(WIB)
    the_day = check_finished(day, moment, grace_min)
    root = Path(data_dir)
    client = connection if connection is not None else _connection()
    counts_raw = client.hgetall(Keys(key_prefix).day_counts(day))
    expected = {_text(k): int(v) for k, v in counts_raw.items()}
    result = manifest.build(root, day, expected, _gaps(root, day))
    result["generated_at"] = moment.astimezone(WIB).isoformat(timespec="seconds")
    compress = (
        compress_after_days > 0
        and (moment.astimezone(WIB).date() - the_day).days >= compress_after_days
    )
    if compress and result["ok"]:
        for _kind, path in manifest.day_files(root, day):
            if path.suffix == ".csv":
                _gzip(path)
        result["compressed"] = True
    _write_atomically(root / "manifests" / f"{day}.json", json.dumps(result, indent=2) + "\n")
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
