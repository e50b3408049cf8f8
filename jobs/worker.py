"""``obpipe jobs``: an RQ worker for the end-of-day queue, with the scheduler enabled, and the
alert monitor.

The writer schedules ``finalize_day`` for after each day ends (``enqueue_at``), so the worker
runs with its scheduler on; RQ itself handles SIGTERM (finish the job in hand, then exit).

A thread schedules each trading day's ``daily_recap`` (:class:`jobs.schedule.RecapSchedule`).

The alert monitor (:mod:`jobs.monitor`) runs as a thread of this process because compose and
``obpipe run`` always start exactly this service, it is idle most of the day, and a second
replica is harmless: the monitor's Redis lock lets one of them send. ``--burst`` (run the
queue, exit) starts no monitor.
"""

from __future__ import annotations

import sys
import threading

import redis
from rq import Worker

from jobs.monitor import Monitor, build_monitor
from jobs.queue import queue
from jobs.schedule import RecapSchedule
from pipeline.calendar import TradingCalendar
from pipeline.keys import Keys
from pipeline.settings import Settings, SettingsError
from pipeline.startup import EXIT_CONFIG


def work(settings: Settings, *, burst: bool = False) -> int:
    """Run the worker until SIGTERM/SIGINT (or until the queue is empty, with ``burst``)."""
    monitor: Monitor | None = None
    if not burst:
        try:
            monitor = build_monitor(settings).start()
        except SettingsError as exc:  # an ALERT_URLS entry apprise cannot use
            print(f"jobs: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    client = redis.Redis.from_url(settings.redis_url.reveal())
    stop = threading.Event()
    if not burst:
        keys = Keys(settings.key_prefix, settings.partitions)
        recaps = RecapSchedule(client, keys, settings, TradingCalendar.from_settings(settings))
        threading.Thread(target=recaps.run, args=(stop,), name="recaps", daemon=True).start()
    try:
        worker = Worker([queue(client)], connection=client)
        worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level)
    finally:
        stop.set()
        if monitor is not None:
            monitor.stop()
    return 0
