"""The alert monitor: reads the pipeline's state from Redis, decides what is wrong, has it sent.

It runs as a thread of every ``obpipe jobs`` process (compose and ``obpipe run`` always start
one), but only the holder of the ``alerts:lock`` (a Redis lock with a TTL, renewed every
cycle) evaluates and sends, so ``docker compose up --scale jobs=2`` never doubles an alert;
when the holder dies, another takes over within the TTL and carries on from the state the
first one kept in Redis (``alerts:active``, ``alerts:members``, ``alerts:cursor``).

Every :data:`POLL_S` seconds the holder works out the active conditions (:class:`Watch`):

* ``auth_failed`` — a live ingestor is in state ``auth_failed`` (critical);
* ``token_expiry`` — an ingestor's access token expires within an hour (critical: past it no
  data comes; the refresher renews 3 h ahead, so this means renewal is not working);
* ``feed_down:<ingestor>`` — an ingestor has been without a connection for more than
  ``ALERT_GAP_S`` seconds of continuous trading (critical), kept until it reconnects;
* ``gap:<entry>`` — an event: a gap record covering more than ``ALERT_GAP_S`` seconds of
  continuous trading (per the IDX calendar), unless a ``feed_down``/``auth_failed`` alert
  of the same ingestor already told of it;
* ``writer_lag:<writer>`` — a writer's oldest unwritten entry is older than ``ALERT_LAG_S``
  (warning; it clears below half of that, so it does not flap);
* ``disk_error:<writer>`` — a writer's partition is faulted by a disk error (critical);
  ``disk_space`` — ``DATA_DIR`` has less than 5 GiB or 5 % free (warning);
* ``gone:<kind>:<id>`` — an ingestor or writer stopped heartbeating without leaving
  (critical). A clean stop (SIGTERM) removes the process from its ZSET first, which the
  monitor sees while the last heartbeat is still fresh: no alert. A process is *expected*
  while it was seen alive within the last hour; it clears when it beats again, when a
  newcomer from the same host (a restart under a new pid) appears, or after that hour;
* whatever other processes raised through :mod:`pipeline.conditions` (token refresh
  failed, refresh token expiring, raw archive trouble), and the one-off notices they raised
  (``raise_event``: the daily recap), each sent once as an ``event``;
* ``redis_down`` — this monitor, holding the lock, cannot reach Redis for 30 s (critical;
  sent straight away, recorded once Redis is back).

:class:`pipeline.alerts.Alerter` turns that set into start/reminder/clear alerts under the
rate limit; each is appended to the capped ``alerts`` stream (what the page lists) and
handed to the :class:`jobs.sender.Sender` thread, or marked ``unsent`` when ``ALERT_URLS``
is empty. Nothing here waits on a notification service.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, cast

import redis

from ingestor.tokens import secrets_in
from jobs.sender import COALESCED, HELD, PENDING, UNSENT, DeliveryLog, Sender, destinations
from pipeline.alerts import (
    CRITICAL,
    WARNING,
    Active,
    Alert,
    Alerter,
    AlertError,
    Condition,
    Update,
    duration,
    wib,
)
from pipeline.calendar import TradingCalendar
from pipeline.conditions import Raised, parse_raised, read_events
from pipeline.days import WIB
from pipeline.keys import Keys
from pipeline.log import register_secret, scrub
from pipeline.records import GapRecord, RecordError
from pipeline.settings import Settings
from pipeline.status import AUTH_FAILED as STATE_AUTH_FAILED
from pipeline.status import CONNECTING, RECONNECTING, IngestorStatus, WriterStatus
from stockbit.errors import ProtocolError
from stockbit.timestamps import parse_iso

log = logging.getLogger(__name__)

POLL_S = 5.0
"""How often the monitor looks."""
LOCK_TTL_S = 20.0
"""The lock lapses this long after its holder stopped renewing it (another takes over)."""
EXPECTED_S = 3600.0
"""A process seen alive within this long is expected to be alive still."""
TOKEN_WARN_S = 3600.0
"""Alert when an access token has less than this left."""
DISK_FREE_BYTES = 5 * 1024**3
DISK_FREE_FRACTION = 0.05
"""``disk_space`` starts below the smaller of these two (5 GiB, 5 % of the disk)."""
STREAM_MAXLEN = 1000
"""Alerts kept in the ``alerts`` stream (approximately)."""
GAPS_PER_CYCLE = 500
REDIS_DOWN_S = 30.0
COVER_SLACK_S = 2 * POLL_S
"""How far apart a gap record and an outage the monitor watched may be and still match."""
MAX_MONITOR_DAYS = 31
"""Longest gap whose trading time is counted day by day (longer ones are capped)."""

AUTH_FAILED_ID = "auth_failed"
TOKEN_EXPIRY_ID = "token_expiry"
DISK_SPACE_ID = "disk_space"
REDIS_DOWN_ID = "redis_down"
INGESTOR = "ingestor"
WRITER = "writer"


def _cid(text: str) -> str:
    return text.lower()


def feed_down_id(pid: str) -> str:
    """Condition id: this ingestor has no connection during trading."""
    return _cid(f"feed_down:{pid}")


def gone_id(kind: str, pid: str) -> str:
    """Condition id: this ingestor or writer stopped without leaving."""
    return _cid(f"gone:{kind}:{pid}")


def lag_id(pid: str) -> str:
    """Condition id: this writer is behind."""
    return _cid(f"writer_lag:{pid}")


def disk_error_id(pid: str) -> str:
    """Condition id: this writer hit a disk error."""
    return _cid(f"disk_error:{pid}")


def gap_id(entry_id: str) -> str:
    """Event id of a gap record."""
    return _cid(f"gap:{entry_id}")


def parse_instant(value: str | None) -> datetime | None:
    """An ISO-8601 time from a status key, or None."""
    if not value:
        return None
    try:
        return parse_iso(value)
    except (ProtocolError, ValueError):
        return None


def trading_overlap_s(calendar: TradingCalendar, start: datetime, end: datetime) -> float:
    """Seconds of continuous trading (sessions 1 and 2, per the calendar) in [start, end)."""
    if end <= start:
        return 0.0
    total = 0.0
    day = start.astimezone(WIB).date()
    last = min(end.astimezone(WIB).date(), day + timedelta(days=MAX_MONITOR_DAYS))
    while day <= last:
        for span in calendar.continuous_intervals(day):
            low, high = max(start, span.start), min(end, span.end)
            if high > low:
                total += (high - low).total_seconds()
        day += timedelta(days=1)
    return total


# -- what the monitor reads ----------------------------------------------------------------


@dataclass
class Facts:
    """One reading of Redis (and the disk), everything :class:`Watch` decides from."""

    now: datetime
    ingestors: dict[str, tuple[IngestorStatus | None, float]] = field(default_factory=dict)
    """Each member of the ``ingestors`` ZSET: its status (None once the key expired) and
    its last heartbeat (seconds since the epoch)."""
    writers: dict[str, tuple[WriterStatus | None, float]] = field(default_factory=dict)
    raised: list[Raised] = field(default_factory=list)
    gaps: list[tuple[str, GapRecord]] = field(default_factory=list)
    """Gap records appended since the last reading."""
    disk: tuple[int, int] | None = None
    """(total, free) bytes of ``DATA_DIR``, when it can be measured here."""


@dataclass
class Member:
    """A process the monitor has seen: to tell a crash from a clean stop."""

    kind: str
    id: str
    first_seen: float
    last_beat: float
    stale: bool = False

    @property
    def key(self) -> str:
        """``ingestor:<id>`` — its field in ``alerts:members``."""
        return f"{self.kind}:{self.id}"

    @property
    def host(self) -> str:
        """The id without its trailing ``-<pid>`` (ids default to ``hostname-pid``)."""
        head, _, tail = self.id.rpartition("-")
        return head if head and tail.isdigit() else self.id

    def to_json(self) -> str:
        """For the ``alerts:members`` hash."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Member:
        """Read :meth:`to_json` back."""
        data = json.loads(text)
        return cls(
            kind=str(data["kind"]),
            id=str(data["id"]),
            first_seen=float(data["first_seen"]),
            last_beat=float(data["last_beat"]),
            stale=bool(data.get("stale", False)),
        )


