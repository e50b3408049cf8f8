"""The token refresher: timing (fake clock, calendar), lock and fencing, failures (real Redis)."""

# The refresh endpoint is faked with the simulator's own credentials (rotation, reuse, re-login).

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from ingestor.credentials import CredentialsError, RefreshRefusedError
from ingestor.refresher import (
    EXPIRED,
    FAILING,
    LOCK_BUSY_S,
    OK,
    REFUSED,
    Refresher,
    RefreshLock,
    effective_margin,
    plan_handover,
    plan_refresh,
)
from ingestor.tokens import commit_refresh, parse_input, read_store, store_pair
from pipeline.calendar import TradingCalendar
from pipeline.conditions import REFRESH_EXPIRING, REFRESH_FAILED
from pipeline.days import WIB
from pipeline.keys import Keys
from pipeline.settings import Settings
from simulator.credentials import Credentials as SimCredentials
from simulator.credentials import mint_refresh, mint_token

CAL = TradingCalendar()
DAY = 86_400.0
KEYS = Keys()


def wib(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=WIB)


# ---- timing (pure) -------------------------------------------------------------------------


def test_margin_is_capped_at_a_third_of_the_lifetime() -> None:
    assert effective_margin(10_800, DAY) == 10_800
    assert effective_margin(10_800, 20) == pytest.approx(20 / 3)
    assert effective_margin(10_800, None) == 10_800
    # 20-second tokens: renewed at 13.3 s of age, whatever the calendar says.
    issued = wib("2026-03-02T10:00:00")
    plan = plan_refresh(
        now=issued,
        expires_at=issued + timedelta(seconds=20),
        lifetime_s=20,
        margin_s=10_800,
        calendar=CAL,
    )
    assert plan.reason == "margin"
    assert plan.due_at == issued + timedelta(seconds=20 - 20 / 3)


def test_margin_rule_when_the_next_close_is_covered() -> None:
    # Saturday morning token: the first uncovered close is Monday's, reachable later.
    issued = wib("2026-03-07T10:00:00")
    plan = plan_refresh(
        now=issued, expires_at=issued + timedelta(days=1), lifetime_s=DAY, margin_s=10_800,
        calendar=CAL,
    )  # fmt: skip
    assert (plan.reason, plan.due_at) == ("margin", wib("2026-03-08T07:00:00"))


def test_close_guard_renews_the_evening_before_a_trading_day() -> None:
    # Issued Monday 09:00, it covers Monday's close but not Tuesday's: renew Monday 17:00
    # (Tuesday 16:45 - 24 h + 15 min), long before the margin rule (Tuesday 06:00) would.
    issued = wib("2026-03-02T09:00:00")
    plan = plan_refresh(
        now=issued + timedelta(hours=1), expires_at=issued + timedelta(days=1),
        lifetime_s=DAY, margin_s=10_800, calendar=CAL,
    )  # fmt: skip
    assert (plan.reason, plan.due_at) == ("close guard", wib("2026-03-02T17:00:00"))
    # Started mid-morning with a token dying at 12:00: renew at once.
    plan = plan_refresh(
        now=wib("2026-03-03T10:00:00"), expires_at=wib("2026-03-03T12:00:00"),
        lifetime_s=DAY, margin_s=60, calendar=CAL,
    )  # fmt: skip
    assert plan.reason == "close guard" and plan.due_at < wib("2026-03-03T10:00:00")


def test_close_guard_skips_holidays_and_needs_a_long_enough_lifetime() -> None:
    # Tuesday 17 March 2026; 18-24 March are closed (Nyepi, Eid al-Fitr and joint leave):
    # the next close to cover is Wednesday 25th's.
    issued = wib("2026-03-17T09:00:00")
    plan = plan_refresh(
        now=issued + timedelta(hours=9), expires_at=issued + timedelta(days=1),
        lifetime_s=DAY, margin_s=10_800, calendar=CAL,
    )  # fmt: skip
    assert plan.reason == "margin" and plan.due_at == wib("2026-03-18T06:00:00")
    # An 8-hour token renewed before a pre-opening cannot last until 16:45: margin only.
    issued = wib("2026-03-02T06:00:00")
    plan = plan_refresh(
        now=issued, expires_at=issued + timedelta(hours=8), lifetime_s=8 * 3600,
        margin_s=10_800, calendar=CAL,
    )  # fmt: skip
    assert plan.reason == "margin"


