"""The desired ticker set: read it, add to it, remove from it (``obpipe tickers``, the web).

The desired set is the Redis SET the ingestors follow (they apply a change within 2 s, without
reconnecting); the web's control endpoint edits the same SET. Codes are validated with
:mod:`pipeline.ticker` before anything is written: one bad code refuses the whole command.
"""

from __future__ import annotations

import redis

from pipeline.keys import Keys
from pipeline.ticker import normalize_all


def desired(client: redis.Redis, keys: Keys) -> list[str]:
    """The desired tickers, sorted."""
    members: set[bytes | str] = client.smembers(keys.desired_tickers)
    return sorted(m.decode() if isinstance(m, bytes) else m for m in members)


def add(client: redis.Redis, keys: Keys, codes: list[str]) -> tuple[str, ...]:
    """Validate and add codes; TickerError (nothing written) if any is invalid."""
    valid = normalize_all(codes)
    if valid:
        client.sadd(keys.desired_tickers, *valid)
    return valid


def remove(client: redis.Redis, keys: Keys, codes: list[str]) -> tuple[str, ...]:
    """Validate and remove codes; TickerError (nothing written) if any is invalid."""
    valid = normalize_all(codes)
    if valid:
        client.srem(keys.desired_tickers, *valid)
    return valid
