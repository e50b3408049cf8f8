"""A ticker's live depth: the top levels of its latest BID and OFFER snapshot.

The ticker's primary ingestor keeps them in the ticker HASH (:meth:`pipeline.keys.Keys.ticker`)
with every batch: ``bid_depth``/``offer_depth`` (the level text, top 10 levels) and
``bid_depth_at``/``offer_depth_at`` (when that snapshot was received). One HMGET reads them,
so the depth never depends on what the writers have already trimmed from the streams. A side
never seen answers ``null``, and the page says so.
"""

from __future__ import annotations

from typing import Any

import redis

from pipeline.keys import Keys
from stockbit.book import parse_levels
from stockbit.errors import ProtocolError
from stockbit.messages import LOT

LEVELS = 10
FIELDS = ("bid_depth", "bid_depth_at", "offer_depth", "offer_depth_at")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _side(levels: str | None, received: str | None, depth: int) -> dict[str, Any] | None:
    if levels is None:
        return None
    try:
        parsed = parse_levels(levels)[:depth]
    except ProtocolError as exc:
        return {"received": received, "levels": [], "error": str(exc)}
    return {
        "received": received,
        "levels": [
            {
                "price": level.price,
                "orders": level.orders,
                "shares": level.shares,
                "lots": level.shares // LOT if level.shares % LOT == 0 else level.lots,
            }
            for level in parsed
        ],
    }


def depth_from(code: str, values: list[Any], depth: int = LEVELS) -> dict[str, Any]:
    """The ``/api/depth/<code>`` answer from the HMGET reply of :data:`FIELDS`: up to
    ``depth`` levels per side, best first, each side with the receive time of its snapshot
    (``received``), or ``null`` for a side never seen."""
    bid, bid_at, offer, offer_at = (_text(v) for v in values)
    return {"code": code, "bid": _side(bid, bid_at, depth), "offer": _side(offer, offer_at, depth)}


def depth_document(client: redis.Redis, keys: Keys, code: str) -> dict[str, Any]:
    """The depth of ``code`` read now (one HMGET)."""
    return depth_from(code, client.hmget(keys.ticker(code), FIELDS))
