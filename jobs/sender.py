"""Alert delivery through apprise, on a background thread that never holds up the monitor.

``ALERT_URLS`` is one list of apprise URLs (Telegram, Discord, Slack, ntfy, e-mail, a JSON
webhook, ...); :func:`destinations` turns each into an apprise plugin once, at start, and
refuses an entry apprise cannot use with an error that names it by position (``entry 2 of
3``) and scheme only — the rest of a URL is a credential.

The monitor hands alerts to :meth:`Sender.submit`, which only puts them on a bounded queue
(a full queue drops the alert, counts and records it: never a wait). The sender thread sends
each alert to every destination in turn, with apprise's own connect/read timeouts (4 s
each unless the URL says ``cto=``/``rto=``), and retries the destinations that failed after
30 s and 2 min, while later alerts go on being sent. Every outcome is logged (by position
and service, never the URL), counted in the ``counters`` hash (``alerts_sent``,
``alerts_failed``: one per destination and attempt) and written to the ``alerts:delivery``
hash, which the status page shows. If Redis is down those writes wait in memory and are
written when it is back.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import redis

from pipeline.alerts import CLEAR, CRITICAL, INFO, Alert
from pipeline.keys import Keys
from pipeline.secret import Secret
from pipeline.settings import SettingsError

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (30.0, 120.0)
"""Waits before the 2nd and 3rd attempt at the destinations that failed."""
QUEUE_MAX = 200
"""Alerts waiting to be sent at most; more is a sign the destinations are all down."""
RECORDS_MAX = 2000
"""Delivery states kept in memory while Redis is unreachable."""
FLUSH_BACKOFF_S = 5.0
"""After a failed write, the next is tried this much later (no timeout per alert)."""

PENDING = "pending"
"""Queued for the sender thread."""
SENT = "sent"
"""Every destination accepted it."""
PARTIAL = "partial"
"""Some destinations accepted it; the others failed every attempt."""
RETRYING = "retrying"
"""At least one destination failed; another attempt is scheduled."""
FAILED = "failed"
"""No destination accepted it, after every attempt."""
DROPPED = "dropped"
"""The sender's queue was full: not sent."""
UNSENT = "unsent"
"""``ALERT_URLS`` is empty: recorded and shown, not sent."""
HELD = "held"
"""Kept back by the rate limit; sent later, alone or in a digest."""
COALESCED = "coalesced"
"""Sent as part of a digest (``digest`` names it)."""


class Plugin(Protocol):
    """The part of an apprise plugin the sender uses."""

    @property
    def service_name(self) -> str | None:
        """The service's name ("Telegram", "JSON")."""

    def notify(self, body: str, title: str = "", notify_type: Any = ..., **kwargs: Any) -> bool:
        """Send one notification; True on success."""


@dataclass(frozen=True)
class Destination:
    """One ``ALERT_URLS`` entry, ready to send to; named by position and service only."""

    position: int
    service: str
    plugin: Plugin

    @property
    def name(self) -> str:
        """``#2 Telegram`` — what logs and the page call it."""
        return f"#{self.position} {self.service}"


@contextlib.contextmanager
def _quiet_apprise() -> Iterator[None]:
    # apprise logs an unparseable URL at ERROR, in full; at start-up nothing scrubs yet.
    logger = logging.getLogger("apprise")
    saved = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = saved


def destinations(urls: Sequence[Secret]) -> list[Destination]:
    """An apprise plugin per URL; :class:`SettingsError` naming each entry apprise refuses."""
    if not urls:
        return []
    import apprise  # noqa: PLC0415 — 0.5 s of plugin loading, only where alerts are sent

    out: list[Destination] = []
    problems: list[str] = []
    asset = apprise.AppriseAsset(secure_logging=True)
    with _quiet_apprise():
        for position, url in enumerate(urls, 1):
            text = url.reveal()
            scheme = text.split("://", 1)[0].lower()
            try:
                plugin = apprise.Apprise.instantiate(text, asset=asset)
            except Exception:  # a plugin's constructor may raise anything on odd input
                plugin = None
            if plugin is None:
                problems.append(
                    f"ALERT_URLS: entry {position} of {len(urls)} ({scheme}://...) is not a "
                    "URL apprise can send to; check its format in the apprise wiki "
                    f"(https://github.com/caronc/apprise/wiki, service '{scheme}')"
                )
                continue
            out.append(Destination(position, str(plugin.service_name), plugin))
    if problems:
        raise SettingsError(problems)
    return out


