"""Finished days on the page: their manifests' summaries (jobs and paths live elsewhere).

* Paths come from :class:`pipeline.layout.Layout` (``manifest(day)`` validates the day through
  :mod:`pipeline.days` before any path is built); the day's job from :mod:`jobs.queue`.
* :class:`ManifestCache` keeps each manifest's summary until the file changes, so the page's
  poll does not re-read unchanged manifests.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.manifest import COVERAGE_FLOOR
from pipeline.layout import Layout

log = logging.getLogger(__name__)

DAYS_SHOWN = 60
"""The most days ``/api/days`` lists (newest first)."""
MAX_MANIFEST_BYTES = 32 * 1024 * 1024
"""A manifest larger than this is not parsed (a guard; real ones are far smaller)."""
PROBLEMS_SHOWN = 3
"""How many of a manifest's problem texts the listing carries (the rest are in the manifest)."""


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


def _coverage(doc: dict[str, Any]) -> dict[str, Any]:
    """The day's volume coverage for the listing (``jobs.manifest.coverage``): the figure
    (a number, or ``"unknown"``), whether to flag it, and the tickers below the floor."""
    cov = doc.get("coverage")
    if not isinstance(cov, dict):
        # A manifest from before coverage existed: nothing was measured.
        cov = {}
    pct = _number(cov.get("volume_coverage_pct"))
    floor = _number(cov.get("floor_pct"))
    floor = COVERAGE_FLOOR if floor is None else floor
    below = [str(code) for code in cov.get("below") or [] if isinstance(code, str)]
    unknown = cov.get("unknown")
    return {
        "pct": "unknown" if pct is None else pct,
        "flagged": bool(below) or (pct is not None and pct < floor),
        "floor": floor,
        "below": below[:20],
        "below_count": len(below),
        "unknown": len(unknown) if isinstance(unknown, list) else 0,
    }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


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
        "coverage": _coverage(doc),
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
        path = Layout(data_dir).manifest(day)
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
