"""What one app instance holds: settings, the Redis client, the clock, the rate history."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import redis
from flask import current_app
from prometheus_client.registry import CollectorRegistry

from pipeline.keys import Keys
from pipeline.settings import Settings
from web.rates import FRAMES, RateTracker
from web.snapshot import (
    HISTORY_STEP_S,
    HISTORY_WINDOW_S,
    build_status,
    counters_of,
    read_state,
    today,
)

EXTENSION = "obpipe"


@dataclass
class WebContext:
    """Per-app state, kept in ``app.extensions["obpipe"]``."""

    settings: Settings
    keys: Keys
    client: redis.Redis
    clock: Callable[[], datetime]
    registry: CollectorRegistry
    tracker: RateTracker = field(default_factory=RateTracker)

    @property
    def read_only(self) -> bool:
        """True when no admin token is configured (control endpoints answer 403)."""
        return self.settings.web_admin_token is None

    def status(self) -> dict[str, Any]:
        """Read Redis, update the rate history, and shape the ``/api/status`` document."""
        now = self.clock()
        raw = read_state(self.client, self.keys, today(now))
        at = now.timestamp()
        rates = self.tracker.observe(at, counters_of(raw))
        history = self.tracker.history(FRAMES, HISTORY_WINDOW_S, at, HISTORY_STEP_S)
        return build_status(
            raw,
            now=now,
            rates=rates,
            history=history,
            data_dir=self.settings.data_dir,
            read_only=self.read_only,
        )

    def sample(self) -> None:
        """Record the counters once (the server's background sampler keeps the sparkline
        filled while no page is open)."""
        now = self.clock()
        raw = read_state(self.client, self.keys, today(now))
        self.tracker.observe(now.timestamp(), counters_of(raw))


def current() -> WebContext:
    """The :class:`WebContext` of the app handling the current request."""
    return cast(WebContext, current_app.extensions[EXTENSION])
