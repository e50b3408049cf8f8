"""Timestamps on the wire: ISO-8601 strings with an offset, and protobuf ``Timestamp``s.

Both become timezone-aware :class:`datetime.datetime` values. Fractions finer than a
microsecond (the feed sends up to nanoseconds) are truncated, never rounded, so a time never
moves into the next second, or the next day.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from stockbit.errors import ProtocolError

WIB = timezone(timedelta(hours=7), "WIB")
"""Jakarta time (Waktu Indonesia Barat), UTC+7, no daylight saving."""

_ISO = re.compile(
    r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:[.,](\d{1,9}))?"
    r"(Z|[+-]\d{2}:?\d{2})?\Z"
)
_MAX_NANOS = 999_999_999


def parse_iso(value: str) -> datetime:
    """Parse an ISO-8601 date-time with 0–9 fractional digits into an aware datetime.

    A missing offset means Jakarta time: the feed's strings always carry ``+07:00``, and the
    one client that sees bare times treats them as WIB.
    """
    match = _ISO.match(value)
    if match is None:
        raise ProtocolError(f"not an ISO-8601 date-time: {value[:40]!r}")
    date, clock, fraction, offset = match.groups()
    micros = (fraction or "").ljust(6, "0")[:6]
    if offset is None:
        zone = "+07:00"
    elif offset == "Z":
        zone = "+00:00"
    elif ":" not in offset:
        zone = f"{offset[:3]}:{offset[3:]}"
    else:
        zone = offset
    try:
        return datetime.fromisoformat(f"{date}T{clock}.{micros}{zone}")
    except ValueError:
        raise ProtocolError(f"date-time out of range: {value[:40]!r}") from None


def from_epoch(seconds: int, nanos: int) -> datetime:
    """Turn a protobuf ``Timestamp`` (UTC seconds + nanoseconds) into an aware datetime."""
    if not 0 <= nanos <= _MAX_NANOS:
        raise ProtocolError(f"Timestamp nanos out of range: {nanos}")
    try:
        return datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanos // 1000)
    except (OverflowError, OSError, ValueError):
        raise ProtocolError(f"Timestamp seconds out of range: {seconds}") from None


def to_epoch(moment: datetime) -> tuple[int, int]:
    """Split an aware datetime into protobuf ``Timestamp`` (seconds, nanos)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    seconds = delta.days * 86_400 + delta.seconds
    return seconds, delta.microseconds * 1000


def wib_iso(moment: datetime) -> str:
    """Format in Jakarta time with microseconds: ``2026-03-02T10:15:30.123456+07:00``."""
    return moment.astimezone(WIB).isoformat(timespec="microseconds")
