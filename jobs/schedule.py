"""Scheduling of end-of-day work: the first commit of a day schedules its ``finalize_day``;
the jobs worker schedules each trading day's ``daily_recap``.

The finalize job is queued on RQ for the day's end in Jakarta time plus the grace period (the
worker runs with its scheduler on). A SET in Redis makes it once per day across every writer
and restart; an in-process set keeps the hot path to one membership test per day seen.

The recap (:class:`RecapSchedule`) is scheduled by the jobs worker itself, every minute, for
16:45 WIB of today when today is a trading day (so a day with no data at all still gets
one, and a holiday none), once per day through the ``recap:scheduled`` SET.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import redis

from jobs.queue import FinalizeBusyError, enqueue_finalize, enqueue_recap, job_kwargs, recap_kwargs
from jobs.recap import recap_due
from pipeline.calendar import TradingCalendar
from pipeline.days import bounds
from pipeline.keys import Keys
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def finalize_at(day: str, grace_min: int) -> datetime:
    """When a day may be finalised: its end in WIB, plus the grace period, plus a minute."""
    return bounds(day)[1] + timedelta(minutes=grace_min + 1)


class DaySchedule:
    """Schedules ``finalize_day`` once for every day the writers commit rows to."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings) -> None:
        self.client = client
        self.keys = keys
        self.kwargs = job_kwargs(settings)
        self.grace_min = settings.finalize_grace_min
        self.seen: set[str] = set()

    def note(self, days: Iterable[str]) -> None:
        """Record days that just received committed rows; schedule the ones new to Redis."""
        for day in days:
            if day in self.seen:
                continue
            try:
                if self.client.sadd(self.keys.finalize_scheduled, day):
                    self._enqueue(day)
            except FinalizeBusyError as exc:
                # Someone finalizes it right now (by hand): that run covers it.
                log.info("not scheduling finalize_day(%s): %s", day, exc)
            except (redis.RedisError, ValueError) as exc:
                # Best effort, retried at the next commit of that day; `obpipe finalize DAY`
                # does the same by hand.
                log.warning("could not schedule finalize_day(%s): %s", day, exc)
                continue
            self.seen.add(day)

    def _enqueue(self, day: str) -> None:
        when = finalize_at(day, self.grace_min)
        try:
            enqueue_finalize(self.client, day, self.kwargs, at=when)
        except (redis.RedisError, FinalizeBusyError):
            self.client.srem(self.keys.finalize_scheduled, day)
            raise
        log.info("scheduled finalize_day(%s) for %s", day, when.isoformat())


RECAP_CHECK_S = 60.0
"""How often the jobs worker makes sure today's recap is scheduled."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RecapSchedule:
    """Schedules each trading day's ``daily_recap`` once (from the jobs worker)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        settings: Settings,
        calendar: TradingCalendar,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.client = client
        self.keys = keys
        self.kwargs = recap_kwargs(settings)
        self.calendar = calendar
        self.clock = clock
        self.seen: set[str] = set()

    def ensure(self) -> str | None:
        """Schedule today's recap if today trades and it is not scheduled yet; the day
        scheduled now, or None. Raises ``redis.RedisError``."""
        due = recap_due(self.calendar, self.clock())
        if due is None:
            return None
        day, at = due
        if day in self.seen:
            return None
        if not self.client.sadd(self.keys.recap_scheduled, day):
            self.seen.add(day)  # another worker (or an earlier run) scheduled it
            return None
        try:
            enqueue_recap(self.client, day, self.kwargs, at=at)
        except redis.RedisError:
            self.client.srem(self.keys.recap_scheduled, day)
            raise
        self.seen.add(day)
        log.info("scheduled daily_recap(%s) for %s", day, at.isoformat())
        return day

    def run(self, stop: threading.Event, every: float = RECAP_CHECK_S) -> None:
        """Call :meth:`ensure` every ``every`` seconds until ``stop``; no error ends it."""
        while not stop.is_set():
            try:
                self.ensure()
            except (redis.RedisError, ValueError) as exc:
                log.warning("could not schedule the daily recap: %s", exc)
            except Exception:
                log.exception("recap scheduler: unexpected error (continuing)")
            stop.wait(every)