def notify_type(alert: Alert) -> str:
    """apprise's notification type: green for a clear, red for critical, blue for a notice
    (the daily recap), amber otherwise."""
    if alert.kind == CLEAR:
        return "success"
    if alert.severity == INFO:
        return "info"
    return "failure" if alert.severity == CRITICAL else "warning"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class DeliveryLog:
    """Writes delivery states and counters to Redis; keeps them while Redis is down."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._lock = threading.Lock()
        self._states: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self._retry_at = 0.0

    def state(self, key: str, state: str, **extra: Any) -> None:
        """Record alert ``key``'s delivery state (later calls overwrite earlier ones)."""
        doc = {"state": state, "updated_at": _now_iso(), **extra}
        with self._lock:
            self._states[key] = json.dumps(doc, separators=(",", ":"))
            while len(self._states) > RECORDS_MAX:
                self._states.pop(next(iter(self._states)))
        self.flush()

    def count(self, name: str, amount: int = 1) -> None:
        """Add to a counter of the ``counters`` hash."""
        if amount:
            with self._lock:
                self._counts[name] = self._counts.get(name, 0) + amount
            self.flush()

    def flush(self) -> bool:
        """Write what is waiting; False (and kept) if Redis cannot be reached."""
        with self._lock:
            states, counts = dict(self._states), dict(self._counts)
        if not states and not counts:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            pipe = self.client.pipeline(transaction=False)
            if states:
                pipe.hset(self.keys.alerts_delivery, mapping=cast(dict[Any, Any], states))
            for name, amount in counts.items():
                pipe.hincrby(self.keys.counters, name, amount)
            pipe.execute()
        except redis.RedisError as exc:
            log.debug("alert delivery state not written yet: %s", type(exc).__name__)
            self._retry_at = time.monotonic() + FLUSH_BACKOFF_S
            return False
        with self._lock:
            for key, value in states.items():
                if self._states.get(key) == value:
                    del self._states[key]
            for name, amount in counts.items():
                left = self._counts.get(name, 0) - amount
                if left:
                    self._counts[name] = left
                else:
                    self._counts.pop(name, None)
        return True


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    alert: Alert = field(compare=False)
    targets: list[Destination] = field(compare=False)
    attempt: int = field(default=1, compare=False)
    ok: list[str] = field(default_factory=list, compare=False)


