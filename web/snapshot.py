"""Redis → the status document served at ``/api/status`` (ARCHITECTURE.md §7).

Two steps, so the shaping can be tested without Redis:

* :func:`read_state` does all the Redis reads (three pipelined round trips, whatever the
  number of processes and tickers) and returns a :class:`RawState` of plain strings;
* :func:`build_status` turns a :class:`RawState` plus the time and the measured rates into
  the JSON-ready dict. Its only I/O is ``os.stat`` of today's CSV files, on paths it builds
  itself under ``DATA_DIR`` from validated parts — never from request input.

Everything shown comes from Redis — the status keys the processes publish, the per-ticker
hashes, the partition streams' lengths and consumer-group figures, the dead-letter stream,
the counters hash and the day's row counts — except the gaps: the writer trims the gap
stream once a record is on disk, so today's gaps are read from the day's gap file plus the
records still in the stream (:mod:`pipeline.gaplog`), and stay listed all day. Each ticker's
``time_covered_pct`` is the share of today's continuous trading so far in none of its gaps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import redis

from pipeline.calendar import TradingCalendar
from pipeline.gaplog import Gap, coverage, merge, read_files
from pipeline.keys import WRITER_GROUP, Keys
from pipeline.layout import ORDERBOOK, Layout, book_file, parse_file
from pipeline.status import CONNECTED, IngestorStatus, WriterStatus
from pipeline.ticker import TickerError, normalize
from stockbit.errors import ProtocolError
from stockbit.timestamps import WIB, parse_iso
from web import rates as rate_names
from web.freshness import freshness

GAP_SCAN = 500
"""How many of the newest gap records are looked at for today's list."""
GAPS_SHOWN = 200
HISTORY_WINDOW_S = 300.0
"""The sparkline covers the last five minutes."""
HISTORY_STEP_S = 2.0
TICKER_FIELDS = (
    "frames",
    "trades",
    "last_update",
    "best_bid",
    "best_bid_lots",
    "best_offer",
    "best_offer_lots",
    "prices",
    "last_price",
    "prev_close",
    "day_lots",
    "iep_frames",
    "bbo_frames",
)
"""The fields of a ticker HASH the status document and the metrics use."""

_S = TypeVar("_S", IngestorStatus, WriterStatus)


@dataclass
class StreamInfo:
    """One partition stream: entries retained, and the writers group's view of it."""

    partition: int
    length: int
    pending: int | None = None
    lag: int | None = None


@dataclass
class RawState:
    """What :func:`read_state` fetched, decoded to ``str`` but otherwise unshaped."""

    day: str
    ingestors: list[tuple[IngestorStatus, float]] = field(default_factory=list)
    """Each live ingestor's status with its heartbeat score (ms since epoch)."""
    writers: list[tuple[WriterStatus, float]] = field(default_factory=list)
    desired: list[str] = field(default_factory=list)
    tickers: dict[str, dict[str, str]] = field(default_factory=dict)
    streams: list[StreamInfo] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    """The day's gaps, newest first (gap files, then the stream's records not copied yet)."""
    day_counts: dict[str, str] = field(default_factory=dict)
    deadletter_len: int = 0
    counters: dict[str, str] = field(default_factory=dict)


