"""``/metrics``: Prometheus text built from Redis at scrape time.

A custom collector reads the same state as the status page (:func:`web.snapshot.read_state`)
on every scrape, so the figures are those the processes last published, per process, and
nothing is cached in the web process. Counters the processes keep (frames, rows, reconnects,
gaps, bad frames, dead letters) are exported as Prometheus counters; they restart from zero
when a process restarts, which Prometheus' ``rate()`` handles.

If Redis cannot be reached the scrape still succeeds with ``obpipe_redis_up 0`` and nothing
else, so an alert can tell "pipeline down" from "web down".

Today's gaps come from the durable sources the page uses (the day's gap file plus the
records still in the gap stream, :mod:`pipeline.gaplog`), so ``obpipe_gaps_today`` does not
drop when the writer trims the stream; ``obpipe_ticker_time_covered_ratio`` is each ticker's
share of today's continuous trading so far outside its gaps.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from pipeline.calendar import TradingCalendar
from pipeline.days import today
from pipeline.gaplog import coverage
from pipeline.keys import Keys
from pipeline.status import STATES
from web.snapshot import RawState, parse_instant, read_state

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LABEL_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


class RedisCollector:
    """Yields the pipeline's metrics from one Redis read per scrape."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        clock: Callable[[], datetime],
        *,
        data_dir: Path | None = None,
        calendar: TradingCalendar | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.clock = clock
        self.data_dir = data_dir
        """Where the gap files are (None: only the gap stream's untrimmed records)."""
        self.calendar = calendar
        """For the per-ticker coverage (None: not exported)."""

    def describe(self) -> Iterable[Metric]:
        # Having describe() keeps the registry from calling collect() (and Redis) when the
        # collector is registered.
        return []

    def collect(self) -> Iterable[Metric]:
        """Read Redis and yield every metric family."""
        up = GaugeMetricFamily("obpipe_redis_up", "1 when the web app could read Redis.")
        now = self.clock()
        try:
            raw = read_state(self.client, self.keys, today(now), self.data_dir)
        except redis.RedisError as exc:
            log.warning("metrics scrape: Redis unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _families(raw, now)
        if self.calendar is not None:
            yield _coverage(raw, now, self.calendar)


def _coverage(raw: RawState, now: datetime, calendar: TradingCalendar) -> Metric:
    ratio = GaugeMetricFamily(
        "obpipe_ticker_time_covered_ratio",
        "Share of today's continuous trading so far outside any gap of the ticker.",
        labels=["ticker"],
    )
    for code, pct in sorted(coverage(raw.gaps, raw.tickers, calendar, now).items()):
        if pct is not None:
            ratio.add_metric([code], round(pct / 100, 6))
    return ratio


def _families(raw: RawState, now: datetime) -> Iterable[Metric]:
    ing = ["ingestor"]
    state = GaugeMetricFamily(
        "obpipe_ingestor_state", "1 for the state each live ingestor is in.", labels=[*ing, "state"]
    )
    frames = CounterMetricFamily("obpipe_ingestor_frames", "Frames received.", labels=ing)
    reconnects = CounterMetricFamily(
        "obpipe_ingestor_reconnects", "Websocket reconnects.", labels=ing
    )
    bad = CounterMetricFamily("obpipe_ingestor_bad_frames", "Undecodable frames.", labels=ing)
    gaps = CounterMetricFamily("obpipe_ingestor_gaps", "Gaps recorded.", labels=ing)
    overflow = CounterMetricFamily(
        "obpipe_ingestor_overflow", "Frames lost to a full buffer.", labels=ing
    )
    buffered = GaugeMetricFamily(
        "obpipe_ingestor_buffered", "Frames waiting for Redis in memory.", labels=ing
    )
    raw_bytes = CounterMetricFamily(
        "obpipe_ingestor_raw_bytes", "Compressed bytes written to the raw archive.", labels=ing
    )
    raw_dropped = CounterMetricFamily(
        "obpipe_ingestor_raw_dropped", "Frames the raw archive could not keep.", labels=ing
    )
    expiry = GaugeMetricFamily(
        "obpipe_ingestor_token_expiry_seconds",
        "Seconds until the Stockbit token expires (negative: expired).",
        labels=ing,
    )
    for status, _ in raw.ingestors:
        for name in STATES:
            state.add_metric([status.id, name], 1 if status.state == name else 0)
        frames.add_metric([status.id], status.frames)
        reconnects.add_metric([status.id], status.reconnects)
        bad.add_metric([status.id], status.bad_frames)
        gaps.add_metric([status.id], status.gaps)
        overflow.add_metric([status.id], status.overflow)
        buffered.add_metric([status.id], status.buffered)
        raw_bytes.add_metric([status.id], status.raw_bytes)
        raw_dropped.add_metric([status.id], status.raw_dropped)
        expires = parse_instant(status.token_expires_at)
        if expires is not None:
            expiry.add_metric([status.id], (expires - now).total_seconds())
    yield from (state, frames, reconnects, bad, gaps, overflow, buffered, raw_bytes, raw_dropped)
    yield expiry

    wr = ["writer"]
    rows = CounterMetricFamily("obpipe_writer_rows", "CSV rows written.", labels=wr)
    trades = CounterMetricFamily("obpipe_writer_trades", "Trades written.", labels=wr)
    lag = GaugeMetricFamily("obpipe_writer_lag_entries", "Entries not yet written.", labels=wr)
    lag_s = GaugeMetricFamily(
        "obpipe_writer_lag_seconds", "Age of the oldest unwritten entry.", labels=wr
    )
    dead = CounterMetricFamily("obpipe_writer_dead_letters", "Entries dead-lettered.", labels=wr)
    parts = GaugeMetricFamily("obpipe_writer_partitions", "Partitions owned.", labels=wr)
    for writer, _ in raw.writers:
        rows.add_metric([writer.id], writer.rows)
        trades.add_metric([writer.id], writer.trades)
        lag.add_metric([writer.id], writer.lag_entries)
        lag_s.add_metric([writer.id], writer.lag_seconds)
        dead.add_metric([writer.id], writer.dead_letters)
        parts.add_metric([writer.id], len(writer.partitions))
    yield from (rows, trades, lag, lag_s, dead, parts)

    ticker_frames = CounterMetricFamily(
        "obpipe_ticker_frames",
        "Book frames per ticker (counted by its primary ingestor).",
        labels=["ticker"],
    )
    for code, fields in sorted(raw.tickers.items()):
        value = _float(fields.get("frames"))
        if value is not None:
            ticker_frames.add_metric([code], value)
    yield ticker_frames
    yield GaugeMetricFamily(
        "obpipe_desired_tickers", "Tickers in the desired set.", value=len(raw.desired)
    )

    length = GaugeMetricFamily(
        "obpipe_stream_length", "Entries retained per partition stream.", labels=["partition"]
    )
    pending = GaugeMetricFamily(
        "obpipe_stream_pending", "Delivered but unacknowledged entries.", labels=["partition"]
    )
    for info in raw.streams:
        length.add_metric([str(info.partition)], info.length)
        if info.pending is not None:
            pending.add_metric([str(info.partition)], info.pending)
    yield from (length, pending)

    yield GaugeMetricFamily(
        "obpipe_gaps_today", "Gap records for today (WIB).", value=len(raw.gaps)
    )
    yield GaugeMetricFamily(
        "obpipe_deadletter_entries",
        "Entries in the capped dead-letter stream.",
        value=raw.deadletter_len,
    )
    counters = CounterMetricFamily(
        "obpipe_pipeline_events", "Deployment-wide counters (the counters hash).", labels=["name"]
    )
    for name, text in sorted(raw.counters.items()):
        value = _float(text)
        if value is not None:
            counters.add_metric([_LABEL_UNSAFE.sub("_", name)], value)
    yield counters
    # The alert sender counts one per destination and attempt (jobs/sender.py).
    for name, help_text in (
        ("sent", "Alert notifications a destination accepted."),
        ("failed", "Alert notification attempts that failed (each destination, each try)."),
    ):
        alerts = CounterMetricFamily(f"obpipe_alerts_{name}", help_text)
        alerts.add_metric([], _float(raw.counters.get(f"alerts_{name}")) or 0.0)
        yield alerts
    yield GaugeMetricFamily(
        "obpipe_files_today", "CSV files written today (WIB).", value=len(raw.day_counts)
    )


def _float(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def make_registry(collector: RedisCollector) -> CollectorRegistry:
    """A registry of its own per app (never the global one), holding only this collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return generate_latest(registry)
