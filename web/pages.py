"""The status page: one server-rendered shell; ``static/app.js`` fills it from the API.

The page itself needs no Redis, so it loads even when Redis is down, and then shows the
"data stale" banner because ``/api/status`` answers 503.
"""

from __future__ import annotations

from flask import Blueprint, render_template

from web.context import current

bp = Blueprint("pages", __name__)

POLL_MS = 1500
"""How often the page polls ``/api/status`` (the issue asks for every 1–2 s)."""
DAYS_POLL_MS = 5000
"""How often the page polls ``/api/days`` (every ``POLL_MS`` while a finalize job of a shown
day is queued or running)."""


@bp.get("/")
def index() -> str:
    """The status page. Only flags are rendered into it, never a secret."""
    return render_template(
        "index.html", read_only=current().read_only, poll_ms=POLL_MS, days_poll_ms=DAYS_POLL_MS
    )
