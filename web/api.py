"""The JSON API, ``/metrics`` and ``/healthz`` (ARCHITECTURE.md §7).

=======================  ==========================================================
``GET /api/status``      the status document (:mod:`web.snapshot`)
``GET /api/tickers``     ``{"tickers": [...], "read_only": bool}``
``POST /api/tickers``    body ``{"add": [...], "remove": [...]}``; admin token needed
``DELETE /api/tickers/<code>``  remove one ticker; admin token needed
``GET /api/depth/<code>``  top-10 levels per side from the ticker HASH (:mod:`web.depth`)
``GET /api/alerts``      active conditions, recent alerts and their delivery (``?limit=``)
``GET /api/days``        finished and scheduled days with manifest figures and job states
``GET /api/days/<day>``  that day's manifest (``DATA_DIR/manifests/<day>.json``)
``POST /api/days/<day>/finalize``  queue ``finalize_day`` for a finished day; admin token needed
``GET /metrics``         Prometheus text
``GET /healthz``         200 when Redis answers PING, 503 otherwise
=======================  ==========================================================

Changes to the ticker set are validated as a whole before anything is written: one invalid
code refuses the request (400, naming every bad code) and nothing changes. The ingestors pick
the new set up from Redis by themselves.

A ``<day>`` in a path must be a real date written ``YYYY-MM-DD`` (400 otherwise) before any
path or job id is built from it; the routes take the rest of the path too (``<path:day>``), so
that ``../etc`` is refused with 400 like any other bad day rather than routed elsewhere.
"""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, Response, jsonify, request

from jobs.finalize import DayNotFinishedError, check_finished
from jobs.queue import FinalizeBusyError, enqueue_finalize, job_id, job_kwargs, job_state
from pipeline.days import DayError, check_day
from pipeline.layout import Layout
from pipeline.ticker import TickerError, normalize
from web.alerts import RECENT_MAX
from web.context import current
from web.days import read_manifest
from web.depth import FIELDS, depth_from
from web.metrics import CONTENT_TYPE, render
from web.security import ApiError, check_admin

bp = Blueprint("api", __name__)

MAX_CODES = 500
"""Most codes one POST may name (a guard against accidental huge requests)."""

_BODY_HELP = 'expected a JSON object like {"add": ["BBCA"], "remove": ["TLKM"]}'


@bp.get("/api/status")
def status() -> Response:
    """The whole status document, read from Redis now."""
    return jsonify(current().status())


@bp.get("/api/alerts")
def alerts() -> Response:
    """Active conditions and the newest alerts (``?limit=``, 1..200, default 50)."""
    raw = request.args.get("limit", "50")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= RECENT_MAX:
        raise ApiError(400, f"limit must be a whole number from 1 to {RECENT_MAX}")
    return jsonify(current().alerts(int(raw)))


@bp.get("/api/tickers")
def list_tickers() -> Response:
    """The desired ticker set, and whether control is enabled."""
    ctx = current()
    return jsonify(
        {"tickers": _desired(ctx.client, ctx.keys.desired_tickers), "read_only": ctx.read_only}
    )


@bp.post("/api/tickers")
def change_tickers() -> Response:
    """Add and/or remove tickers (admin only). All codes are validated before any change."""
    ctx = current()
    check_admin(ctx.settings.web_admin_token, request.headers.get("Authorization"))
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not set(body) <= {"add", "remove"} or not body:
        raise ApiError(400, f"bad request body: {_BODY_HELP}")
    add = _codes(body.get("add", []), "add")
    remove = _codes(body.get("remove", []), "remove")
    if not add and not remove:
        raise ApiError(400, f"nothing to change: {_BODY_HELP}")
    both = sorted(set(add) & set(remove))
    if both:
        raise ApiError(400, f"ticker(s) both added and removed: {', '.join(both)}", invalid=both)

    key = ctx.keys.desired_tickers
    pipe = ctx.client.pipeline(transaction=True)
    for code in add:
        pipe.sadd(key, code)
    for code in remove:
        pipe.srem(key, code)
    pipe.smembers(key)
    *changed, members = pipe.execute()
    added = [c for c, n in zip(add, changed[: len(add)], strict=True) if int(n)]
    removed = [c for c, n in zip(remove, changed[len(add) :], strict=True) if int(n)]
    unchanged = [c for c in (*add, *remove) if c not in added and c not in removed]
    return jsonify(
        {
            "tickers": sorted(_text(m) for m in members),
            "added": added,
            "removed": removed,
            "unchanged": unchanged,
            "message": _summary(added, removed, unchanged),
        }
    )


@bp.delete("/api/tickers/<code>")
def delete_ticker(code: str) -> Response:
    """Remove one ticker (admin only); 404 if it was not in the desired set."""
    ctx = current()
    check_admin(ctx.settings.web_admin_token, request.headers.get("Authorization"))
    clean = _one_code(code)
    if not int(ctx.client.srem(ctx.keys.desired_tickers, clean)):
        raise ApiError(404, f"ticker {clean} is not in the desired set", invalid=[clean])
    tickers = _desired(ctx.client, ctx.keys.desired_tickers)
    return jsonify(
        {
            "tickers": tickers,
            "added": [],
            "removed": [clean],
            "unchanged": [],
            "message": f"removed {clean}",
        }
    )


