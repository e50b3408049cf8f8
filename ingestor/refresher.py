"""Renewing the Stockbit access token from the refresh token, by one ingestor at a time.

Every ingestor runs a :class:`Refresher` task; they share the token file
(:mod:`ingestor.tokens`) and a Redis lock with fencing, so however many run, a rotating
refresh token is spent once:

- **Who**: the one that takes ``token:refresh:lock`` (``SET NX PX``; the value is
  ``owner|epoch``, the epoch an ``INCR`` of ``token:refresh:epoch`` made for this
  acquisition). It re-reads the file under the lock (another may just have refreshed),
  checks it still holds the lock right before the ``POST``, and writes the new pair with a
  compare-and-swap: only if the file still holds the refresh token it spent and no refresher
  with a newer epoch (*fence*) wrote it. The others see the lock taken, wait a second and
  re-read the file. Without Redis nobody refreshes (two ingestors could spend the same token);
  the access token has hours of margin for that.
- **When** (:func:`plan_refresh`): once less than ``TOKEN_REFRESH_MARGIN_S`` of the access
  token's validity remains (default 3 h), never more than a third of its lifetime (so
  20-second test tokens work); and, on the IDX calendar, early enough that the access token
  lasts until the next trading day's close guard (post-trading end + 30 min, 16:45 WIB) —
  whenever its lifetime lets a token renewed before that day's pre-opening last that long.
  The guard renews at the *earliest* such moment (the evening before, for 24 h tokens), so a
  refused refresh is known hours before the open rather than at it.
- **Refused** (401/403: revoked by a new browser login, or spent elsewhere): the file is
  marked, so no process tries that token again (no retry storm); ``token_refresh_failed`` is
  raised at once (critical) and the status page says to paste a new token. Capture goes on
  with the current access token while it is valid. ``obpipe token set`` clears the mark.
- **Transient** trouble (network, 5xx) is retried with backoff (5 s doubling to 5 min, never
  more than a tenth of what is left); the condition is raised from the third failure on.
- ``refresh_token_expiring`` (warning) while the refresh token has less than two days left
  (or a third of its lifetime, for test tokens).

The sockets are not touched here: a socket keeps the token it authenticated with, and
:mod:`ingestor.handover` moves it to the newer token before the old one expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ingestor.credentials import (
    CredentialsError,
    RefreshRefusedError,
    refresh_tokens,
    token_file_signature,
)
from ingestor.tokens import (
    Store,
    Token,
    TokenError,
    commit_refresh,
    mark_refused,
    read_store,
    token,
)
from pipeline.alerts import CRITICAL, WARNING, duration, wib
from pipeline.calendar import TradingCalendar
from pipeline.conditions import (
    REFRESH_EXPIRING,
    REFRESH_FAILED,
    clear_condition_async,
    raise_condition_async,
)
from pipeline.days import WIB
from pipeline.keys import Keys
from pipeline.settings import Settings

log = logging.getLogger(__name__)

EXPIRING_S = 2 * 86_400.0
"""``refresh_token_expiring`` below this much refresh-token validity (or a third of its
lifetime, whichever is less)."""
GUARD_SLACK_S = 900.0
"""A close-guard refresh lands this much past the earliest useful moment (at most 1/20 of the
lifetime), so the new token outlives the guard time with room to spare."""
HANDOVER_LEAD_S = 120.0
"""A socket moves to a newer token this long before its own expires (at most 1/4 of the
token's lifetime)."""
HANDOVER_GUARD_LEAD_S = 600.0
"""...or this long before the pre-opening, when its token would expire during the trading day
and a newer one lasts past the close guard."""
IDLE_S = 30.0
"""Longest sleep between two looks at the file (a change of the file wakes it at once)."""
LOCK_BUSY_S = 1.0
LOCK_TTL_MS = 60_000
"""Far longer than one refresh (file read, a 15 s request, file write), so the lock cannot
lapse under a holder that is merely slow."""
BACKOFF_S = 5.0
BACKOFF_MAX_S = 300.0
FAILURES_BEFORE_ALERT = 3
CONDITION_TTL_S = 600.0
"""Raised conditions lapse unless raised again (every :data:`REASSERT_S`): a refresher that
dies does not leave an alert active for ever."""
REASSERT_S = 60.0
POLL_S = 0.5

OK = "ok"
READ_ONLY = "read_only"
NO_REFRESH = "no_refresh_token"
NO_TOKEN = "no_token"
REFUSED = "refused"
EXPIRED = "expired"
FAILING = "failing"


# -- timing (pure) -----------------------------------------------------------------------------


def effective_margin(margin_s: float, lifetime_s: float | None) -> float:
    """``TOKEN_REFRESH_MARGIN_S``, but never more than a third of the token's lifetime."""
    return margin_s if lifetime_s is None else min(margin_s, lifetime_s / 3)


def next_guard(
    calendar: TradingCalendar, now: datetime, expires_at: datetime
) -> tuple[datetime, datetime] | None:
    """``(pre-opening start, close guard)`` of the first trading day whose close guard
    (post-trading end + 30 min) is still ahead of ``now`` and not covered by a token expiring
    at ``expires_at``; None when that is more than two weeks away."""
    day = now.astimezone(WIB).date()
    for offset in range(15):
        when = day + timedelta(days=offset)
        spans = calendar.phases(when)
        end = calendar.after_close(when)
        if spans and end is not None and end > now and end > expires_at:
            return spans[0].start, end
    return None


@dataclass(frozen=True)
class Plan:
    """When the access token should be renewed, and why."""

    due_at: datetime
    reason: str
    """``margin`` or ``close guard``."""


def plan_refresh(
    *,
    now: datetime,
    expires_at: datetime,
    lifetime_s: float | None,
    margin_s: float,
    calendar: TradingCalendar,
) -> Plan:
    """When to renew an access token expiring at ``expires_at`` (see the module notes)."""
    due = expires_at - timedelta(seconds=effective_margin(margin_s, lifetime_s))
    plan = Plan(due, "margin")
    guard = next_guard(calendar, now, expires_at)
    if guard is None or lifetime_s is None:
        return plan
    pre_open, close_guard = guard
    slack = timedelta(seconds=min(GUARD_SLACK_S, lifetime_s / 20))
    earliest = close_guard - timedelta(seconds=lifetime_s) + slack
    # Only when a token renewed before the pre-opening can last past the guard: shorter
    # lifetimes are left to the margin rule.
    if earliest <= pre_open and earliest < due:
        return Plan(earliest, "close guard")
    return plan


@dataclass(frozen=True)
class Handover:
    """When a socket should move to a newer token, and how long that token must last."""

    at: datetime
    covering: datetime | None = None
    """The newer token must expire after this (None: any later expiry will do)."""


def plan_handover(
    *,
    now: datetime,
    expires_at: datetime,
    lifetime_s: float | None,
    calendar: TradingCalendar | None,
) -> Handover:
    """When the socket authenticated with a token expiring at ``expires_at`` should be
    replaced: shortly before that expiry, or before the pre-opening when the token would
    expire during the next trading day (then only by a token that lasts past the close
    guard, so the move happens at most once before the open). Without a calendar, only the
    first."""
    lead = HANDOVER_LEAD_S if lifetime_s is None else min(HANDOVER_LEAD_S, lifetime_s / 4)
    normal = Handover(expires_at - timedelta(seconds=lead))
    guard = next_guard(calendar, now, expires_at) if calendar is not None else None
    if guard is None:
        return normal
    pre_open, close_guard = guard
    early = pre_open - timedelta(seconds=HANDOVER_GUARD_LEAD_S)
    lasting = lifetime_s is None or lifetime_s >= (close_guard - early).total_seconds()
    if early < normal.at and lasting:
        return Handover(early, close_guard)
    return normal


# -- the lock ----------------------------------------------------------------------------------

_ACQUIRE = """
if redis.call('exists', KEYS[1]) == 1 then return 0 end
local epoch = redis.call('incr', KEYS[2])
redis.call('set', KEYS[1], ARGV[1] .. '|' .. epoch, 'PX', ARGV[2])
return epoch
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RefreshLock:
    """``token:refresh:lock`` with a fencing epoch per acquisition."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    async def acquire(self, owner: str, ttl_ms: int = LOCK_TTL_MS) -> int | None:
        """The new fencing epoch, or None while another process holds the lock."""
        epoch = int(
            await self._acquire(
                keys=[self.keys.token_refresh_lock, self.keys.token_refresh_epoch],
                args=[owner, ttl_ms],
            )
        )
        return epoch or None

    async def holds(self, owner: str, epoch: int) -> bool:
        """Whether ``owner`` still holds the lock it took as ``epoch``."""
        value = await self.client.get(self.keys.token_refresh_lock)
        return _text(value) == f"{owner}|{epoch}"

    async def release(self, owner: str, epoch: int) -> None:
        """Give the lock up (only if it is still this acquisition's)."""
        await self._release(keys=[self.keys.token_refresh_lock], args=[f"{owner}|{epoch}"])


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


# -- the refresher -----------------------------------------------------------------------------


@dataclass
class View:
    """What the ingestor's status says about the tokens (never a token)."""

    state: str = NO_TOKEN
    error: str | None = None
    access_expires_at: datetime | None = None
    """The file's access token: how long capture can go on without another renewal."""
    refresh_expires_at: datetime | None = None
    refreshed_at: str | None = None
    refreshed_by: str | None = None
    due_at: datetime | None = None


def _now() -> datetime:
    return datetime.now(UTC)


class Refresher:
    """One ingestor's refresher task: :meth:`step` is one look (tests call it), :meth:`run`
    loops until ``stop``."""

    def __init__(
        self,
        settings: Settings,
        client: aioredis.Redis,
        keys: Keys,
        calendar: TradingCalendar,
        *,
        path: Path | None = None,
        exchange: Callable[[str], tuple[str, str]] | None = None,
        clock: Callable[[], datetime] = _now,
        stop: asyncio.Event | None = None,
    ) -> None:
        found = path or settings.stockbit_token_file
        if found is None:
            raise ValueError("the refresher needs STOCKBIT_TOKEN_FILE")
        self.path: Path = found
        self.me = settings.process_id
        self.margin_s = settings.token_refresh_margin_s
        self.client = client
        self.keys = keys
        self.calendar = calendar
        self.lock = RefreshLock(client, keys)
        api_url = settings.stockbit_api_url
        self.exchange = exchange or (lambda refresh: refresh_tokens(api_url, refresh))
        self.clock = clock
        self.stop = stop or asyncio.Event()
        self.view = View()
        self.refreshes = 0
        self.failures = 0
        self._retry_at: datetime | None = None
        self._failing_since: datetime | None = None
        self._unsaved: tuple[str, Token, Token, int] | None = None
        self._raised: dict[str, float] = {}
        """Condition id → monotonic time this process last raised it."""

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Look, act, sleep until the next thing to do (or a change of the file)."""
        while not self.stop.is_set():
            try:
                wait = await self.step()
            except RedisError as exc:
                log.warning("token refresher: Redis unavailable (%s); retrying", exc)
                wait = 5.0
            except Exception:
                log.exception("token refresher: unexpected error (continuing)")
                wait = 5.0
            await self._pause(wait)

    async def _pause(self, seconds: float) -> None:
        before = token_file_signature(self.path)
        deadline = time.monotonic() + max(0.0, seconds)
        while not self.stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.stop.wait(), min(POLL_S, max(0.0, deadline - time.monotonic()))
                )
            if token_file_signature(self.path) != before:
                return

    async def step(self) -> float:
        """Read the file, report, refresh if due; the seconds until the next look."""
        now = self.clock()
        if self._unsaved is not None:
            return await self._save(now)
        try:
            store = await asyncio.to_thread(read_store, self.path)
        except TokenError as exc:
            self.view = View(state=NO_TOKEN, error=str(exc))
            return IDLE_S
        self._describe(store, now)
        await self._report(store, now)
        if self.view.state not in (OK, FAILING) or store.refresh is None:
            return IDLE_S
        due = self.view.due_at
        if due is not None and due > now:
            return min(IDLE_S, (due - now).total_seconds())
        if self._retry_at is not None and now < self._retry_at:
            return min(IDLE_S, (self._retry_at - now).total_seconds())
        return await self._refresh(now)

    # -- what the file says ------------------------------------------------------------------

    def _describe(self, store: Store, now: datetime) -> None:
        view = View(
            state=OK,
            access_expires_at=store.access.expires_at if store.access else None,
            refresh_expires_at=store.refresh.expires_at if store.refresh else None,
            refreshed_at=store.refreshed_at,
            refreshed_by=store.refreshed_by,
        )
        if not store.writable:
            view.state = READ_ONLY
        elif store.refresh is None:
            view.state = NO_REFRESH
        elif store.refused:
            view.state, view.error = REFUSED, store.refused
        elif store.refresh.expires_at is not None and store.refresh.expires_at <= now:
            view.state = EXPIRED
            view.error = f"the refresh token expired at {wib(store.refresh.expires_at)}"
        else:
            access = store.access
            if access is None or access.expires_at is None:
                view.due_at = now  # only a refresh token: renew at once
            else:
                view.due_at = plan_refresh(
                    now=now,
                    expires_at=access.expires_at,
                    lifetime_s=access.lifetime_s,
                    margin_s=self.margin_s,
                    calendar=self.calendar,
                ).due_at
            if self._failing_since is not None:
                view.state, view.error = FAILING, self.view.error
        self.view = view

    async def _report(self, store: Store, now: datetime) -> None:
        """Raise or clear the two conditions the file alone decides (idempotent)."""
        access_until = _until(store.access, now)
        if self.view.state in (REFUSED, EXPIRED):
            reason = self.view.error or "refused"
            await self._raise(
                REFRESH_FAILED,
                CRITICAL,
                "Stockbit refused the token refresh: paste a new token"
                if self.view.state == REFUSED
                else "Stockbit refresh token expired: paste a new token",
                f"{reason} (at {store.refused_at or wib(now)}; revoked by a new login, spent "
                f"elsewhere, or expired). Capture goes on with the current access token "
                f"{access_until}, then stops (auth_failed). Log in to stockbit.com and store "
                "the new pair: `obpipe token set` (README: Using a real Stockbit token).",
            )
        elif REFRESH_FAILED in self._raised and self._failing_since is None:
            # This process saw the file refused (or its own refreshes fail); a new pair or a
            # refresh that worked ends it.
            await self._clear(REFRESH_FAILED)
        refresh = store.refresh
        expiring = False
        if refresh is not None and refresh.expires_at is not None and self.view.state == OK:
            left = (refresh.expires_at - now).total_seconds()
            limit = (
                EXPIRING_S
                if refresh.lifetime_s is None
                else min(EXPIRING_S, refresh.lifetime_s / 3)
            )
            expiring = left < limit
            if expiring:
                await self._raise(
                    REFRESH_EXPIRING,
                    WARNING,
                    "Stockbit refresh token expires soon: log in again",
                    f"The refresh token expires at {wib(refresh.expires_at)} (in "
                    f"{duration(left)}); after that the access token cannot be renewed. Log "
                    "in to stockbit.com and store the new pair with `obpipe token set`.",
                )
        if not expiring and REFRESH_EXPIRING in self._raised:
            await self._clear(REFRESH_EXPIRING)

    async def _raise(self, cid: str, severity: str, title: str, detail: str) -> None:
        last = self._raised.get(cid)
        if last is not None and time.monotonic() - last < REASSERT_S:
            return
        try:
            await raise_condition_async(
                self.client,
                self.keys,
                cid,
                severity,
                title,
                detail=detail,
                ttl_s=CONDITION_TTL_S,
                source=self.me,
            )
        except RedisError as exc:
            log.warning("could not raise %s: %s", cid, exc)
            return
        self._raised[cid] = time.monotonic()

    async def _clear(self, cid: str) -> None:
        try:
            await clear_condition_async(self.client, self.keys, cid)
        except RedisError as exc:
            log.warning("could not clear %s: %s", cid, exc)
            return
        self._raised.pop(cid, None)

    # -- refreshing --------------------------------------------------------------------------

    async def _refresh(self, now: datetime) -> float:
        epoch = await self.lock.acquire(self.me)
        if epoch is None:
            return LOCK_BUSY_S  # another ingestor refreshes: re-read the file shortly
        try:
            store = await asyncio.to_thread(read_store, self.path)
            self._describe(store, now)
            due = self.view.due_at
            if self.view.state not in (OK, FAILING) or store.refresh is None:
                return 0.0
            if due is not None and due > now:
                return 0.0  # renewed by the previous holder a moment ago
            if not await self.lock.holds(self.me, epoch):
                return LOCK_BUSY_S  # fenced out (the lock lapsed): never spend it now
            spent = store.refresh.reveal()
            try:
                access, refresh = await asyncio.to_thread(self.exchange, spent)
            except RefreshRefusedError as exc:
                return await self._refused(spent, str(exc), store)
            except CredentialsError as exc:
                return await self._failed(str(exc), store, now)
            self._unsaved = (spent, token(access, "access"), token(refresh, "refresh"), epoch)
            return await self._save(now)
        finally:
            with contextlib.suppress(RedisError):
                await self.lock.release(self.me, epoch)

    async def _save(self, now: datetime) -> float:
        """Write the pending pair (written and fsynced before anything uses it); on a disk
        error keep it and try again: the refresh token it replaces is already spent."""
        assert self._unsaved is not None
        spent, access, refresh, epoch = self._unsaved
        try:
            written = await asyncio.to_thread(
                commit_refresh,
                self.path,
                spent,
                access,
                refresh,
                fence=epoch,
                now=self.clock(),
                by=self.me,
            )
        except OSError as exc:
            self.view.state = FAILING
            self.view.error = f"cannot write the token file: {type(exc).__name__}"
            log.error("renewed the token but cannot write the token file (%s); retrying", exc)
            await self._raise(
                REFRESH_FAILED,
                CRITICAL,
                "Renewed Stockbit token cannot be stored",
                f"Writing STOCKBIT_TOKEN_FILE failed ({type(exc).__name__}); retried every "
                f"{BACKOFF_S:g} s. The old refresh token is spent: fix the disk or the file's "
                "permissions.",
            )
            return BACKOFF_S
        self._unsaved = None
        if not written:
            log.warning(
                "token refresh (fence %d) dropped: the token file changed meanwhile "
                "(a new pair was stored, or a newer refresh won)",
                epoch,
            )
            return 0.0
        self.refreshes += 1
        self.failures = 0
        self._retry_at = None
        self._failing_since = None
        log.info(
            "token refreshed (fence %d): access token valid until %s, refresh token until %s",
            epoch,
            wib(access.expires_at) if access.expires_at else "?",
            wib(refresh.expires_at) if refresh.expires_at else "?",
        )
        try:
            await self.client.hincrby(self.keys.counters, "token_refreshes", 1)
        except RedisError as exc:
            log.warning("could not count the refresh: %s", exc)
        if REFRESH_FAILED in self._raised:
            await self._clear(REFRESH_FAILED)
        return 0.0

    async def _refused(self, spent: str, reason: str, store: Store) -> float:
        fresh = await asyncio.to_thread(_read_or_none, self.path)
        if fresh is not None and fresh.spent(spent):
            return 0.0  # the file moved on meanwhile (a new pair): not this token's failure
        now = self.clock()
        await asyncio.to_thread(mark_refused, self.path, spent, reason, now=now, by=self.me)
        log.error(
            "%s: it was revoked (a new login) or spent elsewhere. Capture goes on with the "
            "access token %s; store a new pair with `obpipe token set`",
            reason,
            _until(store.access, now),
        )
        with contextlib.suppress(RedisError):
            await self.client.hincrby(self.keys.counters, "token_refresh_refused", 1)
        self._raised.pop(REFRESH_FAILED, None)  # say it now, not after REASSERT_S
        return 0.0

    async def _failed(self, reason: str, store: Store, now: datetime) -> float:
        self.failures += 1
        if self._failing_since is None:
            self._failing_since = now
        left = _left_s(store.access, now)
        delay = min(BACKOFF_MAX_S, BACKOFF_S * 2.0 ** (self.failures - 1))
        if left is not None:
            # Hurry as the access token runs out, but never more than one request in 2 s.
            delay = min(delay, max(2.0, left / 10))
        self._retry_at = now + timedelta(seconds=delay)
        self.view.state, self.view.error = FAILING, reason
        log.warning(
            "token refresh failed (%s; attempt %d); retrying in %.0f s",
            reason,
            self.failures,
            delay,
        )
        with contextlib.suppress(RedisError):
            await self.client.hincrby(self.keys.counters, "token_refresh_errors", 1)
        if self.failures >= FAILURES_BEFORE_ALERT:
            await self._raise(
                REFRESH_FAILED,
                CRITICAL,
                "Stockbit token refresh keeps failing",
                f"{reason}; {self.failures} attempts since {wib(self._failing_since)}, "
                f"retried with backoff. Access token {_until(store.access, now)}.",
            )
        return delay


def _read_or_none(path: Path) -> Store | None:
    try:
        return read_store(path)
    except TokenError:
        return None


def _left_s(access: Token | None, now: datetime) -> float | None:
    if access is None or access.expires_at is None:
        return None
    return (access.expires_at - now).total_seconds()


def _until(access: Token | None, now: datetime) -> str:
    left = _left_s(access, now)
    if access is None or access.expires_at is None or left is None:
        return "(expiry unknown)"
    if left <= 0:
        return f"expired at {wib(access.expires_at)}"
    return f"valid until {wib(access.expires_at)} ({duration(left)} left)"
