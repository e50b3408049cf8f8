"""The alert monitor delivers over real HTTP as start/clear pairs, deduplicated, rate limited, one sender at a time, never a secret."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
import redis.asyncio

from jobs.monitor import (
    AUTH_FAILED_ID,
    Monitor,
    build_monitor,
    feed_down_id,
    gone_id,
    lag_id,
    trading_overlap_s,
)
from jobs.sender import FAILED, SENT, UNSENT, destinations
from pipeline.alerts import CRITICAL, WARNING
from pipeline.calendar import TradingCalendar
from pipeline.conditions import (
    RAW_ARCHIVE,
    REFRESH_EXPIRING,
    clear_condition,
    clear_condition_async,
    raise_condition,
    raise_condition_async,
)
from pipeline.days import WIB
from pipeline.keys import Keys
from pipeline.records import GapRecord
from pipeline.settings import Settings, SettingsError
from pipeline.status import CONNECTED, IngestorStatus, WriterStatus
from tests.conftest import Clock

pytestmark = pytest.mark.redis

# A trading Monday, 10:00 WIB (session 1).
MONDAY_10 = datetime(2026, 3, 2, 10, 0, tzinfo=WIB)
# The secrets every body is scanned for.
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJkYXRhIjp7InVpZCI6NDI0MiwidXNlIjoicmVhbCJ9LCJleHAi"
    "OjE3NzI0MjQwMDB9.8f3Jc2lnbmF0dXJlLW9mLWEtcmVhbC1sb29raW5nLXRva2Vu"
)
OTHER_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJyZWZyZXNoIjp0cnVlLCJ1aWQiOjF9.cmVmcmVzaC1zaWduYXR1cmU"
WS_KEY = "vQ3x9Zk2LmN8pR4tW7yB1cD5fG6hJ0sA3eU9iO2kM4n="
HOOK_SECRET = "hook-path-Xk39dkq02mZ"


class Receiver:
    """A JSON webhook on 127.0.0.1: records every POST body; answers ``status``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.status = 200
        self.delay_s = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                text = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                time.sleep(receiver.delay_s)
                with receiver.lock:
                    receiver.raw.append(text + " " + self.path + " " + str(self.headers))
                    receiver.bodies.append(json.loads(text))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/{HOOK_SECRET}"

    def titles(self) -> list[str]:
        with self.lock:
            return [b["title"] for b in self.bodies]

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.bodies) >= count:
                    return list(self.bodies)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} alerts, got {self.titles()}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def make_settings(redis_url: str, alert_urls: str = "", **extra: str) -> Settings:
    env = {
        "REDIS_URL": redis_url,
        "STOCKBIT_TOKEN": JWT,
        "STOCKBIT_WS_KEY": WS_KEY,
        "OBPIPE_ID": "jobs-test",
        "ALERT_REPEAT_MIN": "30",
        **extra,
    }
    if alert_urls:
        env["ALERT_URLS"] = alert_urls
    return Settings.from_env(env)


Factory = Callable[..., Monitor]


@pytest.fixture
def monitors(redis_url: str) -> Iterator[Factory]:
    made: list[Monitor] = []

    def make(alert_urls: str = "", clock: Clock | None = None, **kwargs: Any) -> Monitor:
        extra = kwargs.pop("env", {})
        settings = make_settings(redis_url, alert_urls, **extra)
        kwargs.setdefault("disk", lambda: (100 * 1024**3, 50 * 1024**3))
        monitor = build_monitor(
            settings, calendar=TradingCalendar(), clock=clock or Clock(MONDAY_10), **kwargs
        )
        if monitor.sender is not None:
            monitor.sender.start()
        made.append(monitor)
        return monitor

    yield make
    for monitor in made:
        monitor.stop(timeout=2)


KEYS = Keys()


def beat_ingestor(client: redis.Redis, now: datetime, pid: str, **fields: Any) -> None:
    status = IngestorStatus(id=pid, **fields)
    client.set(KEYS.ingestor(pid), status.to_json())
    client.zadd(KEYS.ingestors, {pid: int(now.timestamp() * 1000)})


