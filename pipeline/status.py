"""Process status records (the heartbeat keys) and what ``obpipe status`` prints of them.

Each live ingestor and writer keeps a JSON document under ``ingestor:<id>`` / ``writer:<id>``
with a TTL refreshed by its heartbeat, and its id in the ``ingestors`` / ``writers`` ZSET
scored by the heartbeat time. A process that dies stops refreshing and disappears by itself.
The web app and this command only read these keys.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, cast

import redis

from pipeline.days import today
from pipeline.gaplog import day_gaps
from pipeline.keys import Keys

CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
AUTH_FAILED = "auth_failed"
STOPPED = "stopped"
STATES = (CONNECTING, CONNECTED, RECONNECTING, AUTH_FAILED, STOPPED)


@dataclass
class StatusDocument:
    """JSON for a status key, shared by the process kinds' status dataclasses."""

    def to_json(self) -> str:
        """Serialise for the status key."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Read a status key back, ignoring fields a newer version added."""
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class IngestorStatus(StatusDocument):
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
    # The token store as this ingestor reads it (ingestor/refresher.py); never a token.
    refresh_expires_at: str | None = None
    token_refresh_state: str | None = None
    """``ok``, ``failing``, ``refused``, ``expired``, ``read_only`` (a bare-JWT file),
    ``no_refresh_token``, ``no_token``; None without a token file."""
    token_refresh_error: str | None = None
    token_refreshed_at: str | None = None
    token_refreshed_by: str | None = None
    """The ingestor whose refresh wrote the current pair: the refresher of the moment."""
    token_refresh_due_at: str | None = None
    token_handovers: int = 0
    """Sockets moved to a newer token, make-before-break."""
    # The raw-frame archive (ingestor/archive.py).
    raw_state: str = "off"
    """``off`` (RAW_ARCHIVE=false), ``ok``, ``dropping`` (frames dropped within the last
    minute), ``disk_floor`` (below RAW_MIN_FREE_MB), ``error`` (cannot write; retrying)."""
    raw_frames: int = 0
    raw_bytes: int = 0
    raw_dropped: int = 0
    """Frames received but not archived (counted, never silent)."""
    raw_error: str | None = None


@dataclass
class WriterStatus(StatusDocument):
    """What a writer publishes about itself."""

    id: str
    state: str = "running"
    started_at: str | None = None
    partitions: list[int] = field(default_factory=list)
    rows: int = 0
    trades: int = 0
    prices: int = 0
    """LivePrice rows written (``rows`` counts order-book and gap rows)."""
    files_open: int = 0
    lag_entries: int = 0
    lag_seconds: float = 0.0
    last_commit_at: str | None = None
    last_error: str | None = None
    duplicates_dropped: int = 0
    dead_letters: int = 0
    updated_at: str | None = None


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


# ---- `obpipe status` -----------------------------------------------------------------------


def _age(iso: str | None, now: datetime) -> str:
    if not iso:
        return "-"
    try:
        seconds = (now - datetime.fromisoformat(iso)).total_seconds()
    except ValueError:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render(
    client: redis.Redis,
    keys: Keys,
    gaps: int = 10,
    now: datetime | None = None,
    data_dir: Path | None = None,
) -> str:
    """The terminal report of ``obpipe status``: processes, tickers, today's gaps (from the
    gap files under ``data_dir`` and the gap stream), dead letters."""
    now = now or datetime.now(UTC)
    live = read_live(client, keys)
    lines = [f"ingestors ({len(live['ingestors'])}):"]
    for ing in live["ingestors"]:
        lines.append(
            f"  {ing.id}  {ing.state:<12} up {_age(ing.connected_since, now):>5}  "
            f"frames {ing.frames:,}  reconnects {ing.reconnects}  "
            f"last frame {_age(ing.last_frame_at, now)} ago  buffered {ing.buffered:,}  "
            f"overflow {ing.overflow:,}  bad {ing.bad_frames:,}"
        )
        lines.append(f"      tickers ({len(ing.tickers)}): {','.join(ing.tickers) or '-'}")
        if ing.token_expires_at:
            lines.append(f"      token expires {ing.token_expires_at}")
        if ing.token_refresh_state:
            lines.append(
                f"      refresh: {ing.token_refresh_state}, refresh token expires "
                f"{ing.refresh_expires_at or '-'}, last {ing.token_refreshed_at or '-'} by "
                f"{ing.token_refreshed_by or '-'}, next {ing.token_refresh_due_at or '-'}"
                + (f" ({ing.token_refresh_error})" if ing.token_refresh_error else "")
            )
        if ing.last_error:
            lines.append(f"      last error: {ing.last_error}")
    lines.append(f"writers ({len(live['writers'])}):")
    for wr in live["writers"]:
        lines.append(
            f"  {wr.id}  {wr.state:<10} partitions {','.join(map(str, wr.partitions)) or '-'}  "
            f"rows {wr.rows:,}  lag {wr.lag_entries:,} ({wr.lag_seconds:.1f}s)"
            + (f"  last error: {wr.last_error}" if wr.last_error else "")
        )
    lines.append(f"desired tickers ({len(live['tickers'])}): {','.join(live['tickers']) or '-'}")
    counters = {
        _text(k): _text(v)
        for k, v in cast(dict[bytes, bytes], client.hgetall(keys.counters)).items()
    }
    if counters:
        lines.append("counters: " + "  ".join(f"{k}={v}" for k, v in sorted(counters.items())))
    # From the day's gap file and the stream's records not copied yet: the writer trims
    # the stream, the file keeps them (pipeline.gaplog).
    todays = day_gaps(client, keys, data_dir, today(now))
    lines.append(f"gaps today ({min(gaps, len(todays))} shown, {len(todays)} in all):")
    for shown in todays[:gaps]:
        gap = shown.record
        lines.append(
            f"  {gap.start} → {gap.end}  {gap.cause:<13} "
            f"{gap.ingestor}  tickers {','.join(gap.tickers) or 'all'}"
            + (f"  ({gap.detail})" if gap.detail else "")
        )
    dead = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrevrange(keys.deadletter, count=3))
    lines.append(f"dead letters: {client.xlen(keys.deadletter)}")
    for _, fields in dead:
        item = {_text(k): _text(v) for k, v in fields.items()}
        lines.append(f"  {item.get('at', '?')}  {item.get('size', '?')} bytes: {item.get('error')}")
    return "\n".join(lines)


CHECKS = ("redis", "ingestor", "writer")


def check(client: redis.Redis, keys: Keys, kind: str, host: str) -> tuple[bool, str]:
    """Is this host's ``kind`` process alive? Its id defaults to ``hostname-pid``, and its
    status key exists only while its heartbeat runs (TTL)."""
    try:
        client.ping()
        if kind == "redis":
            return True, "redis answers"
        registry, status_key = (
            (keys.ingestors, keys.ingestor) if kind == "ingestor" else (keys.writers, keys.writer)
        )
        for member in _members(client, registry):
            if member.startswith(f"{host}-") and client.exists(status_key(member)):
                return True, f"{kind} {member} is alive"
    except redis.RedisError as exc:
        return False, f"redis unreachable: {exc}"
    return False, f"no live {kind} heartbeat from host {host}"
