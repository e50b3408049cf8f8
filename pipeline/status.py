"""Process status records (the heartbeat keys) and ``obpipe status``.

Each live ingestor and writer keeps a JSON document under ``ingestor:<id>`` / ``writer:<id>``
with a TTL refreshed by its heartbeat, and its id in the ``ingestors`` / ``writers`` ZSET
scored by the heartbeat time. A process that dies stops refreshing and disappears by itself.
The web app and this command only read these keys.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import redis

from pipeline.keys import Keys

CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
AUTH_FAILED = "auth_failed"
STOPPED = "stopped"
STATES = (CONNECTING, CONNECTED, RECONNECTING, AUTH_FAILED, STOPPED)


@dataclass
class IngestorStatus:
    """What an ingestor publishes about itself (times are ISO-8601 strings or None)."""

    id: str
    state: str = CONNECTING
    started_at: str | None = None
    connected_since: str | None = None
    frames: int = 0
    reconnects: int = 0
    tickers: list[str] = field(default_factory=list)
    last_frame_at: str | None = None
    last_error: str | None = None
    token_expires_at: str | None = None
    bad_frames: int = 0
    buffered: int = 0
    overflow: int = 0
    gaps: int = 0
    updated_at: str | None = None

    def to_json(self) -> str:
        """Serialise for the status key."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> IngestorStatus:
        """Read a status key back, ignoring fields a newer version added."""
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class WriterStatus:
    """What a writer publishes about itself."""

    id: str
    state: str = "running"
    started_at: str | None = None
    partitions: list[int] = field(default_factory=list)
    rows: int = 0
    trades: int = 0
    files_open: int = 0
    lag_entries: int = 0
    lag_seconds: float = 0.0
    last_commit_at: str | None = None
    last_error: str | None = None
    duplicates_dropped: int = 0
    dead_letters: int = 0
    updated_at: str | None = None

    def to_json(self) -> str:
        """Serialise for the status key."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WriterStatus:
        """Read a status key back, ignoring fields a newer version added."""
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def read_live(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Collect the live ingestors and writers, and the desired tickers."""
    ingestors = []
    for pid in sorted(_members(client, keys.ingestors)):
        raw = client.get(keys.ingestor(pid))
        if raw is not None:
            ingestors.append(IngestorStatus.from_json(_text(raw)))
    writers = []
    for pid in sorted(_members(client, keys.writers)):
        raw = client.get(keys.writer(pid))
        if raw is not None:
            writers.append(WriterStatus.from_json(_text(raw)))
    desired = sorted(_text(t) for t in client.smembers(keys.desired_tickers))
    return {"ingestors": ingestors, "writers": writers, "tickers": desired}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _members(client: redis.Redis, key: str) -> list[str]:
    return [_text(m) for m in cast(list[bytes | str], client.zrange(key, 0, -1))]
