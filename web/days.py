"""Finished days: their manifests under ``DATA_DIR/manifests/`` and their ``finalize_day`` jobs.

* A day string is checked by :func:`parse_day` (exactly ``YYYY-MM-DD`` in ASCII digits, and a
  real calendar date) before any path is built from it; :func:`manifest_path` builds the only
  path this module opens, ``DATA_DIR/manifests/<day>.json``, itself.
* :func:`manifest_days` lists the folder and keeps only names of that exact form.
* :class:`ManifestCache` keeps each manifest's summary until the file changes, so the page's
  poll does not re-read unchanged manifests.
* RQ is read with a client that does not decode responses (RQ stores pickled data); a job
  that cannot be read shows as ``"unknown"`` rather than failing the listing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job

from writer.jobs import finalize_day
from writer.schedule import RETRY
from writer.worker import queue

log = logging.getLogger(__name__)

DAYS_SHOWN = 60
"""The most days ``/api/days`` lists (newest first)."""
MAX_MANIFEST_BYTES = 32 * 1024 * 1024
"""A manifest larger than this is not parsed (a guard; real ones are far smaller)."""
PROBLEMS_SHOWN = 3
"""How many of a manifest's problem texts the listing carries (the rest are in the manifest)."""
BUSY = frozenset({"queued", "started"})
"""Job states in which a new finalize request for the day is refused (409)."""
NONE = "none"
UNKNOWN = "unknown"

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_MANIFEST = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})\.json\Z")


def parse_day(text: str) -> str:
    """``text`` if it is a real date written ``YYYY-MM-DD``; ``ValueError`` otherwise.

    ``date.fromisoformat`` alone would also accept ``20260204`` and week dates, hence the
    pattern first.
    """
    if not _DAY.match(text):
        raise ValueError(f"not a day: {text[:40]!r} (expected YYYY-MM-DD)")
    try:
        date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a real date: {text!r}") from None
    return text


def is_day(text: str) -> bool:
    """Whether :func:`parse_day` accepts ``text``."""
    try:
        parse_day(text)
    except ValueError:
        return False
    return True


def manifest_path(data_dir: Path, day: str) -> Path:
    """``DATA_DIR/manifests/<day>.json`` for a validated day (``ValueError`` otherwise)."""
    return data_dir / "manifests" / f"{parse_day(day)}.json"


def job_id(day: str) -> str:
    """The RQ job id of a day's ``finalize_day`` (as the writers schedule it)."""
    return f"finalize-{parse_day(day)}"


def manifest_days(data_dir: Path) -> list[str]:
    """The days that have a manifest file, newest first (names not of the form are ignored)."""
    days = []
    try:
        with os.scandir(data_dir / "manifests") as entries:
            for entry in entries:
                match = _MANIFEST.match(entry.name)
                if match and is_day(match.group(1)) and entry.is_file(follow_symlinks=False):
                    days.append(match.group(1))
    except OSError:
        return []
    return sorted(days, reverse=True)


def read_manifest(path: Path) -> Any:
    """The parsed manifest; ``FileNotFoundError`` if there is none, ``ValueError`` if it is
    too large or not JSON, other ``OSError`` if it cannot be read."""
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"manifest over {MAX_MANIFEST_BYTES} bytes")
        return json.loads(handle.read())


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def summarize(doc: Any) -> dict[str, Any]:
    """A manifest's figures for the listing; tolerant of missing or odd fields."""
    if not isinstance(doc, dict):
        raise ValueError("manifest is not a JSON object")
    files = [f for f in doc.get("files") or [] if isinstance(f, dict)]
    problems = doc.get("problems")
    problems = [str(p) for p in problems] if isinstance(problems, list) else []
    tickers = doc.get("tickers")
    gaps = doc.get("gaps")
    generated = doc.get("generated_at")
    return {
        "ok": doc.get("ok") is True,
        "problems": len(problems),
        "first_problems": [p[:300] for p in problems[:PROBLEMS_SHOWN]],
        "files": len(files),
        "rows": sum(_count(f.get("rows")) for f in files),
        "bytes": sum(_count(f.get("bytes")) for f in files),
        "tickers": len(tickers) if isinstance(tickers, dict) else 0,
        "gaps": len(gaps) if isinstance(gaps, list) else 0,
        "compressed": doc.get("compressed") is True,
        "generated_at": generated if isinstance(generated, str) else None,
    }


