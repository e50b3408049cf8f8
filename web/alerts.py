"""The alerts the monitor made, for ``/api/status`` (``alerts``) and ``/api/alerts``.

Read from Redis only (the monitor, :mod:`jobs.monitor`, writes them): the active conditions
(``alerts:active``), the newest entries of the capped ``alerts`` stream with the delivery
state of each (``alerts:delivery``), the monitor's own status key (``alerts:monitor``: who
holds the lock, how many destinations — never the URLs) and the ``alerts_sent`` /
``alerts_failed`` counters. Two pipelined round trips.

Every text shown was scrubbed by the monitor before it was stored; nothing here adds any.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import redis

from pipeline.keys import Keys

RECENT_IN_STATUS = 20
"""Alerts ``/api/status`` carries (the page shows these)."""
RECENT_MAX = 200
"""Most alerts ``/api/alerts?limit=`` returns."""
_SHOWN = ("key", "condition", "kind", "severity", "title", "detail", "subject", "at")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _json(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        doc = json.loads(_text(value))
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _seconds(now: datetime, iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return round((now - datetime.fromisoformat(iso)).total_seconds(), 3)
    except (TypeError, ValueError):
        return None


def read_alerts(client: redis.Redis, keys: Keys, now: datetime, limit: int) -> dict[str, Any]:
    """The ``alerts`` document: ``monitor``, ``active``, ``recent`` (newest first), ``sent``,
    ``failed``. Raises ``redis.RedisError`` when Redis cannot be reached."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.alerts_monitor)
    pipe.hgetall(keys.alerts_active)
    pipe.xrevrange(keys.alerts, count=limit)
    pipe.hmget(keys.counters, ["alerts_sent", "alerts_failed"])
    monitor_raw, active_raw, entries, (sent, failed) = pipe.execute()

    recent = []
    for entry_id, raw_fields in entries:
        fields = {_text(k): _text(v) for k, v in raw_fields.items()}
        item: dict[str, Any] = {name: fields.get(name, "") for name in _SHOWN}
        item["id"] = _text(entry_id)
        item["started_at"] = fields.get("started_at") or None
        item["cleared_at"] = fields.get("cleared_at") or None
        recent.append(item)
    states = []
    if recent:
        states = client.hmget(keys.alerts_delivery, [item["key"] for item in recent])
    for item, raw in zip(recent, states, strict=True):
        item["delivery"] = _json(raw) or {"state": "unknown"}

    active = []
    for cid, raw in sorted(active_raw.items(), key=lambda kv: _text(kv[0])):
        doc = _json(raw)
        if doc is None:
            continue
        since = doc.get("since")
        active.append(
            {
                "id": _text(cid),
                "severity": doc.get("severity"),
                "title": doc.get("title"),
                "detail": doc.get("detail", ""),
                "since": since,
                "for_s": _seconds(now, since),
            }
        )
    active.sort(key=lambda a: (a["severity"] != "critical", a["since"] or ""))
    monitor = _json(monitor_raw)
    if monitor is not None:
        monitor = {
            name: monitor.get(name)
            for name in ("id", "since", "updated_at", "destinations", "services", "held", "backlog")
        }
    return {
        "monitor": monitor,
        "active": active,
        "recent": recent,
        "sent": int(sent or 0),
        "failed": int(failed or 0),
    }
