"""What one app instance holds: settings, the Redis clients, the clock, the trading calendar,
the rate history."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import redis
from flask import current_app
from prometheus_client.registry import CollectorRegistry

from jobs.finalize import check_finished
from jobs.queue import BUSY, job_id, job_states
from pipeline.calendar import TradingCalendar
from pipeline.days import is_day, today
from pipeline.keys import Keys
from pipeline.layout import Layout
from pipeline.settings import Settings
from web.alerts import RECENT_IN_STATUS, read_alerts
from web.days import DAYS_SHOWN, ManifestCache
from web.rates import FRAMES, RateTracker
from web.recaps import RecapCache
from web.snapshot import (
    HISTORY_STEP_S,
    HISTORY_WINDOW_S,
    build_status,
    counters_of,
    read_state,
)

EXTENSION = "obpipe"


@dataclass
class WebContext:
    """Per-app state, kept in ``app.extensions["obpipe"]``."""

    settings: Settings
    keys: Keys
    client: redis.Redis
    clock: Callable[[], datetime]
    calendar: TradingCalendar
    """The IDX trading calendar (built once from the settings' ``HOLIDAYS_FILE``)."""
    registry: CollectorRegistry
    jobs_client: redis.Redis
    """The same Redis without response decoding, for RQ (which stores pickled data)."""
    tracker: RateTracker = field(default_factory=RateTracker)
    manifests: ManifestCache = field(default_factory=ManifestCache)
    recaps: RecapCache = field(default_factory=RecapCache)
    finalize_lock: threading.Lock = field(default_factory=threading.Lock)
    """Makes "check the job's state, then enqueue" one step within this process."""

    @property
    def read_only(self) -> bool:
        """True when no admin token is configured (control endpoints answer 403)."""
        return self.settings.web_admin_token is None

    def status(self) -> dict[str, Any]:
        """Read Redis, update the rate history, and shape the ``/api/status`` document."""
        now = self.clock()
        raw = read_state(self.client, self.keys, today(now), self.settings.data_dir)
        at = now.timestamp()
        rates = self.tracker.observe(at, counters_of(raw))
        history = self.tracker.history(FRAMES, HISTORY_WINDOW_S, at, HISTORY_STEP_S)
        doc = build_status(
            raw,
            now=now,
            rates=rates,
            history=history,
            data_dir=self.settings.data_dir,
            read_only=self.read_only,
            calendar=self.calendar,
        )
        doc["alerts"] = self.alerts(RECENT_IN_STATUS)
        return doc

    def alerts(self, limit: int) -> dict[str, Any]:
        """The ``alerts`` document (:func:`web.alerts.read_alerts`) with the newest ``limit``."""
        return read_alerts(self.client, self.keys, self.clock(), limit)

    def sample(self) -> None:
        """Record the counters once (the server's background sampler keeps the sparkline
        filled while no page is open)."""
        now = self.clock()
        raw = read_state(self.client, self.keys, today(now))
        self.tracker.observe(now.timestamp(), counters_of(raw))

    def day_finished(self, day: str, now: datetime) -> bool:
        """Whether ``day`` has ended in Jakarta time, grace period included."""
        try:
            check_finished(day, now, self.settings.finalize_grace_min)
        except ValueError:  # DayNotFinishedError is one
            return False
        return True

    def days(self) -> dict[str, Any]:
        """The ``/api/days`` document: days with a manifest or a scheduled finalize job,
        newest first, at most :data:`DAYS_SHOWN`, each with its manifest figures and the
        state of its ``finalize-<day>`` job."""
        now = self.clock()
        members = self.client.smembers(self.keys.finalize_scheduled)
        scheduled = {m.decode() if isinstance(m, bytes) else str(m) for m in members}
        scheduled = {d for d in scheduled if is_day(d)}
        data_dir = self.settings.data_dir
        layout = Layout(data_dir)
        # A recap (16:45 WIB) comes before the day's manifest (after midnight).
        found = set(layout.manifest_days()) | set(layout.recap_days())
        known = sorted(found | scheduled, reverse=True)
        shown = known[:DAYS_SHOWN]
        states = job_states(self.jobs_client, shown)
        self.manifests.keep_only(shown)
        self.recaps.keep_only(shown)
        entries = []
        for day in shown:
            summary, error = self.manifests.summary(data_dir, day)
            state = states[day]
            entries.append(
                {
                    "day": day,
                    "manifest": summary,
                    "manifest_error": error,
                    "recap": self.recaps.summary(data_dir, day),
                    "scheduled": day in scheduled,
                    "job": {"id": job_id(day), "state": state},
                    "finalizable": state not in BUSY and self.day_finished(day, now),
                }
            )
        return {"days": entries, "total": len(known), "today": today(now)}


def current() -> WebContext:
    """The :class:`WebContext` of the app handling the current request."""
    return cast(WebContext, current_app.extensions[EXTENSION])