@dataclass(frozen=True, slots=True)
class _Cached:
    stamp: tuple[int, int, int]
    summary: dict[str, Any] | None
    error: str | None


class ManifestCache:
    """Manifest summaries, re-read only when a file's inode, size or mtime changes.

    Thread-safe; holds at most the days of the last listing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Cached] = {}

    def summary(self, data_dir: Path, day: str) -> tuple[dict[str, Any] | None, str | None]:
        """``(summary, None)``, ``(None, error)`` for an unreadable manifest, or
        ``(None, None)`` when the day has no manifest."""
        path = manifest_path(data_dir, day)
        try:
            info = path.stat()
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, f"manifest unreadable ({type(exc).__name__})"
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            cached = self._entries.get(day)
        if cached is not None and cached.stamp == stamp:
            return cached.summary, cached.error
        summary: dict[str, Any] | None = None
        error: str | None = None
        try:
            summary = summarize(read_manifest(path))
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as exc:
            # The text may name server paths; the class (and our own messages) are enough.
            error = f"manifest unreadable ({type(exc).__name__})"
            log.warning("manifest of %s unreadable: %s", day, exc)
        with self._lock:
            self._entries[day] = _Cached(stamp, summary, error)
        return summary, error

    def keep_only(self, days: Iterable[str]) -> None:
        """Forget the days not listed any more."""
        wanted = set(days)
        with self._lock:
            for day in [d for d in self._entries if d not in wanted]:
                del self._entries[day]


def _state_of(job: Any) -> str:
    status = job.get_status(refresh=False)
    if status is None:
        return UNKNOWN
    return str(getattr(status, "value", status))


def job_state(connection: redis.Redis, day: str) -> str:
    """The state of ``finalize-<day>``: ``scheduled``, ``queued``, ``started``, ``finished``,
    ``failed``, ... as RQ names it, ``none`` when there is no such job, ``unknown`` when it
    cannot be read. Raises ``redis.RedisError`` when Redis is down."""
    try:
        job = Job.fetch(job_id(day), connection=connection)
        return str(job.get_status().value)
    except NoSuchJobError:
        return NONE
    except redis.RedisError:
        raise
    except Exception:  # a job hash RQ cannot read must not break the page
        log.warning("finalize job of %s unreadable", day, exc_info=True)
        return UNKNOWN


def job_states(connection: redis.Redis, days: list[str]) -> dict[str, str]:
    """:func:`job_state` of many days in one pipelined round trip."""
    if not days:
        return {}
    try:
        jobs = Job.fetch_many([job_id(d) for d in days], connection=connection)
    except redis.RedisError:
        raise
    except Exception:
        # One unreadable job hash: fall back to reading them one by one.
        return {day: job_state(connection, day) for day in days}
    states = {}
    for day, job in zip(days, jobs, strict=True):
        try:
            states[day] = NONE if job is None else _state_of(job)
        except Exception:
            states[day] = UNKNOWN
    return states


def enqueue_finalize(connection: redis.Redis, day: str, kwargs: dict[str, object]) -> Any:
    """Queue ``finalize_day(day)`` now as job ``finalize-<day>``, with the writers' retry policy.

    An earlier job of that id (finished, failed, or still scheduled for later) is deleted
    first, so it leaves its RQ registry and a scheduled one does not run a second time. The
    caller refuses a day whose job is queued or started (:data:`BUSY`).
    """
    the_id = job_id(day)
    old: Any = None
    try:
        old = Job.fetch(the_id, connection=connection)
    except NoSuchJobError:
        pass
    except redis.RedisError:
        raise
    except Exception:  # unreadable: the new job's hash replaces it
        log.warning("earlier finalize job of %s unreadable; replacing it", day, exc_info=True)
    if old is not None:
        old.delete()
    return queue(connection).enqueue(finalize_day, day, job_id=the_id, retry=RETRY, **kwargs)
