"""Scheduling of end-of-day work: the first commit of a day schedules its ``finalize_day``.

The job is queued on RQ for the day's end in Jakarta time plus the grace period (the worker
runs with its scheduler on). A SET in Redis makes it once per day across every writer and
restart; an in-process set keeps the hot path to one membership test per day seen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

import redis

from jobs.queue import FinalizeBusyError, enqueue_finalize, job_kwargs
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
