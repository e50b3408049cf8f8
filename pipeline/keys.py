"""The Redis key schema (ARCHITECTURE.md §4): every key the processes share, in one place.

All keys start with the configurable prefix (default ``obpipe:``) so a deployment can share a
Redis. Nothing else in the code base spells a key by hand.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

WRITER_GROUP = "writers"
"""The consumer group every writer reads the partition streams through."""

GAP_GROUP = "gap-writers"
"""The consumer group through which writers copy gap records to disk."""


def partition_of(code: str, partitions: int) -> int:
    """The partition stream of a ticker: a stable hash (CRC-32), the same in every process."""
    return zlib.crc32(code.encode()) % partitions


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix, for a deployment with ``partitions`` partition streams."""

    prefix: str = "obpipe:"
    partitions: int = 16

    def stream(self, partition: int) -> str:
        """Partition stream of decoded frames (books and trades), in arrival order."""
        return f"{self.prefix}stream:{partition}"

    def stream_for(self, code: str) -> str:
        """The partition stream a ticker's frames go to."""
        return self.stream(partition_of(code, self.partitions))

    def streams(self) -> list[str]:
        """All partition streams."""
        return [self.stream(p) for p in range(self.partitions)]

    @property
    def desired_tickers(self) -> str:
        """SET of ticker codes the deployment should capture (seeded from ``TICKERS``)."""
        return f"{self.prefix}tickers"

    def ticker(self, code: str) -> str:
        """HASH of per-ticker live figures, updated once per ingestor batch by the ticker's
        primary ingestor only (the first of its owners, so replicas do not double counts).

        Fields: ``frames`` and ``trades`` (HINCRBY: book sides and prints so far),
        ``last_update`` (receive time of its newest entry), ``best_bid``/``best_offer`` and
        ``best_bid_lots``/``best_offer_lots`` (first level of the newest snapshot per side),
        ``bid_depth``/``offer_depth`` (that snapshot's level text ``price;orders;shares|...``
        cut after the 10th level) and ``bid_depth_at``/``offer_depth_at`` (its receive time).
        Times are WIB ISO-8601 with microseconds. The web's depth view reads the depth fields.
        """
        return f"{self.prefix}ticker:{code}"

    def custody(self, code: str) -> str:
        """HASH of who stored a ticker's frames, the evidence of continuity across owners
        (:mod:`ingestor.continuity`). Per holder ``<ingestor id>@<run>``: field ``<holder>``
        = receive time of the last entry of the ticker it stored (its sink writes it after
        the entries, in the same burst), field ``<holder>:released`` = when it let go of the
        ticker cleanly (a hand-over or a SIGTERM stop, written once all it received before
        is stored). A new owner prunes the fields it no longer needs; the key is deleted when
        the ticker leaves the desired set."""
        return f"{self.prefix}custody:{code}"

    @property
    def ingestor_runs(self) -> str:
        """HASH ingestor id → its current run's custody holder (``<id>@<run>``), written by its
        heartbeat: a custody holder of that id with another run is dead."""
        return f"{self.prefix}ingestors:runs"

    @property
    def ingestors(self) -> str:
        """ZSET of live ingestor ids scored by last heartbeat (ms since epoch)."""
        return f"{self.prefix}ingestors"

    def ingestor(self, process_id: str) -> str:
        """JSON status of one ingestor, with a TTL refreshed by its heartbeat."""
        return f"{self.prefix}ingestor:{process_id}"

    @property
    def writers(self) -> str:
        """ZSET of live writer ids scored by last heartbeat (ms since epoch)."""
        return f"{self.prefix}writers"

    def writer(self, process_id: str) -> str:
        """JSON status of one writer, with a TTL refreshed by its heartbeat."""
        return f"{self.prefix}writer:{process_id}"

    def lease(self, partition: int) -> str:
        """Ownership lease of a partition (value: owner id and fencing epoch; PX TTL)."""
        return f"{self.prefix}lease:{partition}"

    def epoch(self, partition: int) -> str:
        """Monotonic fencing counter of a partition, incremented on every acquisition."""
        return f"{self.prefix}epoch:{partition}"

    def commit(self, partition: int) -> str:
        """HASH: the last committed entry id of a partition and its files' committed sizes."""
        return f"{self.prefix}commit:{partition}"

    @property
    def gaps(self) -> str:
        """STREAM of gap records (start, end, cause, tickers, ingestor)."""
        return f"{self.prefix}gaps"

    @property
    def deadletter(self) -> str:
        """Capped STREAM of frames or entries that could not be decoded, with the error."""
        return f"{self.prefix}deadletter"

    @property
    def counters(self) -> str:
        """HASH of deployment-wide counters (dead letters, overflow, maxlen trims, ...)."""
        return f"{self.prefix}counters"

    @property
    def finalize_scheduled(self) -> str:
        """SET of days whose ``finalize_day`` job a writer has scheduled (once per day)."""
        return f"{self.prefix}finalize:scheduled"

    def day_counts(self, day: str) -> str:
        """HASH of rows written per file for a day (``orderbook/2026-03-02_BBCA.csv`` → rows)."""
        return f"{self.prefix}day:{day}:rows"

    @property
    def recap_scheduled(self) -> str:
        """SET of trading days whose ``daily_recap`` job the jobs worker has scheduled."""
        return f"{self.prefix}recap:scheduled"

    # --- token refresh (ingestor/refresher.py); the tokens themselves never enter Redis ---

    @property
    def token_refresh_lock(self) -> str:
        """Which ingestor refreshes the Stockbit token now (value ``owner|epoch``, PX TTL):
        one at a time, so a rotating refresh token is never spent twice."""
        return f"{self.prefix}token:refresh:lock"

    @property
    def token_refresh_epoch(self) -> str:
        """Fencing counter of :attr:`token_refresh_lock`, incremented on every acquisition;
        the token file records the epoch of the refresh that wrote it."""
        return f"{self.prefix}token:refresh:epoch"

    # --- alerts (pipeline/alerts.py, pipeline/conditions.py, jobs/monitor.py) -------------

    @property
    def alerts(self) -> str:
        """Capped STREAM of alerts (start, reminder, clear, event, digest), newest last;
        fields as :meth:`pipeline.alerts.Alert.fields`. The status page lists the newest."""
        return f"{self.prefix}alerts"

    @property
    def alerts_delivery(self) -> str:
        """HASH alert key → JSON delivery state (``pending``, ``sent``, ``failed``, ...,
        attempts, destinations), written by the sender thread; pruned with the stream."""
        return f"{self.prefix}alerts:delivery"

    @property
    def alerts_active(self) -> str:
        """HASH condition id → JSON state of each active condition (since, last notified):
        the state machine, persisted so a restarted or new monitor neither repeats a start
        alert nor forgets to send the clear."""
        return f"{self.prefix}alerts:active"

    @property
    def alert_conditions(self) -> str:
        """HASH condition id → JSON condition raised by another process through
        :func:`pipeline.conditions.raise_condition` (token refresher, raw archive, ...)."""
        return f"{self.prefix}alerts:conditions"

    @property
    def alert_events(self) -> str:
        """Capped STREAM of one-off notices raised by other processes through
        :func:`pipeline.conditions.raise_event` (the daily recap): the monitor sends each
        once, through the same rate limit and sender as its own alerts."""
        return f"{self.prefix}alerts:events"

    @property
    def alert_events_cursor(self) -> str:
        """STRING: id of the last :attr:`alert_events` entry the monitor has handled."""
        return f"{self.prefix}alerts:events:cursor"

    @property
    def alerts_lock(self) -> str:
        """The alert monitor's lock (value: holder id, PX TTL renewed every cycle): one
        monitor evaluates and sends at a time, however many ``obpipe jobs`` run."""
        return f"{self.prefix}alerts:lock"

    @property
    def alerts_members(self) -> str:
        """HASH ``ingestor:<id>`` / ``writer:<id>`` → JSON (first seen, last heartbeat,
        stale): the processes the monitor expects, to tell a crash from a clean stop."""
        return f"{self.prefix}alerts:members"

    @property
    def alerts_cursor(self) -> str:
        """STRING: id of the last gap record the monitor has looked at."""
        return f"{self.prefix}alerts:cursor"

    @property
    def alerts_monitor(self) -> str:
        """STRING (JSON, TTL): the monitor holding the lock, and where it sends (a count of
        destinations, never the URLs). Missing = no monitor running."""
        return f"{self.prefix}alerts:monitor"
