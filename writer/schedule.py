"""Scheduling of end-of-day work: the first commit of a day schedules its ``finalize_day``.

The job is queued on RQ for the day's end in Jakarta time plus the grace period (the worker
runs with its scheduler on). A SET in Redis makes it once per day across every writer and
restart; an in-process set keeps the hot path to one membership test per day seen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, datetime, timedelta

import redis
from rq import Queue, Retry

from pipeline.keys import Keys
from pipeline.settings import Settings
from stockbit.timestamps import WIB
from writer.jobs import QUEUE, finalize_day

log = logging.getLogger(__name__)

RETRY = Retry(max=3, interval=[60, 300, 900])


def finalize_at(day: str, grace_min: int) -> datetime:
    """When a day may be finalised: its end in WIB, plus the grace period, plus a minute."""
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), WIB)
    return start + timedelta(days=1, minutes=grace_min + 1)


def day_of(relpath: str) -> str:
    """The day of a data file: ``orderbook/2026-03-02_BBCA.csv`` → ``2026-03-02``."""
    return relpath.rsplit("/", 1)[-1][:10]


def job_kwargs(settings: Settings) -> dict[str, object]:
    """The arguments every ``finalize_day`` job gets from the enqueuing process's settings."""
    return {
        "data_dir": str(settings.data_dir.resolve()),
        "key_prefix": settings.key_prefix,
        "compress_after_days": settings.compress_after_days,
        "grace_min": settings.finalize_grace_min,
    }


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
            except (redis.RedisError, ValueError) as exc:
                # Best effort, retried at the next commit of that day; `obpipe finalize DAY`
                # does the same by hand.
                log.warning("could not schedule finalize_day(%s): %s", day, exc)
                continue
            self.seen.add(day)

    def _enqueue(self, day: str) -> None:
        when = finalize_at(day, self.grace_min)
        try:
            Queue(QUEUE, connection=self.client).enqueue_at(
                when, finalize_day, day, job_id=f"finalize-{day}", retry=RETRY, **self.kwargs
            )
        except redis.RedisError:
            self.client.srem(self.keys.finalize_scheduled, day)
            raise
        log.info("scheduled finalize_day(%s) for %s", day, when.isoformat())
