"""The Flask app factory: ``create_app(settings, redis_client=...)``.

Everything the app needs is passed in (settings, an optional Redis client, an optional
clock), so tests build it with fakeredis and a fixed time; ``python -m web`` builds it from
the environment and serves it with waitress (:mod:`web.service`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import redis
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from pipeline.calendar import TradingCalendar
from pipeline.keys import Keys
from pipeline.settings import Settings
from web import api, pages
from web.context import EXTENSION, WebContext
from web.metrics import RedisCollector, make_registry
from web.security import ApiError, apply_headers

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
REDIS_TIMEOUT_S = 2.0
"""A Redis that does not answer within this is reported down (503) rather than hanging
the page's poll."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def redis_for(settings: Settings, *, decode_responses: bool = True) -> redis.Redis:
    """The Redis client the web app uses: decoded strings (except for RQ), short timeouts."""
    return redis.Redis.from_url(
        settings.redis_url.reveal(),
        decode_responses=decode_responses,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        health_check_interval=15,
    )


def undecoded(client: redis.Redis) -> redis.Redis:
    """A client on the same server (and fakeredis server) as ``client`` that returns bytes.

    RQ keeps pickled job data in Redis, which a ``decode_responses=True`` client cannot read.
    """
    pool = client.connection_pool
    kwargs = {
        name: value
        for name, value in pool.connection_kwargs.items()
        # That handler object belongs to the original pool; the new pool makes its own.
        if name != "maint_notifications_pool_handler"
    }
    kwargs["decode_responses"] = False
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


def create_app(
    settings: Settings | None = None,
    *,
    redis_client: redis.Redis | None = None,
    clock: Callable[[], datetime] | None = None,
    calendar: TradingCalendar | None = None,
) -> Flask:
    """Build the app. ``settings`` default to the environment; ``redis_client`` to one
    built from ``settings.redis_url``; ``clock`` (aware datetimes) to the system clock;
    ``calendar`` to the IDX calendar with ``settings.holidays_file`` applied (built here,
    once, so a bad file stops the app at start-up rather than failing a poll).
    RQ (the Days section) uses a bytes-returning client on the same connection settings."""
    settings = settings if settings is not None else Settings.from_env()
    if redis_client is None:
        client = redis_for(settings)
        jobs_client = redis_for(settings, decode_responses=False)
    else:
        client = redis_client
        jobs_client = undecoded(redis_client)
    now = clock or _utc_now
    keys = Keys(settings.key_prefix, settings.partitions)
    trading_calendar = calendar if calendar is not None else TradingCalendar.from_settings(settings)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = WebContext(
        settings=settings,
        keys=keys,
        client=client,
        clock=now,
        calendar=trading_calendar,
        registry=make_registry(
            RedisCollector(client, keys, now, data_dir=settings.data_dir, calendar=trading_calendar)
        ),
        jobs_client=jobs_client,
    )
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.after_request(apply_headers)
    _register_errors(app)
    return app


def _register_errors(app: Flask) -> None:
    """Every error is answered as JSON ``{"error": ..., "status": ...}``."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[Response, int, dict[str, str]]:
        body = {"error": exc.message, "status": exc.status, **exc.extra}
        return jsonify(body), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        return jsonify({"error": exc.description or exc.name, "status": status}), status

    @app.errorhandler(redis.RedisError)
    def redis_down(exc: redis.RedisError) -> tuple[Response, int]:
        # The exception text can name the server; the class is enough for the client.
        log.warning("Redis unavailable: %s", type(exc).__name__)
        body = {"error": "Redis is unavailable", "status": 503, "detail": type(exc).__name__}
        return jsonify(body), 503

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return jsonify({"error": "internal error", "status": 500}), 500