def beat_writer(client: redis.Redis, now: datetime, pid: str, **fields: Any) -> None:
    client.set(KEYS.writer(pid), WriterStatus(id=pid, **fields).to_json())
    client.zadd(KEYS.writers, {pid: int(now.timestamp() * 1000)})


def secrets_in(text: str) -> list[str]:
    pieces = [JWT, OTHER_JWT, WS_KEY, HOOK_SECRET, *JWT.split("."), *OTHER_JWT.split(".")]
    return [p for p in pieces if p in text]


def stream(client: redis.Redis) -> list[dict[str, str]]:
    entries: list[tuple[str, dict[str, str]]] = client.xrange(KEYS.alerts)  # type: ignore[assignment]
    return [fields for _, fields in entries]


def add_gap(client: redis.Redis, gap: GapRecord) -> None:
    fields: dict[Any, Any] = gap.fields()
    client.xadd(KEYS.gaps, fields)


def delivery(client: redis.Redis, key: str) -> dict[str, Any]:
    raw = client.hget(KEYS.alerts_delivery, key)
    return json.loads(raw) if raw else {}


def wait_state(client: redis.Redis, key: str, state: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = delivery(client, key)
        if doc.get("state") == state:
            return doc
        time.sleep(0.02)
    raise AssertionError(f"{key}: {delivery(client, key)} never became {state}")


def test_conditions_from_status_keys_arrive_as_start_clear_pairs_without_secrets(
    monitors: Factory, receiver: Receiver, redis_client: redis.Redis
) -> None:
    clock = Clock(MONDAY_10)
    monitor = monitors(receiver.url, clock)
    leak = f"refused token {JWT} with key {WS_KEY} (alerts to {receiver.url})"
    beat_ingestor(
        redis_client, clock(), "ing-1", state="auth_failed", last_error=leak, tickers=["BBCA"]
    )
    beat_writer(redis_client, clock(), "wr-1", lag_seconds=45.0, lag_entries=9000)
    raise_condition(
        redis_client,
        KEYS,
        REFRESH_EXPIRING,
        WARNING,
        "Refresh token expires within 2 days",
        detail=f"refresh token {OTHER_JWT} expires 2026-03-04; log in again",
        source="ing-1",
    )
    monitor.step()
    bodies = receiver.wait_for(3)
    assert sorted(b["title"] for b in bodies) == [
        "obpipe CRITICAL: Stockbit refused the token (auth_failed)",
        "obpipe WARNING: Refresh token expires within 2 days",
        "obpipe WARNING: Writer wr-1 lags more than 30 s",
    ]
    assert {b["type"] for b in bodies} == {"failure", "warning"}

    # The same trouble, seen again and again: no repeats.
    for _ in range(5):
        clock.moment += timedelta(seconds=5)
        beat_ingestor(redis_client, clock(), "ing-1", state="auth_failed", last_error=leak)
        beat_writer(redis_client, clock(), "wr-1", lag_seconds=20.0)  # above half: still on
        monitor.step()
    time.sleep(0.3)
    assert len(receiver.titles()) == 3

    # All three end: one resolved alert each.
    clock.moment += timedelta(seconds=5)
    beat_ingestor(
        redis_client, clock(), "ing-1", state=CONNECTED, last_frame_at=clock().isoformat()
    )
    beat_writer(redis_client, clock(), "wr-1", lag_seconds=2.0)
    clear_condition(redis_client, KEYS, REFRESH_EXPIRING)
    monitor.step()
    bodies = receiver.wait_for(6)
    resolved = sorted(b["title"] for b in bodies[3:])
    assert resolved == [
        "obpipe RESOLVED: Refresh token expires within 2 days",
        "obpipe RESOLVED: Stockbit refused the token (auth_failed)",
        "obpipe RESOLVED: Writer wr-1 lags more than 30 s",
    ]
    assert all(b["type"] == "success" for b in bodies[3:])
    assert "Resolved after 30s" in bodies[3]["message"]
    monitor.step()
    time.sleep(0.2)
    assert len(receiver.titles()) == 6

    # Recorded for the page, each delivered.
    records = stream(redis_client)
    assert [r["kind"] for r in records] == ["start"] * 3 + ["clear"] * 3
    for record in records:
        wait_state(redis_client, record["key"], SENT)
    assert int(redis_client.hget(KEYS.counters, "alerts_sent") or 0) == 6
    assert redis_client.hgetall(KEYS.alerts_active) == {}

    # No secret in any body, record or delivery state (the URL's path is a secret too).
    everything = (
        "".join(receiver.raw)
        + json.dumps(records)
        + json.dumps(redis_client.hgetall(KEYS.alerts_delivery))
        + json.dumps(redis_client.get(KEYS.alerts_monitor))
    )
    assert secrets_in("".join(receiver.raw).split(" /", 1)[0]) == []
    for body in receiver.bodies:
        assert secrets_in(json.dumps(body)) == []
    assert secrets_in(json.dumps(records)) == []
    assert secrets_in(everything.replace(f"/{HOOK_SECRET} ", " ")) == []
    assert "<hidden>" in bodies[0]["message"] + bodies[1]["message"] + bodies[2]["message"]


def test_gone_only_for_a_crash_never_for_a_clean_stop(
    monitors: Factory, receiver: Receiver, redis_client: redis.Redis
) -> None:
    clock = Clock(MONDAY_10)
    monitor = monitors(receiver.url, clock)
    for pid in ("host-a-11", "host-b-12"):
        beat_ingestor(
            redis_client, clock(), pid, state=CONNECTED, last_frame_at=clock().isoformat()
        )
    beat_writer(redis_client, clock(), "host-c-13")
    beat_writer(redis_client, clock(), "host-d-14")
    monitor.step()

    # host-b stops cleanly (leaves the ZSET, as Roster.leave does); host-d's writer as
    # WriterService.shutdown does; host-a is killed: its member stays, its beat ages.
    clock.moment += timedelta(seconds=3)
    redis_client.zrem(KEYS.ingestors, "host-b-12")
    redis_client.zrem(KEYS.writers, "host-d-14")
    redis_client.delete(KEYS.writer("host-d-14"))
    beat_writer(redis_client, clock(), "host-c-13")
    monitor.step()
    for _ in range(4):
        clock.moment += timedelta(seconds=5)
        beat_writer(redis_client, clock(), "host-c-13")
        monitor.step()
    bodies = receiver.wait_for(1)
    time.sleep(0.3)
    assert receiver.titles() == ["obpipe CRITICAL: The ingestor host-a-11 is gone"]
    assert "did not stop cleanly" in bodies[0]["message"]

    # A peer prunes the dead member from the ZSET: still gone (it was seen dead, not leaving).
    redis_client.zrem(KEYS.ingestors, "host-a-11")
    clock.moment += timedelta(seconds=5)
    beat_writer(redis_client, clock(), "host-c-13")
    monitor.step()
    assert gone_id("ingestor", "host-a-11") in redis_client.hgetall(KEYS.alerts_active)

    # Restarted on the same host under a new pid: the replacement clears it.
    clock.moment += timedelta(seconds=5)
    beat_ingestor(redis_client, clock(), "host-a-99", state=CONNECTED)
    beat_writer(redis_client, clock(), "host-c-13")
    monitor.step()
    bodies = receiver.wait_for(2)
    assert bodies[1]["title"] == "obpipe RESOLVED: The ingestor host-a-11 is gone"
    assert "Replaced by ingestor host-a-99 on the same host." in bodies[1]["message"]


def test_feed_down_during_trading_and_gap_records(
    monitors: Factory, receiver: Receiver, redis_client: redis.Redis
) -> None:
    clock = Clock(MONDAY_10)
    monitor = monitors(receiver.url, clock, env={"ALERT_GAP_S": "60"})
    last_frame = clock() - timedelta(seconds=30)
    down = {"state": "reconnecting", "last_frame_at": last_frame.isoformat(), "tickers": ["BBCA"]}
    beat_ingestor(redis_client, clock(), "ing-1", **down)
    monitor.step()  # 30 s without a feed: not yet
    clock.moment += timedelta(seconds=40)
    beat_ingestor(redis_client, clock(), "ing-1", **down)
    monitor.step()  # 70 s of trading without a feed
    bodies = receiver.wait_for(1)
    assert bodies[0]["title"] == "obpipe CRITICAL: Ingestor ing-1 has no feed during trading"
    clock.moment += timedelta(seconds=10)
    beat_ingestor(
        redis_client, clock(), "ing-1", state=CONNECTED, last_frame_at=clock().isoformat()
    )
    # The gap record of that same outage: already told by the start/clear pair.
    covered = GapRecord(
        last_frame.isoformat(), clock().isoformat(), "disconnect", ("BBCA",), "ing-1"
    )
    add_gap(redis_client, covered)
    # Another ingestor's overflow gap of 95 s in session 1: an event.
    start = MONDAY_10 - timedelta(minutes=20)
    gap = GapRecord(
        start.isoformat(),
        (start + timedelta(seconds=95)).isoformat(),
        "overflow",
        ("TLKM",),
        "ing-2",
    )
    add_gap(redis_client, gap)
    # Long gaps outside continuous trading (night, lunch) and a short one: no alert.
    night = datetime(2026, 3, 2, 2, 0, tzinfo=WIB)
    lunch = datetime(2026, 3, 2, 12, 5, tzinfo=WIB)
    for begin, seconds in ((night, 3600), (lunch, 3000), (MONDAY_10 - timedelta(minutes=5), 50)):
        quiet = GapRecord(
            begin.isoformat(),
            (begin + timedelta(seconds=seconds)).isoformat(),
            "disconnect",
            (),
            "ing-3",
        )
        add_gap(redis_client, quiet)
    monitor.step()
    bodies = receiver.wait_for(3)
    time.sleep(0.3)
    titles = receiver.titles()
    assert titles[1:] == [
        "obpipe RESOLVED: Ingestor ing-1 has no feed during trading",
        "obpipe WARNING: Gap of 1m 35s in the feed during trading",
    ]
    assert (
        "Cause overflow, 2026-03-02 09:40:00 WIB to 2026-03-02 09:41:35 WIB" in bodies[2]["message"]
    )
    monitor.step()
    time.sleep(0.2)
    assert len(receiver.titles()) == 3  # each gap record is looked at once


def test_trading_overlap_counts_continuous_sessions_only() -> None:
    calendar = TradingCalendar()
    day = datetime(2026, 3, 2, 0, 0, tzinfo=WIB)  # Monday
    assert trading_overlap_s(calendar, day, day + timedelta(days=1)) == calendar.trading_seconds(
        day
    )
    lunch = day.replace(hour=11, minute=59)
    assert (
        trading_overlap_s(calendar, lunch, lunch + timedelta(hours=2)) == 60 + 29 * 60
    )  # 11:59-12:00 and 13:30-13:59
    saturday = datetime(2026, 3, 7, 10, 0, tzinfo=WIB)
    assert trading_overlap_s(calendar, saturday, saturday + timedelta(hours=3)) == 0


def test_rate_limit_digest_and_reminders_over_http(
    monitors: Factory, receiver: Receiver, redis_client: redis.Redis
) -> None:
    clock = Clock(MONDAY_10)
    monitor = monitors(receiver.url, clock, env={"ALERT_REPEAT_MIN": "1"}, max_per_window=4)
    for n in range(10):
        raise_condition(
            redis_client, KEYS, f"{RAW_ARCHIVE}:{n}", CRITICAL, f"Raw archive {n} cannot write"
        )
    monitor.step()
    bodies = receiver.wait_for(4)
    time.sleep(0.3)
    titles = receiver.titles()
    assert len(titles) == 4  # three alone and one digest of the seven others
    assert titles[3] == "obpipe CRITICAL: 7 more alerts (rate limit)"
    assert all(f"Raw archive {n} cannot write" in bodies[3]["message"] for n in range(3, 10))
    records = stream(redis_client)
    assert len(records) == 11 and records[-1]["kind"] == "digest"
    assert delivery(redis_client, records[5]["key"])["state"] == "coalesced"

    # Nothing new for 59 s; at 60 s one reminder per critical condition (rate limited too).
    clock.moment += timedelta(seconds=59)
    monitor.step()
    time.sleep(0.2)
    assert len(receiver.titles()) == 4
    clock.moment += timedelta(seconds=2)
    monitor.step()
    bodies = receiver.wait_for(8)
    assert bodies[4]["title"] == "obpipe CRITICAL (still): Raw archive 0 cannot write"
    assert "Still active after 1m 1s" in bodies[4]["message"]


def test_a_failing_receiver_is_counted_and_never_holds_the_monitor_up(
    monitors: Factory, receiver: Receiver, redis_client: redis.Redis
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    receiver.status = 500
    receiver.delay_s = 1.0  # slow as well as failing
    urls = f"{receiver.url}?rto=3 json://127.0.0.1:{dead_port}/x?cto=1"
    clock = Clock(MONDAY_10)
    monitor = monitors(urls, clock)
    assert monitor.sender is not None
    monitor.sender.retry_delays = (0.2,)
    beat_ingestor(redis_client, clock(), "ing-1", state="auth_failed")
    started = time.monotonic()
    for _ in range(5):
        monitor.step()
        clock.moment += timedelta(seconds=5)
        beat_ingestor(redis_client, clock(), "ing-1", state="auth_failed")
    assert time.monotonic() - started < 1.0  # the sends happen elsewhere
    key = stream(redis_client)[0]["key"]
    doc = wait_state(redis_client, key, FAILED)
    assert doc["attempts"] == 2 and doc["failed_to"] == ["#1 JSON", "#2 JSON"]
    assert len(receiver.bodies) == 2  # tried twice, 500 both times
    assert int(redis_client.hget(KEYS.counters, "alerts_failed") or 0) == 4
    assert int(redis_client.hget(KEYS.counters, "alerts_sent") or 0) == 0

    # The receiver recovers: the clear goes through.
    receiver.status = 200
    receiver.delay_s = 0
    beat_ingestor(redis_client, clock(), "ing-1", state=CONNECTED)
    monitor.step()
    clear_key = stream(redis_client)[-1]["key"]
    doc = wait_state(redis_client, clear_key, "partial")
    assert doc["sent_to"] == ["#1 JSON"]


def test_one_monitor_sends_at_a_time_and_the_next_carries_on(
    monitors: Factory, receiver: Receiver, redis_client: redis.Redis
) -> None:
    clock = Clock(MONDAY_10)
    first = monitors(receiver.url, clock)
    second = monitors(receiver.url, clock)
    beat_writer(redis_client, clock(), "wr-1", state="disk_error", last_error="No space left")
    for _ in range(3):
        first.step()
        second.step()
    receiver.wait_for(1)
    time.sleep(0.3)
    assert receiver.titles() == ["obpipe CRITICAL: Writer wr-1 cannot write to disk"]
    assert first.leader and not second.leader
    status = json.loads(redis_client.get(KEYS.alerts_monitor) or "{}")
    assert status["id"] == first.id and status["destinations"] == 1
    assert status["services"] == ["JSON"]

    first.stop()  # hands the lock over at once
    beat_writer(redis_client, clock(), "wr-1", state="running")
    second.step()
    assert second.leader
    bodies = receiver.wait_for(2)
    time.sleep(0.2)
    assert [b["title"] for b in bodies] == [
        "obpipe CRITICAL: Writer wr-1 cannot write to disk",
        "obpipe RESOLVED: Writer wr-1 cannot write to disk",
    ]


def test_without_alert_urls_alerts_are_recorded_not_sent(
    monitors: Factory, redis_client: redis.Redis
) -> None:
    clock = Clock(MONDAY_10)
    monitor = monitors("", clock, disk=lambda: (100 * 1024**3, 1 * 1024**3))
    monitor.step()
    records = stream(redis_client)
    assert [(r["kind"], r["condition"]) for r in records] == [("start", "disk_space")]
    doc = delivery(redis_client, records[0]["key"])
    assert doc["state"] == UNSENT and doc["detail"] == "not sent: no ALERT_URLS"
    status = json.loads(redis_client.get(KEYS.alerts_monitor) or "{}")
    assert status["destinations"] == 0


def test_redis_outage_is_alerted_by_the_lock_holder(
    monitors: Factory,
    receiver: Receiver,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(MONDAY_10)
    monitor = monitors(receiver.url, clock)
    monitor.step()
    assert monitor.leader

    def down(*_: Any, **__: Any) -> Any:
        raise redis.ConnectionError("connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(monitor, "_lead", down)
        ticks = iter([1000.0, 1010.0, 1040.0])
        patch.setattr(monitor, "monotonic", lambda: next(ticks))
        for _ in range(3):
            monitor.step()
    bodies = receiver.wait_for(1)
    assert bodies[0]["title"] == "obpipe CRITICAL: Redis is unreachable"
    monitor.step()  # Redis is back: the clear, and the start recorded after all
    bodies = receiver.wait_for(2)
    assert bodies[1]["title"] == "obpipe RESOLVED: Redis is unreachable"
    assert [r["kind"] for r in stream(redis_client)] == ["start", "clear"]


def test_monitor_thread_and_lapsing_conditions(
    redis_url: str, receiver: Receiver, redis_client: redis.Redis
) -> None:
    settings = make_settings(redis_url, receiver.url)
    monitor = build_monitor(settings, poll_s=0.05, disk=lambda: None).start()
    try:
        raise_condition(
            redis_client, KEYS, RAW_ARCHIVE, CRITICAL, "Raw archive cannot write", ttl_s=0.5
        )
        bodies = receiver.wait_for(2)  # started, then lapsed without a clear_condition call
        assert [b["title"] for b in bodies] == [
            "obpipe CRITICAL: Raw archive cannot write",
            "obpipe RESOLVED: Raw archive cannot write",
        ]
        assert redis_client.hget(KEYS.alert_conditions, RAW_ARCHIVE) is None
    finally:
        monitor.stop()
    assert redis_client.get(KEYS.alerts_lock) is None  # handed over on stop


def test_async_raise_and_clear(redis_url: str, redis_client: redis.Redis) -> None:
    async def go() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        await raise_condition_async(client, KEYS, REFRESH_EXPIRING, WARNING, "Refresh soon")
        assert redis_client.hexists(KEYS.alert_conditions, REFRESH_EXPIRING)
        await clear_condition_async(client, KEYS, REFRESH_EXPIRING)
        await client.aclose()

    asyncio.run(go())
    assert redis_client.hgetall(KEYS.alert_conditions) == {}


def test_bad_alert_urls_are_named_by_position_only() -> None:
    settings = Settings.from_env(
        {"ALERT_URLS": "json://127.0.0.1:9/ok tgramm://SECRETBOTTOKEN123/456 ntfy://topic"}
    )
    with pytest.raises(SettingsError) as caught:
        destinations(settings.alert_urls)
    message = str(caught.value)
    assert "entry 2 of 3 (tgramm://...)" in message
    assert "SECRETBOTTOKEN123" not in message
    assert [d.name for d in destinations(settings.alert_urls[::2])] == ["#1 JSON", "#2 ntfy"]


def test_condition_ids_are_stable_and_valid() -> None:
    assert feed_down_id("Host-A-1") == "feed_down:host-a-1"
    assert lag_id("w-1") == "writer_lag:w-1"
    assert AUTH_FAILED_ID == "auth_failed"
    when = datetime(2026, 3, 2, tzinfo=UTC)
    with pytest.raises(ValueError):
        raise_condition(redis.Redis(), KEYS, "Bad Id", WARNING, "x", now=when)


def test_obpipe_alerts_lists_active_and_recent(
    monitors: Factory,
    redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipeline import cli

    monitor = monitors("", Clock(MONDAY_10))
    beat_ingestor(redis_client, MONDAY_10, "ing-1", state="auth_failed")
    monitor.step()
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert cli.main(["alerts"]) == 0
    out = capsys.readouterr().out
    assert "sending to nowhere: no ALERT_URLS" in out
    assert "critical Stockbit refused the token (auth_failed)" in out
    assert "start    unsent     obpipe CRITICAL: Stockbit refused the token" in out
