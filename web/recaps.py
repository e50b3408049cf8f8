"""Daily recaps on the Days page: each day's ``DATA_DIR/recaps/YYYY-MM-DD.json`` summarised.

The recap is written by the ``daily_recap`` job at 16:45 WIB of each trading day
(``jobs/recap.py``); the page shows its figures before the day's manifest exists. Like
:class:`web.days.ManifestCache`, a recap is re-read only when its file changes.
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

from pipeline.layout import Layout

log = logging.getLogger(__name__)

MAX_RECAP_BYTES = 1024 * 1024
PROBLEMS_SHOWN = 5


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def summarize_recap(doc: Any) -> dict[str, Any]:
    """A recap's figures for the listing; tolerant of missing or odd fields."""
    if not isinstance(doc, dict):
        raise ValueError("recap is not a JSON object")
    worst = doc.get("worst_ticker")
    volume = doc.get("volume_coverage_pct")
    problems = doc.get("problems")
    return {
        "files": _number(doc.get("files")),
        "rows": _number(doc.get("rows")),
        "trades": _number(doc.get("trades")),
        "gaps": _number(doc.get("gaps")),
        "gap_seconds": _number(doc.get("gap_seconds")),
        "gap_trading_seconds": _number(doc.get("gap_trading_seconds")),
        "time_coverage_pct": _number(doc.get("time_coverage_pct")),
        "worst_ticker": worst if isinstance(worst, dict) else None,
        "volume_coverage_pct": volume if isinstance(volume, int | float | str) else None,
        "problems": [str(p)[:300] for p in problems[:PROBLEMS_SHOWN]]
        if isinstance(problems, list)
        else [],
        "generated_at": doc.get("generated_at")
        if isinstance(doc.get("generated_at"), str)
        else None,
    }


@dataclass(frozen=True, slots=True)
class _Cached:
    stamp: tuple[int, int, int]
    summary: dict[str, Any] | None


class RecapCache:
    """Recap summaries, re-read only when a file's inode, size or mtime changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Cached] = {}

    def summary(self, data_dir: Path, day: str) -> dict[str, Any] | None:
        """The day's recap summary, or None (no recap yet, or unreadable: logged)."""
        path = Layout(data_dir).recap(day)
        try:
            info = path.stat()
        except OSError:
            return None
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            cached = self._entries.get(day)
        if cached is not None and cached.stamp == stamp:
            return cached.summary
        summary = None
        try:
            with path.open("rb") as handle:
                if os.fstat(handle.fileno()).st_size > MAX_RECAP_BYTES:
                    raise ValueError("recap too large")
                summary = summarize_recap(json.loads(handle.read()))
        except (OSError, ValueError) as exc:
            log.warning("recap of %s unreadable: %s", day, exc)
        with self._lock:
            self._entries[day] = _Cached(stamp, summary)
        return summary

    def keep_only(self, days: Iterable[str]) -> None:
        """Forget the days not listed any more."""
        wanted = set(days)
        with self._lock:
            for day in [d for d in self._entries if d not in wanted]:
                del self._entries[day]