@dataclass(frozen=True)
class WatchConfig:
    """The thresholds of :class:`Watch`."""

    gap_s: float = 60.0
    lag_s: float = 30.0
    stale_after_s: float = 10.0
    expected_s: float = EXPECTED_S
    token_warn_s: float = TOKEN_WARN_S
    disk_free_bytes: int = DISK_FREE_BYTES
    disk_free_fraction: float = DISK_FREE_FRACTION

    @classmethod
    def from_settings(cls, settings: Settings) -> WatchConfig:
        """``ALERT_GAP_S``, ``ALERT_LAG_S``; a heartbeat is stale once the status key would
        have expired (``STATUS_TTL_S``, at least three heartbeats)."""
        return cls(
            gap_s=settings.alert_gap_s,
            lag_s=settings.alert_lag_s,
            stale_after_s=max(settings.status_ttl_s, 3 * settings.heartbeat_s),
        )


class Verdict(NamedTuple):
    """What is wrong now."""

    conditions: list[Condition]
    events: list[Condition]
    notes: dict[str, str]


class Watch:
    """Facts → conditions (pure, apart from the memory of members and outages it keeps)."""

    def __init__(self, config: WatchConfig, calendar: TradingCalendar) -> None:
        self.config = config
        self.calendar = calendar
        self.members: dict[str, Member] = {}
        self.covered: dict[str, list[tuple[float, float]]] = {}
        """Per ingestor, the spans during which an outage alert of it was active."""

    def evaluate(self, facts: Facts, active: Collection[str]) -> Verdict:
        """The conditions active at ``facts.now``; ``active`` are the ids active before
        (for hysteresis: a condition that started stays until it is clearly over)."""
        conditions: dict[str, Condition] = {}
        events: list[Condition] = []
        notes: dict[str, str] = {}
        now_s = facts.now.timestamp()
        fresh_after = now_s - self.config.stale_after_s

        def add(condition: Condition) -> None:
            conditions.setdefault(condition.id, condition)

        for condition in self._gone(facts, now_s, notes):
            add(condition)

        ingestors = [
            (pid, status)
            for pid, (status, beat) in sorted(facts.ingestors.items())
            if status is not None and beat >= fresh_after
        ]
        writers = [
            (pid, status)
            for pid, (status, beat) in sorted(facts.writers.items())
            if status is not None and beat >= fresh_after
        ]

        refused = [(pid, s) for pid, s in ingestors if s.state == STATE_AUTH_FAILED]
        if refused:
            names = ", ".join(pid for pid, _ in refused)
            error = next((s.last_error for _, s in refused if s.last_error), None)
            add(
                Condition(
                    AUTH_FAILED_ID,
                    CRITICAL,
                    "Stockbit refused the token (auth_failed)",
                    f"Ingestor(s) {names} cannot log in. Store a fresh token pair with "
                    "`obpipe token set` (STOCKBIT_TOKEN_FILE is re-read before every connect)"
                    + (f". Last error: {error}" if error else "."),
                )
            )
            for pid, status in refused:
                self._cover(pid, self._outage_start(status), facts.now)

        expiring = []
        for pid, status in ingestors:
            expires = parse_instant(status.token_expires_at)
            if expires is not None and (expires - facts.now).total_seconds() < (
                self.config.token_warn_s
            ):
                expiring.append((expires, pid))
        if expiring:
            expires, pid = min(expiring)
            expired = expires <= facts.now
            add(
                Condition(
                    TOKEN_EXPIRY_ID,
                    CRITICAL,
                    "Stockbit access token has expired"
                    if expired
                    else f"Stockbit access token expires within {_span(self.config.token_warn_s)}",
                    f"The token of ingestor {pid} expires at {wib(expires)}. Renewal from the "
                    "refresh token is not keeping up: check the refresher, or put a fresh "
                    "token in STOCKBIT_TOKEN_FILE.",
                )
            )

        for pid, status in ingestors:
            if status.state not in (CONNECTING, RECONNECTING):
                continue
            since = self._outage_start(status)
            cid = feed_down_id(pid)
            trading = trading_overlap_s(self.calendar, since, facts.now) if since else 0.0
            if trading > self.config.gap_s or cid in active:
                add(
                    Condition(
                        cid,
                        CRITICAL,
                        f"Ingestor {pid} has no feed during trading",
                        f"State {status.state}; no frame since "
                        f"{wib(since) if since else 'it started'}; "
                        f"{len(status.tickers)} ticker(s) affected"
                        + (f". Last error: {status.last_error}" if status.last_error else "."),
                    )
                )
                self._cover(pid, since, facts.now)

        for pid, writer in writers:
            cid = lag_id(pid)
            limit = self.config.lag_s / 2 if cid in active else self.config.lag_s
            if writer.lag_seconds > limit:
                add(
                    Condition(
                        cid,
                        WARNING,
                        f"Writer {pid} lags more than {self.config.lag_s:g} s",
                        f"Its oldest unwritten entry is {duration(writer.lag_seconds)} old "
                        f"({writer.lag_entries:,} entries waiting).",
                    )
                )
            if writer.state == "disk_error":
                add(
                    Condition(
                        disk_error_id(pid),
                        CRITICAL,
                        f"Writer {pid} cannot write to disk",
                        "A partition is faulted and retried with backoff"
                        + (f". Last error: {writer.last_error}" if writer.last_error else "."),
                    )
                )

        if facts.disk is not None:
            total, free = facts.disk
            limit_bytes = min(self.config.disk_free_bytes, self.config.disk_free_fraction * total)
            if DISK_SPACE_ID in active:
                limit_bytes *= 1.1
            if total > 0 and free < limit_bytes:
                add(
                    Condition(
                        DISK_SPACE_ID,
                        WARNING,
                        "DATA_DIR is running out of space",
                        f"{_gib(free)} free of {_gib(total)} ({free / total:.1%}).",
                    )
                )

        for raised in facts.raised:
            add(raised.condition)

        for entry_id, gap in facts.gaps:
            event = self._gap_event(entry_id, gap)
            if event is not None:
                events.append(event)
        self._prune(now_s)
        return Verdict(list(conditions.values()), events, notes)

    # -- gone ------------------------------------------------------------------------------

    def _gone(self, facts: Facts, now_s: float, notes: dict[str, str]) -> list[Condition]:
        config = self.config
        for kind, live in (
            (INGESTOR, {p: b for p, (_, b) in facts.ingestors.items()}),
            (WRITER, {p: b for p, (_, b) in facts.writers.items()}),
        ):
            for pid, beat in live.items():
                key = f"{kind}:{pid}"
                member = self.members.get(key)
                if member is None:
                    member = self.members[key] = Member(kind, pid, now_s, beat)
                member.last_beat = max(member.last_beat, beat)
                member.stale = now_s - member.last_beat > config.stale_after_s
            for key, member in list(self.members.items()):
                if member.kind == kind and member.id not in live and not member.stale:
                    # It left the ZSET while its heartbeat was fresh: a clean stop.
                    del self.members[key]
        out = []
        replacements_used: set[str] = set()
        for key, member in sorted(self.members.items()):
            if not member.stale:
                continue
            cid = gone_id(member.kind, member.id)
            if now_s - member.last_beat > config.expected_s:
                del self.members[key]
                notes[cid] = (
                    f"No heartbeat for {duration(config.expected_s)}: no longer expected "
                    "(it did not come back)."
                )
                continue
            replacement = next(
                (
                    other
                    for other in sorted(self.members.values(), key=lambda m: m.first_seen)
                    if other.kind == member.kind
                    and not other.stale
                    and other.key not in replacements_used
                    and other.host == member.host
                    and other.first_seen >= member.last_beat
                ),
                None,
            )
            if replacement is not None:
                replacements_used.add(replacement.key)
                del self.members[key]
                notes[cid] = f"Replaced by {member.kind} {replacement.id} on the same host."
                continue
            last = datetime.fromtimestamp(member.last_beat, UTC)
            out.append(
                Condition(
                    cid,
                    CRITICAL,
                    f"The {member.kind} {member.id} is gone",
                    f"No heartbeat since {wib(last)}, and it did not stop cleanly "
                    "(crashed, killed, or its host or network is down).",
                )
            )
        return out

    # -- gaps ------------------------------------------------------------------------------

    @staticmethod
    def _outage_start(status: IngestorStatus) -> datetime | None:
        return (
            parse_instant(status.last_frame_at)
            or parse_instant(status.connected_since)
            or parse_instant(status.started_at)
        )

    def _cover(self, pid: str, since: datetime | None, now: datetime) -> None:
        start = (since or now).timestamp()
        spans = self.covered.setdefault(pid, [])
        if spans and spans[-1][1] >= start - COVER_SLACK_S:
            spans[-1] = (min(spans[-1][0], start), now.timestamp())
        else:
            spans.append((start, now.timestamp()))

    def _is_covered(self, pid: str, start: float, end: float) -> bool:
        return any(
            low - COVER_SLACK_S <= end and start <= high + COVER_SLACK_S
            for low, high in self.covered.get(pid, [])
        )

    def _gap_event(self, entry_id: str, gap: GapRecord) -> Condition | None:
        start, end = parse_instant(gap.start), parse_instant(gap.end)
        if start is None or end is None:
            return None
        trading = trading_overlap_s(self.calendar, start, end)
        if trading <= self.config.gap_s:
            return None
        if self._is_covered(gap.ingestor, start.timestamp(), end.timestamp()):
            return None  # its start and clear alerts already told of it
        shown = ", ".join(gap.tickers[:10]) + (
            f" and {len(gap.tickers) - 10} more" if len(gap.tickers) > 10 else ""
        )
        try:
            return Condition(
                gap_id(entry_id),
                WARNING,
                f"Gap of {duration((end - start).total_seconds())} in the feed during trading",
                f"Cause {gap.cause}, {wib(start)} to {wib(end)} "
                f"({duration(trading)} of continuous trading); "
                f"tickers: {shown or 'all of the ingestor'}; ingestor {gap.ingestor}"
                + (f"; {gap.detail}" if gap.detail else "")
                + ".",
            )
        except AlertError:
            return None

    def _prune(self, now_s: float) -> None:
        horizon = now_s - 86_400
        for pid in list(self.covered):
            kept = [span for span in self.covered[pid] if span[1] >= horizon]
            if kept:
                self.covered[pid] = kept
            else:
                del self.covered[pid]