def test_a_month_of_24h_tokens_lasts_past_every_close_from_the_pre_opening() -> None:
    """Fake clock over a month of the IDX calendar: renew whenever due; at every trading
    day's pre-opening the token on file lasts past 16:45 WIB."""
    now = wib("2026-02-27T12:00:00")  # a Friday
    expires = now + timedelta(hours=20)
    refreshes = 0
    checked = 0
    end = wib("2026-04-01T00:00:00")
    while now < end:
        plan = plan_refresh(
            now=now, expires_at=expires, lifetime_s=DAY, margin_s=10_800, calendar=CAL
        )
        if plan.due_at <= now:
            expires = now + timedelta(days=1)
            refreshes += 1
        spans = CAL.phases(now)
        if spans and spans[0].start <= now < spans[0].start + timedelta(minutes=5):
            guard = CAL.after_close(now)
            assert guard is not None and expires >= guard, f"{now}: token ends {expires}"
            checked += 1
        assert expires > now, "never expired"
        now += timedelta(minutes=5)
    assert checked >= 15 and refreshes <= 2 * 33


def test_handover_before_expiry_or_before_the_pre_opening() -> None:
    issued = wib("2026-03-02T10:00:00")
    short = plan_handover(
        now=issued, expires_at=issued + timedelta(seconds=20), lifetime_s=20, calendar=CAL
    )
    assert short.at == issued + timedelta(seconds=15) and short.covering is None
    # A 24 h token expiring Tuesday 12:00 moves Tuesday 08:35, to a token lasting past 16:45.
    early = plan_handover(
        now=wib("2026-03-02T20:00:00"), expires_at=wib("2026-03-03T12:00:00"),
        lifetime_s=DAY, calendar=CAL,
    )  # fmt: skip
    assert early.at == wib("2026-03-03T08:35:00")
    assert early.covering == wib("2026-03-03T16:45:00")
    # Expiring in the night: moves two minutes ahead; without a calendar likewise.
    night = plan_handover(
        now=wib("2026-03-02T20:00:00"), expires_at=wib("2026-03-03T05:00:00"),
        lifetime_s=DAY, calendar=CAL,
    )  # fmt: skip
    assert night.at == wib("2026-03-03T04:58:00") and night.covering is None
    plain = plan_handover(
        now=wib("2026-03-02T20:00:00"), expires_at=wib("2026-03-03T12:00:00"),
        lifetime_s=DAY, calendar=None,
    )  # fmt: skip
    assert plain.at == wib("2026-03-03T11:58:00")


# ---- the refresher against Redis -------------------------------------------------------------


class Endpoint:
    """A fake /login/refresh with rotation (the simulator's credentials), counting calls."""

    def __init__(self, clock: Any, access_ttl: float = DAY, refresh_ttl: float = 7 * DAY) -> None:
        self.creds = SimCredentials("tests", access_ttl=access_ttl, refresh_ttl=refresh_ttl)
        self.clock = clock
        self.calls = 0
        self.delay = 0.0
        self.fail: Exception | None = None

    def login(self) -> str:
        return json.dumps(self.creds.relogin(self.clock().timestamp()))

    def __call__(self, refresh: str) -> tuple[str, str]:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        pair, why = self.creds.refresh(refresh, self.clock().timestamp())
        if pair is None:
            raise RefreshRefusedError(f"refused ({why}, HTTP 401)")
        return pair["data"]["access"]["token"], pair["data"]["refresh"]["token"]


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


@pytest.fixture
def flushed(redis_url: str) -> Iterator[str]:
    yield redis_url


def make(path: Path, url: str, name: str, clock: Clock, endpoint: Endpoint) -> Refresher:
    settings = Settings.from_env(
        {"STOCKBIT_TOKEN_FILE": str(path), "REDIS_URL": url, "OBPIPE_ID": name}
    )
    client = aioredis.Redis.from_url(url)
    return Refresher(settings, client, KEYS, CAL, exchange=endpoint, clock=clock)


