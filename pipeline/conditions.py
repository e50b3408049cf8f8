"""Raise and clear alert conditions from any process, through Redis.

The alert monitor (:mod:`jobs.monitor`) derives most conditions itself from the status keys
and the gap stream. Trouble only one process can see — the token refresher failing, the
refresh token about to expire, the raw archive unable to write — is reported here instead::

    from pipeline.conditions import REFRESH_FAILED, raise_condition, clear_condition

    raise_condition(client, keys, REFRESH_FAILED, CRITICAL, "Token refresh failed",
                    detail="HTTP 401 from the refresh endpoint; 5 h of access token left")
    ...
    clear_condition(client, keys, REFRESH_FAILED)          # after the next refresh worked

Raising is idempotent (call it on every failure; the monitor alerts once, when it starts)
and so is clearing (call it on every success). One HSET/HDEL on ``alerts:conditions``;
nothing is sent from the calling process, so it never waits on a notification service.
``ttl_s`` makes a condition lapse by itself unless raised again, for a process that may
die before it can clear what it raised. Asynchronous callers (the ingestor) use the
``_async`` twins with a ``redis.asyncio`` client.

One-off *notices* (the daily recap) go through :func:`raise_event` instead: an entry of the
capped ``alerts:events`` stream that the monitor turns into one ``event`` alert (rate limit,
sender and the page's list as for its own alerts), after the cursor it keeps.

Title and detail must be built from non-secret facts (never a token, key or URL with a
password); the monitor scrubs them again before anything leaves the machine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import redis.asyncio

from pipeline.alerts import AlertError, Condition
from pipeline.keys import Keys

log = logging.getLogger(__name__)

REFRESH_FAILED = "token_refresh_failed"
"""The access token could not be renewed from the refresh token (raised by the refresher)."""
REFRESH_EXPIRING = "refresh_token_expiring"
"""The refresh token expires within 2 days: log in again soon (raised by the refresher)."""
RAW_ARCHIVE = "raw_archive"
"""The raw-frame archive cannot write (raised by the archiver)."""
EVENTS_MAXLEN = 1000
"""Notices kept in ``alerts:events`` (approximately)."""
EVENTS_PER_READ = 100


@dataclass(frozen=True)
class Raised:
    """A condition as another process raised it."""

    condition: Condition
    raised_at: datetime
    expires_at: datetime | None
    source: str


def encode(
    condition: Condition, now: datetime, ttl_s: float | None = None, source: str = ""
) -> str:
    """The ``alerts:conditions`` hash value of a raised condition."""
    return json.dumps(
        {
            "severity": condition.severity,
            "title": condition.title,
            "detail": condition.detail,
            "raised_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=ttl_s)).isoformat() if ttl_s else None,
            "source": source,
        },
        separators=(",", ":"),
    )


def decode(condition_id: str, text: str) -> Raised:
    """Read a hash value back; :class:`AlertError` or ``ValueError`` if it is malformed."""
    data: dict[str, Any] = json.loads(text)
    condition = Condition(
        condition_id, str(data["severity"]), str(data["title"]), str(data.get("detail") or "")
    )
    expires = data.get("expires_at")
    return Raised(
        condition=condition,
        raised_at=datetime.fromisoformat(data["raised_at"]),
        expires_at=datetime.fromisoformat(expires) if expires else None,
        source=str(data.get("source") or ""),
    )


def _value(
    condition_id: str,
    severity: str,
    title: str,
    *,
    detail: str,
    ttl_s: float | None,
    source: str,
    now: datetime | None,
) -> str:
    # Validates the id, severity and title here, in the raising process, so a mistake shows
    # up in its tests rather than as a condition the monitor silently skips.
    condition = Condition(condition_id, severity, title, detail)
    return encode(condition, now or datetime.now(UTC), ttl_s, source)


def raise_condition(
    client: redis.Redis,
    keys: Keys,
    condition_id: str,
    severity: str,
    title: str,
    *,
    detail: str = "",
    ttl_s: float | None = None,
    source: str = "",
    now: datetime | None = None,
) -> None:
    """Report that ``condition_id`` is active (again). ``severity``: ``critical`` or
    ``warning``; ``ttl_s``: lapse unless raised again within it; ``source``: the process
    id, shown on the page. Raises :class:`pipeline.alerts.AlertError` for a bad id or
    severity, ``redis.RedisError`` if Redis is unreachable."""
    value = _value(
        condition_id, severity, title, detail=detail, ttl_s=ttl_s, source=source, now=now
    )
    client.hset(keys.alert_conditions, condition_id, value)


def clear_condition(client: redis.Redis, keys: Keys, condition_id: str) -> None:
    """Report that ``condition_id`` is over (a no-op if it was not raised)."""
    client.hdel(keys.alert_conditions, condition_id)


async def raise_condition_async(
    client: redis.asyncio.Redis,
    keys: Keys,
    condition_id: str,
    severity: str,
    title: str,
    *,
    detail: str = "",
    ttl_s: float | None = None,
    source: str = "",
    now: datetime | None = None,
) -> None:
    """:func:`raise_condition` for a ``redis.asyncio`` client."""
    value = _value(
        condition_id, severity, title, detail=detail, ttl_s=ttl_s, source=source, now=now
    )
    await client.hset(keys.alert_conditions, condition_id, value)


async def clear_condition_async(client: redis.asyncio.Redis, keys: Keys, condition_id: str) -> None:
    """:func:`clear_condition` for a ``redis.asyncio`` client."""
    await client.hdel(keys.alert_conditions, condition_id)


def parse_raised(
    entries: Mapping[str, str], now: datetime
) -> tuple[list[Raised], list[str], list[str]]:
    """Split the hash into (live conditions, expired ids, malformed ids)."""
    live: list[Raised] = []
    expired: list[str] = []
    bad: list[str] = []
    for condition_id, text in sorted(entries.items()):
        try:
            raised = decode(condition_id, text)
        except (AlertError, ValueError, KeyError, TypeError):
            bad.append(condition_id)
            continue
        if raised.expires_at is not None and raised.expires_at <= now:
            expired.append(condition_id)
        else:
            live.append(raised)
    return live, expired, bad


def raise_event(
    client: redis.Redis,
    keys: Keys,
    event_id: str,
    severity: str,
    title: str,
    *,
    detail: str = "",
    source: str = "",
    now: datetime | None = None,
) -> str:
    """Have the monitor send one notice (``severity`` usually ``info``): appended to the
    ``alerts:events`` stream; returns its entry id. Raises :class:`AlertError` for a bad id
    or severity, ``redis.RedisError`` if Redis is unreachable."""
    condition = Condition(event_id, severity, title, detail)
    fields = {
        "id": condition.id,
        "severity": condition.severity,
        "title": condition.title,
        "detail": condition.detail,
        "source": source,
        "raised_at": (now or datetime.now(UTC)).isoformat(),
    }
    entry = client.xadd(keys.alert_events, fields, maxlen=EVENTS_MAXLEN, approximate=True)  # type: ignore[arg-type]
    return entry.decode() if isinstance(entry, bytes) else str(entry)


def read_events(client: redis.Redis, keys: Keys, cursor: str) -> tuple[list[Condition], str]:
    """The notices raised after ``cursor`` (at most :data:`EVENTS_PER_READ`) and the new
    cursor; malformed entries are skipped (and logged)."""
    entries: Any = client.xrange(keys.alert_events, f"({cursor}", "+", count=EVENTS_PER_READ)
    events: list[Condition] = []
    for entry_id, fields in entries:
        cursor = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        item = {
            (k.decode() if isinstance(k, bytes) else str(k)): (
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            )
            for k, v in fields.items()
        }
        try:
            events.append(
                Condition(item["id"], item["severity"], item["title"], item.get("detail", ""))
            )
        except (AlertError, KeyError):
            log.warning("ignoring malformed notice %s", cursor)
    return events, cursor
