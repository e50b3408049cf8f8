"""The simulator's virtual exchange clock and its Jakarta-time (WIB) text.

Exchange timestamps come from this clock, not from the machine's: a test can start the market at
``2026-03-02T23:59:58+07:00`` and run it faster than real time to cross midnight WIB. The clock
is anchored on the monotonic clock, so it never runs backwards even when the wall clock is
adjusted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from stockbit.timestamps import WIB

NANOS = 1_000_000_000
DAY_NANOS = 86_400 * NANOS
WIB_OFFSET_NANOS = 7 * 3_600 * NANOS


class Clock(Protocol):
    """Anything that tells the (virtual) time as nanoseconds since the Unix epoch."""

    def now_ns(self) -> int:
        """Current time in nanoseconds since 1970-01-01T00:00:00Z."""
        ...


class VirtualClock:
    """A clock that starts at ``start`` (default: now) and runs at ``speed`` × real time."""

    def __init__(
        self,
        start: datetime | None = None,
        speed: float = 1.0,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        if start is not None and start.tzinfo is None:
            raise ValueError("clock start needs a UTC offset")
        self._origin = time.time_ns() if start is None else to_ns(start)
        self._speed = speed
        self._monotonic_ns = monotonic_ns
        self._anchor = monotonic_ns()

    def now_ns(self) -> int:
        """Virtual nanoseconds since the epoch."""
        elapsed = self._monotonic_ns() - self._anchor
        if self._speed == 1.0:
            return self._origin + elapsed
        return self._origin + int(elapsed * self._speed)


def to_ns(moment: datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime (exact to the microsecond)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * NANOS + delta.microseconds * 1_000


def from_ns(ns: int) -> datetime:
    """An aware datetime in WIB for ``ns`` (truncated to the microsecond, never rounded)."""
    seconds, rest = divmod(ns, NANOS)
    return datetime.fromtimestamp(seconds, WIB).replace(microsecond=rest // 1_000)


def wib_day(ns: int) -> int:
    """The Jakarta calendar day of ``ns`` as a day number (days since 1970-01-01 WIB)."""
    return (ns + WIB_OFFSET_NANOS) // DAY_NANOS


def nanos_into_wib_day(ns: int) -> int:
    """Nanoseconds since the last Jakarta midnight."""
    return (ns + WIB_OFFSET_NANOS) % DAY_NANOS


class WibText:
    """Formats epoch nanoseconds as ``YYYY-MM-DDTHH:MM:SS.fffffffff+07:00`` quickly.

    The date-and-seconds prefix is cached, because in max-rate mode thousands of frames share
    one second and ``strftime`` would dominate the cost of building a frame.
    """

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def format(self, ns: int, digits: int = 9) -> str:
        """Format ``ns`` in WIB with ``digits`` (1–9) fractional digits, truncated."""
        seconds, fraction = divmod(ns, NANOS)
        prefix = self._cache.get(seconds)
        if prefix is None:
            if len(self._cache) > 8:
                self._cache.clear()
            prefix = datetime.fromtimestamp(seconds, WIB).strftime("%Y-%m-%dT%H:%M:%S.")
            self._cache[seconds] = prefix
        return f"{prefix}{fraction:09d}"[: len(prefix) + digits] + "+07:00"
