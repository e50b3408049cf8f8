"""Per-second rates from cumulative counters, and a short history for the sparkline.

Redis holds only cumulative counters (frames per ticker, rows per writer, ...). The web process
keeps a few minutes of samples of them in memory and derives rates by difference. It writes
nothing back to Redis: the history is a display aid and starts afresh when the web restarts.

Thread-safe (waitress serves requests from several threads); time is passed in, never read.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

FRAMES = "frames"
"""The counter key for the deployment's total book frames (sum over tickers)."""


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    values: dict[str, float]


class RateTracker:
    """Keeps samples of named counters; answers rates and the total-frames history."""

    def __init__(
        self, min_spacing_s: float = 1.0, rate_window_s: float = 5.0, keep_s: float = 600.0
    ) -> None:
        self.min_spacing_s = min_spacing_s
        self.rate_window_s = rate_window_s
        self.keep_s = keep_s
        self._samples: deque[_Sample] = deque()
        self._lock = threading.Lock()

    def observe(self, at: float, values: Mapping[str, float]) -> dict[str, float]:
        """Record counters seen at time ``at`` (seconds) and return each one's rate per second.

        A sample closer than ``min_spacing_s`` to the previous one is not stored (several open
        pages poll at once) but still gets rates. A rate is measured against the newest stored
        sample at least ``rate_window_s`` older (or the oldest one, while the history is short);
        a counter that went down (a process restarted) or is new has no rate yet.
        """
        current = dict(values)
        with self._lock:
            base = self._base(at)
            if not self._samples or at - self._samples[-1].at >= self.min_spacing_s:
                self._samples.append(_Sample(at, current))
            while self._samples and at - self._samples[0].at > self.keep_s:
                self._samples.popleft()
        if base is None:
            return {}
        span = at - base.at
        rates: dict[str, float] = {}
        for name, value in current.items():
            before = base.values.get(name)
            if before is not None and value >= before:
                rates[name] = (value - before) / span
        return rates

    def _base(self, at: float) -> _Sample | None:
        chosen: _Sample | None = None
        for sample in self._samples:
            if at - sample.at >= self.rate_window_s:
                chosen = sample
            else:
                break
        if chosen is None and self._samples and at - self._samples[0].at > 0:
            chosen = self._samples[0]
        return chosen

    def history(
        self, name: str, window_s: float, at: float, step_s: float = 0.0
    ) -> list[tuple[float, float]]:
        """``(time, rate per second)`` of ``name`` over the last ``window_s`` seconds.

        Rates are taken between stored samples at least ``step_s`` apart (which smooths and
        bounds the number of points); a drop (counter reset) is shown as zero rather than a
        negative spike.
        """
        with self._lock:
            recent = [s for s in self._samples if at - s.at <= window_s]
        samples: list[_Sample] = []
        for sample in recent:
            if not samples or sample.at - samples[-1].at >= step_s:
                samples.append(sample)
        points: list[tuple[float, float]] = []
        for older, newer in pairwise(samples):
            if name not in older.values or name not in newer.values:
                continue
            span = newer.at - older.at
            delta = newer.values[name] - older.values[name]
            points.append((newer.at, max(delta, 0.0) / span))
        return points