def _decode(value: Any) -> Any:
    """bytes → str throughout a reply, so clients with or without decode_responses work."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        return {_decode(k): _decode(v) for k, v in value.items()}
    return value


def read_state(client: redis.Redis, keys: Keys, day: str, data_dir: Path | None = None) -> RawState:
    """Fetch everything the status page shows, in three pipelined round trips, and the day's
    gap files under ``data_dir`` (without it, only the gap stream's untrimmed records).

    Raises ``redis.RedisError`` when Redis cannot be reached (the app answers 503).
    """
    pipe = client.pipeline(transaction=False)
    pipe.zrange(keys.ingestors, 0, -1, withscores=True)
    pipe.zrange(keys.writers, 0, -1, withscores=True)
    pipe.smembers(keys.desired_tickers)
    pipe.xrevrange(keys.gaps, count=GAP_SCAN)
    pipe.hgetall(keys.day_counts(day))
    pipe.xlen(keys.deadletter)
    pipe.hgetall(keys.counters)
    for name in keys.streams():
        pipe.xlen(name)
    first = _decode(pipe.execute())
    ingestor_ids, writer_ids, desired, gaps, day_counts, dead, counters = first[:7]
    # Listed by id, not by heartbeat, so the cards keep their places between polls.
    ingestor_ids, writer_ids = sorted(ingestor_ids), sorted(writer_ids)
    lengths = [int(n) for n in first[7:]]

    state = RawState(
        day=day,
        desired=sorted(desired),
        gaps=merge(day, read_files(data_dir, day) if data_dir is not None else [], gaps),
        day_counts=dict(day_counts),
        deadletter_len=int(dead),
        counters=dict(counters),
        streams=[StreamInfo(p, n) for p, n in enumerate(lengths)],
    )

    pipe = client.pipeline(transaction=False)
    for pid, _ in ingestor_ids:
        pipe.get(keys.ingestor(pid))
    for pid, _ in writer_ids:
        pipe.get(keys.writer(pid))
    busy = [info for info in state.streams if info.length > 0]
    for info in busy:
        pipe.xinfo_groups(keys.stream(info.partition))
    # A stream that vanished between the two round trips answers XINFO with an error; that
    # must not turn the whole page into a 503, so errors come back as values here.
    second = _decode(pipe.execute(raise_on_error=False))
    _raise_connection_errors(second)
    statuses = second[: len(ingestor_ids)]
    for (pid, score), raw in zip(ingestor_ids, statuses, strict=True):
        status = _status(IngestorStatus, raw)
        if status is not None and status.id == pid:
            state.ingestors.append((status, float(score)))
    offset = len(ingestor_ids)
    for (pid, score), raw in zip(
        writer_ids, second[offset : offset + len(writer_ids)], strict=True
    ):
        writer = _status(WriterStatus, raw)
        if writer is not None and writer.id == pid:
            state.writers.append((writer, float(score)))
    for info, groups in zip(busy, second[offset + len(writer_ids) :], strict=True):
        if isinstance(groups, list):
            _group_figures(info, groups)

    # Tickers shown: the desired set, plus anything a live ingestor still holds (a ticker just
    # removed keeps its row until the ingestor lets go of it).
    codes = set(state.desired)
    for status, _ in state.ingestors:
        codes.update(status.tickers)
    ordered = sorted(codes)
    pipe = client.pipeline(transaction=False)
    for code in ordered:
        # Named fields, not HGETALL: the HASH also holds each side's depth text.
        pipe.hmget(keys.ticker(code), TICKER_FIELDS)
    for code, values in zip(ordered, _decode(pipe.execute()), strict=True):
        state.tickers[code] = {
            name: value
            for name, value in zip(TICKER_FIELDS, values, strict=True)
            if value is not None
        }
    return state


def _raise_connection_errors(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, redis.ConnectionError | redis.TimeoutError):
            raise reply


def _status(kind: type[_S], raw: Any) -> _S | None:
    if not isinstance(raw, str):
        return None
    try:
        return kind.from_json(raw)
    except (ValueError, TypeError):
        # One process publishing a malformed status must not hide everyone else's.
        return None


def _group_figures(info: StreamInfo, groups: list[Any]) -> None:
    for group in groups:
        if isinstance(group, dict) and group.get("name") == WRITER_GROUP:
            info.pending = _int(group.get("pending"))
            # ``lag`` exists from Redis 7 on, and is nil when Redis cannot compute it.
            info.lag = _int(group.get("lag"))


def _int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


def _number(value: Any) -> int | float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() else number


def parse_instant(value: Any) -> datetime | None:
    """An ISO-8601 string or a Unix time (seconds or milliseconds) → aware datetime, or None."""
    if value is None or value == "":
        return None
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        number = None
    try:
        if number is not None:
            # Anything past the year 5138 in seconds is really milliseconds.
            seconds = number / 1000 if number > 1e11 else number
            return datetime.fromtimestamp(seconds, UTC)
        return parse_iso(text)
    except (ProtocolError, OverflowError, OSError, ValueError):
        return None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(WIB).isoformat(timespec="seconds")


def _seconds(later: datetime, earlier: datetime | None) -> float | None:
    return None if earlier is None else round((later - earlier).total_seconds(), 3)


def counters_of(raw: RawState) -> dict[str, float]:
    """The cumulative counters whose rates the page shows, keyed for :class:`RateTracker`."""
    values: dict[str, float] = {}
    total = 0.0
    for code, fields in raw.tickers.items():
        frames = _number(fields.get("frames"))
        if frames is not None:
            values[f"t:{code}"] = float(frames)
            total += frames
        trades = _number(fields.get("trades"))
        if trades is not None:
            values[f"tr:{code}"] = float(trades)
    values[rate_names.FRAMES] = total
    for status, _ in raw.ingestors:
        values[f"i:{status.id}"] = float(status.frames)
    rows = 0.0
    for writer, _ in raw.writers:
        values[f"w:{writer.id}"] = float(writer.rows)
        rows += writer.rows
    values["rows"] = rows
    return values


def file_path(data_dir: Path, name: str, day: str) -> Path | None:
    """The CSV path for a ``day_counts`` field, built from its validated parts, or None.

    The field comes from Redis, not from the request; still, only ``<day>_<CODE>.csv``
    names for the given day are accepted, and the path is put together here, so nothing in
    Redis can point the server at another file.
    """
    try:
        parts = parse_file(name)
    except ValueError:
        return None
    if parts.kind != ORDERBOOK or parts.day != day or parts.code is None:
        return None
    try:
        code = normalize(parts.code)
    except TickerError:
        return None
    if code != parts.code:
        return None
    return Layout(data_dir).path(book_file(day, code))


def _stat_size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def build_status(
    raw: RawState,
    *,
    now: datetime,
    rates: Mapping[str, float],
    history: list[tuple[float, float]],
    data_dir: Path,
    read_only: bool,
    calendar: TradingCalendar,
    file_size: Callable[[Path], int | None] = _stat_size,
) -> dict[str, Any]:
    """Shape the status document (see the README's API section for the field list).

    ``calendar`` (the IDX trading calendar, built once from the settings) says which phase
    the market is in at ``now``; ticker staleness only counts during continuous trading.
    """
    market = calendar.market_state(now)
    now_ms = now.timestamp() * 1000

    holders: dict[str, list[str]] = {}
    ingestors = []
    for status, beat in raw.ingestors:
        connected_since = parse_instant(status.connected_since)
        started = parse_instant(status.started_at)
        expires = parse_instant(status.token_expires_at)
        for code in status.tickers:
            holders.setdefault(code, []).append(status.id)
        ingestors.append(
            {
                "id": status.id,
                "state": status.state,
                "started_at": _iso(started),
                "process_uptime_s": _seconds(now, started),
                "connected_since": _iso(connected_since),
                "uptime_s": _seconds(now, connected_since) if status.state == CONNECTED else None,
                "frames": status.frames,
                "frames_per_s": _rate(rates, f"i:{status.id}"),
                "reconnects": status.reconnects,
                "tickers": sorted(status.tickers),
                "last_frame_at": _iso(parse_instant(status.last_frame_at)),
                "last_error": status.last_error,
                "token_expires_at": _iso(expires),
                "token_expires_in_s": _seconds(expires, now) if expires else None,
                "token": _token_view(status, now),
                "bad_frames": status.bad_frames,
                "buffered": status.buffered,
                "overflow": status.overflow,
                "gaps": status.gaps,
                "raw": {
                    "state": status.raw_state,
                    "frames": status.raw_frames,
                    "bytes": status.raw_bytes,
                    "dropped": status.raw_dropped,
                    "error": status.raw_error,
                },
                "heartbeat_age_s": round(max(0.0, now_ms - beat) / 1000, 3),
            }
        )

    writers = []
    writer_lag = 0
    for writer, beat in raw.writers:
        writer_lag += writer.lag_entries
        writers.append(
            {
                "id": writer.id,
                "state": writer.state,
                "partitions": sorted(writer.partitions),
                "rows": writer.rows,
                "rows_per_s": _rate(rates, f"w:{writer.id}"),
                "trades": writer.trades,
                "prices": writer.prices,
                "lag": writer.lag_entries,
                "lag_seconds": writer.lag_seconds,
                "files_open": writer.files_open,
                "last_commit_at": _iso(parse_instant(writer.last_commit_at)),
                "last_error": writer.last_error,
                "dead_letters": writer.dead_letters,
                "duplicates_dropped": writer.duplicates_dropped,
                "heartbeat_age_s": round(max(0.0, now_ms - beat) / 1000, 3),
            }
        )

    desired = set(raw.desired)
    covered = coverage(raw.gaps, raw.tickers, calendar, now)
    tickers: dict[str, dict[str, Any]] = {}
    for code in sorted(raw.tickers):
        fields = raw.tickers[code]
        updated = parse_instant(fields.get("last_update"))
        age = _seconds(now, updated)
        bid = _number(fields.get("best_bid"))
        offer = _number(fields.get("best_offer"))
        spread = offer - bid if bid and offer else None
        # From the last LivePrice (the sink's HASH): the day's change against the previous close.
        last = _number(fields.get("last_price"))
        previous = _number(fields.get("prev_close"))
        change = last - previous if last is not None and previous else None
        tickers[code] = {
            "frames": _number(fields.get("frames")) or 0,
            "frames_per_s": _rate(rates, f"t:{code}"),
            "trades": _number(fields.get("trades")) or 0,
            "trades_per_s": _rate(rates, f"tr:{code}"),
            "last_update": _iso(updated),
            "age_s": age,
            "freshness": freshness(age, market.continuous),
            "best_bid": bid,
            "best_offer": offer,
            "best_bid_lots": _number(fields.get("best_bid_lots")),
            "best_offer_lots": _number(fields.get("best_offer_lots")),
            "spread": spread,
            "spread_bps": (
                round(spread / ((bid + offer) / 2) * 10_000, 1)
                if spread is not None and bid and offer
                else None
            ),
            "prices": _number(fields.get("prices")) or 0,
            "last_price": last,
            "prev_close": previous,
            "change": change,
            "change_pct": (
                round(change / previous * 100, 2) if change is not None and previous else None
            ),
            "day_lots": _number(fields.get("day_lots")),
            "iep_frames": _number(fields.get("iep_frames")) or 0,
            "bbo_frames": _number(fields.get("bbo_frames")) or 0,
            "time_covered_pct": covered[code],
            "desired": code in desired,
            "ingestors": sorted(holders.get(code, [])),
        }

    gaps = _gaps_today(raw)
    known_lags = [s.lag for s in raw.streams if s.lag is not None]
    # Ingestors count undecodable frames as ``bad_frames``, writers undecodable entries as
    # ``dead_letters``; both land in the capped dead-letter stream, so its length undercounts
    # once the cap is reached.
    dead_total = (_int(raw.counters.get("bad_frames")) or 0) + (
        _int(raw.counters.get("dead_letters")) or 0
    )
    return {
        "now": _iso(now),
        "day": raw.day,
        "read_only": read_only,
        "market": {
            "open": market.open,
            # What the page prints after "IDX open ·"; None while closed or at lunch.
            "session": market.phase.label if market.open else None,
            "phase": market.phase.value,
            "continuous": market.continuous,
            "next_change_at": _iso(market.next_change_at),
            "next_phase": market.next_phase.value,
            "holiday": calendar.closure_reason(now),
        },
        "ingestors": ingestors,
        "writers": writers,
        "tickers": tickers,
        "desired_tickers": sorted(desired),
        "throughput": {
            "frames_per_s": _rate(rates, rate_names.FRAMES),
            "rows_per_s": _rate(rates, "rows"),
            "window_s": HISTORY_WINDOW_S,
            "history": [[round(at, 3), round(value, 3)] for at, value in history],
        },
        "streams": {
            "partitions": len(raw.streams),
            "length": sum(s.length for s in raw.streams),
            "pending": sum(s.pending or 0 for s in raw.streams),
            # Redis 7 reports the undelivered entries per group; older servers do not, and
            # then the writers' own lag figures stand in.
            "backlog": sum(known_lags) if known_lags else writer_lag,
            "per_partition": [
                {"partition": s.partition, "length": s.length, "pending": s.pending, "lag": s.lag}
                for s in raw.streams
            ],
        },
        "gaps": gaps[:GAPS_SHOWN],
        "gaps_today": len(gaps),
        "files": _files(raw, data_dir, file_size),
        "dead_letters": max(raw.deadletter_len, dead_total),
        "dead_letters_stored": raw.deadletter_len,
        "counters": {k: _number(v) for k, v in sorted(raw.counters.items())},
    }


def _rate(rates: Mapping[str, float], name: str) -> float | None:
    value = rates.get(name)
    return None if value is None else round(value, 2)


def _gaps_today(raw: RawState) -> list[dict[str, Any]]:
    return [
        {
            "id": gap.id,
            "start": gap.record.start,
            "end": gap.record.end,
            "duration_s": _seconds(gap.end, gap.start),
            "cause": gap.record.cause,
            "tickers": list(gap.record.tickers),
            "ingestor": gap.record.ingestor,
            "detail": gap.record.detail,
        }
        for gap in raw.gaps
    ]


def _files(
    raw: RawState, data_dir: Path, file_size: Callable[[Path], int | None]
) -> list[dict[str, Any]]:
    files = []
    for name, rows in sorted(raw.day_counts.items()):
        path = file_path(data_dir, name, raw.day)
        if path is None:
            continue
        files.append(
            {
                "name": path.name,
                "code": path.stem.split("_", 1)[1],
                "rows": _int(rows) or 0,
                "bytes": file_size(path),
            }
        )
    return files


def _token_view(status: IngestorStatus, now: datetime) -> dict[str, Any] | None:
    """The token store as the ingestor reads it (``ingestor/refresher.py``): the refresh
    token's expiry, the last refresh and who made it, the next one, and trouble (``refused``:
    the page asks for a new token). None without a token file. Never a token."""
    if status.token_refresh_state is None:
        return None
    refresh = parse_instant(status.refresh_expires_at)
    return {
        "state": status.token_refresh_state,
        "error": status.token_refresh_error,
        "refresh_expires_at": _iso(refresh),
        "refresh_expires_in_s": _seconds(refresh, now) if refresh else None,
        "refreshed_at": _iso(parse_instant(status.token_refreshed_at)),
        "refreshed_by": status.token_refreshed_by,
        "next_refresh_at": _iso(parse_instant(status.token_refresh_due_at)),
        "handovers": status.token_handovers,
    }