def _span(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"


def _gib(size: float) -> str:
    return f"{size / 1024**3:.1f} GiB"


# -- reading Redis -------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _status(kind: type[IngestorStatus] | type[WriterStatus], raw: Any) -> Any:
    if raw is None:
        return None
    try:
        return kind.from_json(_text(raw))
    except (ValueError, TypeError):
        return None


def read_facts(
    client: redis.Redis, keys: Keys, now: datetime, cursor: str
) -> tuple[Facts, list[str], str]:
    """Read the status keys, raised conditions and new gap records (after ``cursor``).

    Returns the facts, the ids of raised conditions that lapsed or are malformed (to
    delete), and the new cursor.
    """
    pipe = client.pipeline(transaction=False)
    pipe.zrange(keys.ingestors, 0, -1, withscores=True)
    pipe.zrange(keys.writers, 0, -1, withscores=True)
    pipe.hgetall(keys.alert_conditions)
    pipe.xrange(keys.gaps, f"({cursor}", "+", count=GAPS_PER_CYCLE)
    ingestor_ids, writer_ids, raised_raw, gap_entries = pipe.execute()
    ingestors = [(_text(m), float(s) / 1000) for m, s in ingestor_ids]
    writers = [(_text(m), float(s) / 1000) for m, s in writer_ids]
    pipe = client.pipeline(transaction=False)
    for pid, _ in ingestors:
        pipe.get(keys.ingestor(pid))
    for pid, _ in writers:
        pipe.get(keys.writer(pid))
    docs = pipe.execute() if ingestors or writers else []
    facts = Facts(now=now)
    for (pid, beat), raw in zip(ingestors, docs[: len(ingestors)], strict=True):
        facts.ingestors[pid] = (_status(IngestorStatus, raw), beat)
    for (pid, beat), raw in zip(writers, docs[len(ingestors) :], strict=True):
        facts.writers[pid] = (_status(WriterStatus, raw), beat)
    entries = {_text(k): _text(v) for k, v in cast(dict[Any, Any], raised_raw).items()}
    live, expired, bad = parse_raised(entries, now)
    for condition_id in bad:
        log.warning("ignoring malformed raised condition %r", condition_id[:60])
    facts.raised = live
    for entry_id, fields in gap_entries:
        cursor = _text(entry_id)
        try:
            record = GapRecord.parse({_text(k): _text(v) for k, v in fields.items()})
        except RecordError:
            continue
        facts.gaps.append((cursor, record))
    return facts, expired + bad, cursor


# -- the monitor ---------------------------------------------------------------------------

_LOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def disk_of(path: Path) -> tuple[int, int] | None:
    """(total, free) bytes of the file system holding ``path``, or None if it is not here."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return usage.total, usage.free


class Monitor:
    """One monitor: :meth:`step` is one cycle (tests call it directly), :meth:`run` loops."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        *,
        sender: Sender | None,
        calendar: TradingCalendar,
        clock: Callable[[], datetime] = _utc_now,
        disk: Callable[[], tuple[int, int] | None] | None = None,
        max_per_window: int = 6,
        window_s: float = 60.0,
        poll_s: float = POLL_S,
        lock_ttl_s: float = LOCK_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.monotonic = monotonic
        self.client = client
        self.keys = Keys(settings.key_prefix, settings.partitions)
        self.sender = sender
        self.clock = clock
        self.disk = disk if disk is not None else (lambda: disk_of(settings.data_dir))
        self.poll_s = poll_s
        self.lock_ttl_ms = int(lock_ttl_s * 1000)
        self.id = f"{settings.process_id}/{secrets.token_hex(3)}"
        tag = secrets.token_hex(2)
        self.alerter = Alerter(
            repeat_s=settings.alert_repeat_min * 60,
            max_per_window=max_per_window,
            window_s=window_s,
            scrub=scrub,
            tag=tag,
        )
        self.watch = Watch(WatchConfig.from_settings(settings), calendar)
        self.leader = False
        self.since: datetime | None = None
        self.cursor: str | None = None
        self.events_cursor: str | None = None
        """The last ``alerts:events`` notice handled."""
        self.redis_down_since: float | None = None
        self._unrecorded: list[Alert] = []
        self.delivery = sender.delivery if sender is not None else DeliveryLog(client, self.keys)
        self._lock_script = client.register_script(_LOCK)
        self._unlock_script = client.register_script(_UNLOCK)
        self._cycles = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._register_known_secrets()

    @property
    def destinations(self) -> int:
        """How many ``ALERT_URLS`` entries alerts go to."""
        return len(self.sender.targets) if self.sender is not None else 0

    def _register_known_secrets(self) -> None:
        # boot() registered them already; a monitor built another way must scrub them too.
        for value in self.settings.secrets():
            register_secret(value)
        # The token file is the ingestors', but a token an ingestor echoes into last_error
        # must not leave through an alert either; the JWT pattern is the fallback. (The
        # file is the JSON token store, or a bare JWT: secrets_in reads both.)
        path = self.settings.stockbit_token_file
        if path is None:
            return
        for value in secrets_in(path):
            register_secret(value)

    # -- one cycle -------------------------------------------------------------------------

    def step(self) -> None:
        """Take or renew the lock; if held, evaluate and send. Never raises RedisError."""
        now = self.clock()
        try:
            if not self._lead(now):
                return
            self._evaluate(now)
        except redis.RedisError as exc:
            self._redis_trouble(now, exc)

    def _lead(self, now: datetime) -> bool:
        held = bool(
            self._lock_script(keys=[self.keys.alerts_lock], args=[self.id, self.lock_ttl_ms])
        )
        self.redis_down_since = None  # it answered
        if held and not self.leader:
            self._take_over(now)
        elif not held and self.leader:
            log.info("alert monitor %s: another monitor holds the lock now", self.id)
            self.leader = False
        if not held:
            self._clear_redis_down(now)
        return held

    def _take_over(self, now: datetime) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.alerts_active)
        pipe.hgetall(self.keys.alerts_members)
        pipe.get(self.keys.alerts_cursor)
        pipe.xrevrange(self.keys.gaps, count=1)
        pipe.get(self.keys.alert_events_cursor)
        pipe.xrevrange(self.keys.alert_events, count=1)
        active_raw, members_raw, cursor, newest, events_cursor, newest_event = pipe.execute()
        if events_cursor is not None:
            self.events_cursor = _text(events_cursor)
        else:
            # As with gaps: notices from before the first monitor ever are history.
            self.events_cursor = _text(newest_event[0][0]) if newest_event else "0-0"
        states = []
        for cid, text in cast(dict[Any, Any], active_raw).items():
            try:
                states.append(Active.from_json(_text(cid), _text(text)))
            except (AlertError, ValueError, KeyError, TypeError):
                log.warning("dropping unreadable alert state %r", _text(cid)[:60])
        own_down = self.alerter.active.get(REDIS_DOWN_ID)
        self.alerter.restore(states + ([own_down] if own_down else []))
        members = {}
        for key, text in cast(dict[Any, Any], members_raw).items():
            try:
                member = Member.from_json(_text(text))
            except (ValueError, KeyError, TypeError):
                continue
            members[_text(key)] = member
        self.watch.members = members
        if cursor is not None:
            self.cursor = _text(cursor)
        elif newest:
            # First monitor ever: older gaps are history, not news.
            self.cursor = _text(newest[0][0])
        else:
            self.cursor = "0-0"
        self.leader = True
        self.since = now
        log.info(
            "alert monitor %s: holding the lock; %d active condition(s), sending to %s",
            self.id,
            len(states),
            f"{self.destinations} destination(s)"
            if self.destinations
            else "nowhere (no ALERT_URLS)",
        )

    def _evaluate(self, now: datetime) -> None:
        facts, stale_raised, cursor = read_facts(self.client, self.keys, now, self.cursor or "0-0")
        facts.disk = self.disk()
        verdict = self.watch.evaluate(facts, set(self.alerter.active))
        notices, events_cursor = read_events(self.client, self.keys, self.events_cursor or "0-0")
        conditions = verdict.conditions
        update = self.alerter.update(
            now, conditions, events=[*verdict.events, *notices], notes=verdict.notes
        )
        self._flush_unrecorded()
        self._handle(update)
        self.cursor = cursor
        self.events_cursor = events_cursor
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.alerts_active)
        if self.alerter.active:
            pipe.hset(
                self.keys.alerts_active,
                mapping={cid: s.to_json() for cid, s in self.alerter.active.items()},
            )
        pipe.delete(self.keys.alerts_members)
        if self.watch.members:
            pipe.hset(
                self.keys.alerts_members,
                mapping={k: m.to_json() for k, m in self.watch.members.items()},
            )
        pipe.set(self.keys.alerts_cursor, cursor)
        pipe.set(self.keys.alert_events_cursor, events_cursor)
        if stale_raised:
            pipe.hdel(self.keys.alert_conditions, *stale_raised)
        pipe.set(self.keys.alerts_monitor, self._status_json(now), px=self.lock_ttl_ms)
        pipe.execute()
        self._cycles += 1
        if self._cycles % 100 == 1:
            self._prune_delivery()

    def _status_json(self, now: datetime) -> str:
        services = [t.service for t in self.sender.targets] if self.sender else []
        return json.dumps(
            {
                "id": self.id,
                "since": self.since.isoformat() if self.since else None,
                "updated_at": now.isoformat(),
                "destinations": len(services),
                "services": services,
                "active": len(self.alerter.active),
                "held": self.alerter.held,
                "backlog": self.sender.backlog if self.sender else 0,
                "poll_s": self.poll_s,
            },
            separators=(",", ":"),
        )

    # -- recording and sending -------------------------------------------------------------

    def _handle(self, update: Update) -> None:
        """Record every new alert (the page lists each), then hand what is due to the sender."""
        created = {alert.key for alert in update.created}
        held = {alert.key for alert in update.held}
        coalesced = {alert.key for alert in update.coalesced}
        digest = next((alert for alert in update.deliver if alert.items), None)
        folded: dict[str, Any] = {"digest": digest.key} if digest else {}
        unsent: dict[str, Any] = {"detail": "not sent: no ALERT_URLS"}
        for alert in update.created:
            log.warning("alert (%s): %s", alert.kind, alert.subject)
            if alert.key in held:
                self._record(alert, HELD, {"detail": "rate limit"})
            elif alert.key in coalesced:
                self._record(alert, COALESCED, folded)
            elif self.sender is None:
                self._record(alert, UNSENT, unsent)
            else:
                self._record(alert, PENDING, {})
        for alert in update.coalesced:
            if alert.key not in created:
                self.delivery.state(alert.key, COALESCED, **folded)
        if digest is not None:
            log.warning("alert (digest): %s", digest.subject)
            self._record(digest, PENDING if self.sender else UNSENT, {} if self.sender else unsent)
        for alert in update.deliver:
            if self.sender is not None:
                self.sender.submit(alert)
            elif alert.key not in created and alert is not digest:
                self.delivery.state(alert.key, UNSENT, **unsent)

    def _record(self, alert: Alert, state: str, extra: dict[str, Any]) -> None:
        # The state first: the delivery log keeps it while Redis is down; the stream entry
        # is retried at the next cycle.
        self.delivery.state(alert.key, state, **extra)
        try:
            if self.redis_down_since is not None:  # known down: no timeout per alert
                raise redis.ConnectionError("Redis is down")
            self._xadd(alert)
        except redis.RedisError:
            self._unrecorded.append(alert)
            del self._unrecorded[:-200]

    def _xadd(self, alert: Alert) -> None:
        self.client.xadd(
            self.keys.alerts,
            cast(dict[Any, Any], alert.fields()),
            maxlen=STREAM_MAXLEN,
            approximate=True,
        )

    def _flush_unrecorded(self) -> None:
        while self._unrecorded:
            self._xadd(self._unrecorded[0])
            self._unrecorded.pop(0)

    def _prune_delivery(self) -> None:
        """Drop delivery states of alerts the capped stream no longer holds."""
        oldest = cast(list[Any], self.client.xrange(self.keys.alerts, count=1))
        if not oldest:
            return
        fields = {_text(k): _text(v) for k, v in oldest[0][1].items()}
        first_ms = _key_ms(fields.get("key", ""))
        if first_ms is None:
            return
        keys = [_text(k) for k in cast(list[Any], self.client.hkeys(self.keys.alerts_delivery))]
        gone = [k for k in keys if (_key_ms(k) or 0) < first_ms]
        if gone:
            self.client.hdel(self.keys.alerts_delivery, *gone)

    # -- Redis trouble ---------------------------------------------------------------------

    def _redis_trouble(self, now: datetime, exc: redis.RedisError) -> None:
        clock = self.monotonic()
        if self.redis_down_since is None:
            self.redis_down_since = clock
            log.warning("alert monitor: Redis unreachable (%s)", type(exc).__name__)
        if not self.leader or clock - self.redis_down_since < REDIS_DOWN_S:
            return
        if REDIS_DOWN_ID in self.alerter.active:
            update = self.alerter.flush(now)
        else:
            keep = [s.condition for s in self.alerter.active.values()]
            down = Condition(
                REDIS_DOWN_ID,
                CRITICAL,
                "Redis is unreachable",
                f"The alert monitor {self.id} cannot reach Redis: ingestors buffer in memory "
                "up to INGEST_BUFFER_MAX, writers wait, and the status page is stale.",
            )
            update = self.alerter.update(now, [*keep, down])
        self._handle(update)

    def _clear_redis_down(self, now: datetime) -> None:
        # Redis is back but another monitor holds the lock: it never knew of the outage,
        # so this one sends the clear of what it had raised.
        if REDIS_DOWN_ID not in self.alerter.active:
            return
        keep = [
            s.condition for s in self.alerter.active.values() if s.condition.id != REDIS_DOWN_ID
        ]
        self._flush_unrecorded()
        self._handle(self.alerter.update(now, keep))

    # -- the thread ------------------------------------------------------------------------

    def run(self) -> None:
        """Cycle every ``poll_s`` until :meth:`stop`; no error ends the loop."""
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.step()
            except Exception:
                log.exception("alert monitor: unexpected error (continuing)")
            self._stop.wait(max(0.0, self.poll_s - (time.monotonic() - started)))

    def start(self) -> Monitor:
        """Run :meth:`run` in a daemon thread."""
        if self.sender is not None:
            self.sender.start()
        self._thread = threading.Thread(target=self.run, name="alert-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop, hand the lock over at once, let the sender finish what it holds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.leader:
            try:
                self._unlock_script(keys=[self.keys.alerts_lock], args=[self.id])
                self.client.delete(self.keys.alerts_monitor)
            except redis.RedisError:
                pass  # the lock lapses by itself
            self.leader = False
        if self.sender is not None:
            self.sender.stop(timeout)


def _key_ms(key: str) -> int | None:
    head = key.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def build_monitor(
    settings: Settings,
    *,
    client: redis.Redis | None = None,
    calendar: TradingCalendar | None = None,
    **kwargs: Any,
) -> Monitor:
    """A monitor from the settings: apprise destinations of ``ALERT_URLS`` (raises
    :class:`pipeline.settings.SettingsError` naming a bad entry by position), a Redis client
    with short timeouts, the trading calendar."""
    targets = destinations(settings.alert_urls)
    client = client or redis.Redis.from_url(
        settings.redis_url.reveal(),
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=5,
    )
    sender = Sender(targets, DeliveryLog(client, Keys(settings.key_prefix, settings.partitions)))
    return Monitor(
        settings,
        client,
        sender=sender if targets else None,
        calendar=calendar or TradingCalendar.from_settings(settings),
        **kwargs,
    )