class Sender:
    """The background sender (one thread). ``submit`` never blocks."""

    def __init__(
        self,
        targets: Sequence[Destination],
        delivery: DeliveryLog,
        *,
        retry_delays: Sequence[float] = RETRY_DELAYS_S,
        queue_max: int = QUEUE_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.targets = list(targets)
        self.delivery = delivery
        self.retry_delays = tuple(retry_delays)
        self.clock = clock
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=queue_max)
        self._retries: list[_Job] = []
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.sent = 0
        self.failed = 0

    @property
    def attempts_max(self) -> int:
        """Attempts per destination, the first included."""
        return 1 + len(self.retry_delays)

    @property
    def backlog(self) -> int:
        """Alerts queued or waiting for a retry."""
        return self._queue.qsize() + len(self._retries)

    def start(self) -> Sender:
        """Start the thread (a daemon: it never keeps the process alive)."""
        self._thread = threading.Thread(target=self._run, name="alert-sender", daemon=True)
        self._thread.start()
        return self

    def submit(self, alert: Alert) -> bool:
        """Queue ``alert`` for every destination; False (dropped, recorded) if the queue is
        full. Returns at once either way."""
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            log.error("alert %s dropped: the sender's queue is full", alert.key)
            self.delivery.state(alert.key, DROPPED, attempts=0, detail="sender queue full")
            self.delivery.count("alerts_dropped")
            return False
        self.delivery.state(alert.key, PENDING, attempts=0, destinations=len(self.targets))
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (for at most ``timeout`` seconds), then end the thread."""
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self._thread is not None:
            self._thread.join(timeout)
        running = self._thread is not None and self._thread.is_alive()
        for job in [] if running else list(self._retries):
            # The next attempt would have come after the stop: say so rather than "retrying".
            self.delivery.state(
                job.alert.key, PARTIAL if job.ok else FAILED, attempts=job.attempt - 1,
                sent_to=job.ok, failed_to=[t.name for t in job.targets], detail="stopped",
            )  # fmt: skip
        self.delivery.flush()

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            wait = 5.0
            if self._retries:
                wait = max(0.0, min(wait, self._retries[0].due - self.clock()))
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            else:
                if item is None and self._stopping.is_set():
                    return
            try:
                if item is not None:
                    self._seq += 1
                    self._attempt(_Job(self.clock(), self._seq, item, list(self.targets)))
                while self._retries and self._retries[0].due <= self.clock():
                    self._attempt(heapq.heappop(self._retries))
                self.delivery.flush()
            except Exception:  # the sender must outlive any bug in one delivery
                log.exception("alert sender: unexpected error")
            if self._stopping.is_set() and self._queue.empty():
                return

    def _attempt(self, job: _Job) -> None:
        alert = job.alert
        failed: list[Destination] = []
        for target in job.targets:
            try:
                ok = bool(
                    target.plugin.notify(
                        body=alert.body, title=alert.subject, notify_type=notify_type(alert)
                    )
                )
            except Exception as exc:  # apprise plugins should not raise, but may
                log.warning("alert %s to %s raised %s", alert.key, target.name, type(exc).__name__)
                ok = False
            if ok:
                job.ok.append(target.name)
            else:
                failed.append(target)
        self.sent += len(job.targets) - len(failed)
        self.failed += len(failed)
        self.delivery.count("alerts_sent", len(job.targets) - len(failed))
        self.delivery.count("alerts_failed", len(failed))
        names = [t.name for t in failed]
        if not failed:
            log.info("alert %s sent (%s): %s", alert.key, ", ".join(job.ok), alert.subject)
            self.delivery.state(alert.key, SENT, attempts=job.attempt, sent_to=job.ok)
            return
        if job.attempt < self.attempts_max and not self._stopping.is_set():
            delay = self.retry_delays[job.attempt - 1]
            log.warning(
                "alert %s: sending to %s failed (attempt %d of %d); retrying in %.0f s",
                alert.key, ", ".join(names), job.attempt, self.attempts_max, delay,
            )  # fmt: skip
            self.delivery.state(
                alert.key, RETRYING, attempts=job.attempt, sent_to=job.ok, failed_to=names
            )
            self._seq += 1
            heapq.heappush(
                self._retries,
                _Job(self.clock() + delay, self._seq, alert, failed, job.attempt + 1, job.ok),
            )
            return
        state = PARTIAL if job.ok else FAILED
        log.error(
            "alert %s: sending to %s failed %d time(s); giving up: %s",
            alert.key, ", ".join(names), job.attempt, alert.subject,
        )  # fmt: skip
        self.delivery.state(alert.key, state, attempts=job.attempt, sent_to=job.ok, failed_to=names)


def send_test(urls: Sequence[Secret]) -> list[tuple[str, bool]]:
    """Send one test notification to each ``ALERT_URLS`` entry, now, in this thread (for
    ``obpipe alerts --test``): each destination's name and whether it accepted it. Raises
    :class:`SettingsError` for an entry apprise cannot use."""
    results = []
    for target in destinations(urls):
        try:
            ok = bool(
                target.plugin.notify(
                    body="A test from `obpipe alerts --test`: alerts reach this destination.",
                    title="obpipe test alert",
                    notify_type="info",
                )
            )
        except Exception:  # reported as a failure; the reason is in apprise's log line
            ok = False
        results.append((target.name, ok))
    return results