@bp.get("/api/depth/<code>")
def depth(code: str) -> Response:
    """The latest top-10 levels per side of a ticker; 404 for a ticker the pipeline
    does not know (neither desired nor ever updated)."""
    ctx = current()
    clean = _one_code(code)
    pipe = ctx.client.pipeline(transaction=False)
    pipe.sismember(ctx.keys.desired_tickers, clean)
    pipe.exists(ctx.keys.ticker(clean))
    pipe.hmget(ctx.keys.ticker(clean), FIELDS)
    desired, exists, values = pipe.execute()
    if not int(desired) and not int(exists):
        raise ApiError(404, f"unknown ticker {clean}: not in the desired set and never seen")
    return jsonify(depth_from(clean, values))


@bp.get("/api/days")
def list_days() -> Response:
    """Days with a manifest or a scheduled finalize job, newest first, with job states."""
    return jsonify(current().days())


@bp.get("/api/days/<path:day>")
def day_manifest(day: str) -> Response:
    """The day's manifest as the finalize job wrote it; 404 when there is none yet."""
    ctx = current()
    clean = _one_day(day)
    try:
        doc = read_manifest(Layout(ctx.settings.data_dir).manifest(clean))
    except FileNotFoundError:
        raise ApiError(404, f"no manifest for {clean}: the day has not been finalized") from None
    except (OSError, ValueError) as exc:
        raise ApiError(
            500, f"the manifest of {clean} is unreadable ({type(exc).__name__})"
        ) from None
    return jsonify(doc)


@bp.post("/api/days/<path:day>/finalize")
def finalize(day: str) -> tuple[Response, int]:
    """Queue ``finalize_day`` for a finished day now (admin only); 409 while its job is
    queued or running, 400 for a day that has not ended (plus the grace period) in WIB."""
    ctx = current()
    check_admin(ctx.settings.web_admin_token, request.headers.get("Authorization"))
    clean = _one_day(day)
    try:
        check_finished(clean, ctx.clock(), ctx.settings.finalize_grace_min)
    except (DayNotFinishedError, ValueError) as exc:
        raise ApiError(400, str(exc), day=clean) from None
    the_id = job_id(clean)
    with ctx.finalize_lock:
        previous = job_state(ctx.jobs_client, clean)
        try:
            enqueue_finalize(ctx.jobs_client, clean, job_kwargs(ctx.settings))
        except FinalizeBusyError as exc:
            raise ApiError(
                409,
                str(exc),
                day=clean,
                state=exc.state,
                job={"id": the_id, "state": exc.state},
            ) from None
    state = job_state(ctx.jobs_client, clean)
    return jsonify(
        {
            "day": clean,
            "job": {"id": the_id, "state": state},
            "previous": previous,
            "message": f"finalize of {clean} queued as job {the_id}",
        }
    ), 202


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition, read from Redis at scrape time."""
    return Response(render(current().registry), mimetype=None, content_type=CONTENT_TYPE)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """Liveness with a dependency check: 200 if Redis answers PING, else 503."""
    try:
        current().client.ping()
    except redis.RedisError:
        return jsonify({"status": "error", "redis": "unreachable"}), 503
    return jsonify({"status": "ok", "redis": "ok"}), 200


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _desired(client: redis.Redis, key: str) -> list[str]:
    return sorted(_text(m) for m in client.smembers(key))


def _one_code(code: str) -> str:
    try:
        return normalize(code)
    except TickerError as exc:
        raise ApiError(400, str(exc), invalid=[code[:20]]) from None


def _one_day(day: str) -> str:
    try:
        return check_day(day)
    except DayError as exc:
        raise ApiError(400, str(exc)) from None


def _codes(value: Any, name: str) -> list[str]:
    """Validate a list of codes, naming every invalid one; order kept, duplicates dropped."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, f'"{name}" must be a list of ticker strings')
    if len(value) > MAX_CODES:
        raise ApiError(400, f'"{name}" names {len(value)} tickers; at most {MAX_CODES} at once')
    good: dict[str, None] = {}
    bad: list[str] = []
    for raw in value:
        try:
            good[normalize(raw)] = None
        except TickerError:
            bad.append(raw.strip()[:20])
    if bad:
        shown = ", ".join(repr(b) for b in bad)
        raise ApiError(
            400,
            f"invalid ticker(s) in {name!r}: {shown} — expected 2-6 letters/digits starting "
            "with a letter, optionally with a -suffix (e.g. BBCA, LQ45, BBCA-W); nothing changed",
            invalid=bad,
        )
    return list(good)


def _summary(added: list[str], removed: list[str], unchanged: list[str]) -> str:
    parts = []
    if added:
        parts.append(f"added {', '.join(added)}")
    if removed:
        parts.append(f"removed {', '.join(removed)}")
    if unchanged:
        parts.append(f"no change for {', '.join(unchanged)}")
    return "; ".join(parts)