def store(path: Path, text: str, clock: Clock) -> None:
    parsed = parse_input(text)
    assert parsed.access is not None
    store_pair(path, parsed.access, parsed.refresh, now=clock(), by="test")


def conditions(url: str) -> dict[str, dict[str, Any]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        raw: Any = client.hgetall(KEYS.alert_conditions)
        return {k: json.loads(v) for k, v in raw.items()}
    finally:
        client.close()


@pytest.mark.redis
def test_two_refreshers_spend_each_refresh_token_once(tmp_path: Path, flushed: str) -> None:
    # A 20 s access token, 14 s old: due (margin 6.7 s). Both look at once; one refreshes.
    clock = Clock(datetime.now(UTC))
    endpoint = Endpoint(lambda: clock.moment - timedelta(seconds=14), access_ttl=20)
    path = tmp_path / "token"
    store(path, endpoint.login(), clock)
    endpoint.clock = clock
    endpoint.delay = 0.3  # the second one tries while the first holds the lock
    a, b = (make(path, flushed, n, clock, endpoint) for n in ("ref-a", "ref-b"))

    async def both() -> list[float]:
        try:
            return list(await asyncio.gather(a.step(), b.step()))
        finally:
            await a.client.aclose()
            await b.client.aclose()

    waits = asyncio.run(both())
    assert endpoint.calls == 1 and endpoint.creds.stats.refresh_reuse == 0
    assert LOCK_BUSY_S in waits, "the other one saw the lock taken"
    stored = read_store(path)
    assert stored.fence == 1 and stored.refreshed_by in ("ref-a", "ref-b")
    assert a.refreshes + b.refreshes == 1
    raw = redis.Redis.from_url(flushed)
    assert int(raw.hget(KEYS.counters, "token_refreshes") or 0) == 1
    assert raw.get(KEYS.token_refresh_lock) is None, "released"
    assert int(raw.get(KEYS.token_refresh_epoch) or 0) == 1
    raw.close()

    # The loser's next look: the file is fresh, nothing is due, nobody spends anything.
    async def again() -> float:
        other = make(path, flushed, "ref-b", clock, endpoint)
        try:
            return await other.step()
        finally:
            await other.client.aclose()

    assert asyncio.run(again()) > 0 and endpoint.calls == 1


@pytest.mark.redis
def test_the_lock_fences_a_stale_holder(tmp_path: Path, flushed: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(flushed)
        lock = RefreshLock(client, KEYS)
        try:
            first = await lock.acquire("a", ttl_ms=100)
            assert first == 1 and await lock.acquire("b") is None
            assert await lock.holds("a", 1)
            await asyncio.sleep(0.25)  # a stalls past its TTL
            assert not await lock.holds("a", 1), "a must not spend the token now"
            second = await lock.acquire("b")
            assert second == 2
            await lock.release("a", 1)  # a late release does not free b's lock
            assert await lock.holds("b", 2)
            await lock.release("b", 2)
            assert not await lock.holds("b", 2)
        finally:
            await client.aclose()

    asyncio.run(scenario())
    # And on disk: the stale holder's answer cannot overwrite the newer holder's pair.
    clock = Clock(datetime.now(UTC))
    endpoint = Endpoint(clock)
    path = tmp_path / "token"
    store(path, endpoint.login(), clock)
    old = read_store(path)
    assert old.refresh is not None
    newer = parse_input(endpoint.login())
    stale = parse_input(endpoint.login())
    assert newer.access and newer.refresh and stale.access and stale.refresh
    spent = old.refresh.reveal()
    assert commit_refresh(path, spent, newer.access, newer.refresh, fence=2, now=clock(), by="b")
    assert not commit_refresh(
        path, spent, stale.access, stale.refresh, fence=1, now=clock(), by="a"
    )
    assert read_store(path).refreshed_by == "b"


@pytest.mark.redis
def test_a_refused_refresh_alerts_at_once_and_is_not_retried(tmp_path: Path, flushed: str) -> None:
    clock = Clock(datetime.now(UTC))
    endpoint = Endpoint(lambda: clock.moment - timedelta(hours=22))
    path = tmp_path / "token"
    store(path, endpoint.login(), clock)  # 22 h old: due
    endpoint.clock = clock
    endpoint.login()  # a browser re-login: the stored refresh token is revoked

    async def scenario() -> None:
        refresher = make(path, flushed, "ref-a", clock, endpoint)
        other = make(path, flushed, "ref-b", clock, endpoint)
        try:
            for _ in range(3):
                await refresher.step()
            assert endpoint.calls == 1, "one refused request, no retry storm"
            assert endpoint.creds.stats.refresh_revoked == 1
            assert refresher.view.state == REFUSED
            assert read_store(path).refused
            raised = conditions(flushed)[REFRESH_FAILED]
            assert raised["severity"] == "critical" and "paste a new token" in raised["title"]
            assert "valid until" in raised["detail"] and raised["source"] == "ref-a"
            # Another ingestor reads the same file: it tries nothing either.
            await other.step()
            assert endpoint.calls == 1 and other.view.state == REFUSED
            # `obpipe token set` with a new pair heals it: the condition goes at the next look.
            store(path, endpoint.login(), clock)
            await refresher.step()
            assert refresher.view.state == OK and REFRESH_FAILED not in conditions(flushed)
        finally:
            await refresher.client.aclose()
            await other.client.aclose()

    asyncio.run(scenario())


@pytest.mark.redis
def test_transient_failures_back_off_and_alert_from_the_third(tmp_path: Path, flushed: str) -> None:
    clock = Clock(datetime.now(UTC))
    endpoint = Endpoint(lambda: clock.moment - timedelta(hours=22))
    path = tmp_path / "token"
    store(path, endpoint.login(), clock)
    endpoint.clock = clock
    endpoint.fail = CredentialsError("the refresh endpoint answered HTTP 503")

    async def scenario() -> None:
        refresher = make(path, flushed, "ref-a", clock, endpoint)
        try:
            waits = []
            for _ in range(3):
                waits.append(await refresher.step())
                assert await refresher.step() > 0 and endpoint.calls == len(waits), "backoff"
                clock.moment += timedelta(seconds=waits[-1])
            assert waits == [5.0, 10.0, 20.0]
            assert refresher.view.state == FAILING and "503" in (refresher.view.error or "")
            assert REFRESH_FAILED in conditions(flushed)
            endpoint.fail = None
            await refresher.step()
            assert endpoint.calls == 4 and refresher.refreshes == 1
            assert REFRESH_FAILED not in conditions(flushed)
        finally:
            await refresher.client.aclose()

    asyncio.run(scenario())


@pytest.mark.redis
def test_refresh_token_expiring_within_two_days(tmp_path: Path, flushed: str) -> None:
    clock = Clock(datetime.now(UTC))
    endpoint = Endpoint(clock)
    endpoint.login()
    # A fresh access token with a 7-day refresh token issued six days ago.
    now = clock().timestamp()
    access = mint_token("tests", now, ttl=DAY)
    refresh = mint_refresh("tests", now - 6 * DAY, ttl=7 * DAY, session=endpoint.creds.session)
    path = tmp_path / "token"
    store(path, f"{access}\n{refresh}", clock)

    async def scenario() -> None:
        refresher = make(path, flushed, "ref-a", clock, endpoint)
        try:
            await refresher.step()
            raised = conditions(flushed)[REFRESH_EXPIRING]
            assert raised["severity"] == "warning" and "log in again" in raised["title"]
            # A week-long one (after a new login) clears it.
            store(path, endpoint.login(), clock)
            await refresher.step()
            assert REFRESH_EXPIRING not in conditions(flushed)
            # An expired refresh token is a failure, said once, not tried.
            clock.moment += timedelta(days=8)
            await refresher.step()
            assert refresher.view.state == EXPIRED and endpoint.calls == 0
            assert REFRESH_FAILED in conditions(flushed)
        finally:
            await refresher.client.aclose()

    asyncio.run(scenario())
