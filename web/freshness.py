"""How the status page colours a ticker's last-update age (pure display logic).

A quiet ticker is only suspicious while continuous trading is on; in the call auctions, the
lunch break, after the close and on closed days, silence is normal, so those times are shown
as ``closed`` rather than stale. Whether trading is on comes from the IDX trading calendar
(:mod:`pipeline.calendar`), which the caller asks with its own clock's instant.
"""

from __future__ import annotations

FRESH = "ok"
AMBER = "amber"
RED = "red"
CLOSED = "closed"
NO_DATA = "none"

STALE_AMBER_S = 15.0
"""A ticker without a book update for this long during continuous trading is shown amber."""
STALE_RED_S = 60.0
"""... and red after this long."""


def freshness(age_s: float | None, trading: bool) -> str:
    """The colour of a last-update age of ``age_s`` seconds (None: never updated).

    ``none`` when the ticker never updated, ``closed`` when continuous trading is off
    (``trading`` False), otherwise ``ok`` / ``amber`` / ``red`` by :data:`STALE_AMBER_S` and
    :data:`STALE_RED_S`.
    """
    if age_s is None:
        return NO_DATA
    if not trading:
        return CLOSED
    if age_s >= STALE_RED_S:
        return RED
    if age_s >= STALE_AMBER_S:
        return AMBER
    return FRESH
