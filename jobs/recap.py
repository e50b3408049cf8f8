"""The daily recap: what a trading day captured, sent to the operator's phone after the close.

``daily_recap(day)`` is an RQ job the jobs worker schedules for 16:45 WIB of every trading day
(:class:`jobs.schedule.RecapSchedule`; post-trading end + 30 min, ``TradingCalendar.
after_close``), as job ``recap-YYYY-MM-DD``; on a day the calendar closes it does nothing. It
reads the same sources ``finalize_day`` will read after midnight, so the two agree:

- the writers' committed counts (``day:<day>:rows``): files, rows, book rows, trades (one
  trade per row of a ``trades/`` file);
- the day's gaps file (with the manifest's own reader): how many, their total length, and how
  much of it fell in continuous trading;
- the trades and LivePrice files, through the manifest's own code (:func:`jobs.manifest.
  inspect`, :func:`jobs.manifest.coverage`): the volume coverage (captured lots against the
  exchange's own cumulative volume), when known;
- the desired ticker set and the active alert conditions, for the top problems.

Besides, the *time coverage*: per ticker, the share of continuous trading that no recorded gap
covered (a gap without tickers covers them all), averaged over the tickers with a book file.

The recap is written to ``DATA_DIR/recaps/YYYY-MM-DD.json`` (the Days page shows it) and
raised as an ``info`` notice (:func:`pipeline.conditions.raise_event`): the alert monitor
sends it through the same rate limit and destinations as every alert.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from jobs import manifest
from jobs.finalize import _gaps as read_gaps  # the manifest's reader: figures must agree
from pipeline.alerts import INFO, Active, AlertError, duration
from pipeline.calendar import TradingCalendar, load_calendar
from pipeline.conditions import raise_event
from pipeline.days import WIB, check_day
from pipeline.keys import Keys
from pipeline.layout import GAPS, ORDERBOOK, PRICES, TRADES, Layout, kind_of, parse_file
from stockbit.errors import ProtocolError
from stockbit.timestamps import parse_iso

log = logging.getLogger("obpipe.jobs")

TOP_PROBLEMS = 5
LONGEST_GAPS = 3


def recap_id(day: str) -> str:
    """The notice id of a day's recap: ``recap:YYYY-MM-DD``."""
    return f"recap:{check_day(day)}"


# -- the figures (pure, apart from reading the day's trades and LivePrice files) ----------------


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_iso(text)
    except (ProtocolError, ValueError):
        return None


def _merge(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _overlap_s(
    spans: Sequence[tuple[datetime, datetime]], sessions: Sequence[tuple[datetime, datetime]]
) -> float:
    total = 0.0
    for start, end in spans:
        for low, high in sessions:
            lo, hi = max(start, low), min(end, high)
            if hi > lo:
                total += (hi - lo).total_seconds()
    return total


def volume_coverage(layout: Layout, day: str) -> dict[str, Any]:
    """The manifest's volume coverage of ``day``, from its trades and LivePrice files only
    (the same code ``finalize_day`` runs on every file)."""
    tickers: dict[str, manifest.TickerFacts] = {}
    files = []
    for kind, path in layout.day_files(day):
        if kind in (TRADES, PRICES):
            facts = manifest.inspect(kind, path, layout.relative(kind, path), tickers)
            files.append({"path": facts.path})
    for ticker in tickers.values():
        ticker.lots = ticker.shares / 100
    doc: dict[str, Any] = {
        "files": files,
        "tickers": {code: asdict(t) for code, t in sorted(tickers.items())},
    }
    return manifest.coverage(doc)


def build_recap(
    day: str,
    counts: Mapping[str, int],
    gaps: Sequence[Mapping[str, str]],
    *,
    calendar: TradingCalendar,
    desired: Sequence[str] = (),
    active: Sequence[str] = (),
    volume: Mapping[str, Any] | None = None,
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """The recap of ``day`` from the writers' ``counts`` (relative path → rows), the day's
    gap rows, the desired tickers, the titles of the active alert conditions and the volume
    coverage (:func:`volume_coverage`)."""
    check_day(day)
    rows_of: dict[str, int] = {}
    books: set[str] = set()
    for path, rows in counts.items():
        kind = kind_of(path)
        rows_of[kind] = rows_of.get(kind, 0) + int(rows)
        if kind == ORDERBOOK:
            try:
                code = parse_file(path).code
            except ValueError:
                continue
            if code:
                books.add(code)
    sessions = [(s.start, s.end) for s in calendar.continuous_intervals(day)]
    trading_s = sum((end - start).total_seconds() for start, end in sessions)
    spans: list[tuple[datetime, datetime, frozenset[str], Mapping[str, str]]] = []
    causes: dict[str, int] = {}
    total_s = 0.0
    for row in gaps:
        start, end = _instant(row.get("start")), _instant(row.get("end"))
        cause = row.get("cause") or "?"
        causes[cause] = causes.get(cause, 0) + 1
        if start is None or end is None or end < start:
            continue
        total_s += (end - start).total_seconds()
        tickers = frozenset(t for t in (row.get("tickers") or "").split(",") if t)
        spans.append((start, end, tickers, row))
    in_trading = _overlap_s(_merge((s, e) for s, e, _, _ in spans), sessions)

    coverage: float | None = None
    worst: dict[str, Any] | None = None
    if trading_s > 0 and books:
        shares = {}
        for code in sorted(books):
            mine = _merge((s, e) for s, e, who, _ in spans if not who or code in who)
            shares[code] = max(0.0, 1.0 - _overlap_s(mine, sessions) / trading_s)
        coverage = round(100.0 * sum(shares.values()) / len(shares), 3)
        code = min(shares, key=lambda c: (shares[c], c))
        worst = {"code": code, "pct": round(100.0 * shares[code], 3)}

    missing = sorted(set(desired) - books)
    problems = [f"active now: {title}" for title in active]
    if missing:
        shown = ", ".join(missing[:10]) + (
            f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        problems.append(f"{len(missing)} desired ticker(s) without an order-book file: {shown}")
    volume_pct = (volume or {}).get("volume_coverage_pct")
    if isinstance(volume_pct, int | float) and volume_pct < manifest.COVERAGE_FLOOR:
        below = (volume or {}).get("below") or []
        problems.append(
            f"volume coverage {volume_pct:g} % (below {manifest.COVERAGE_FLOOR:g} %: "
            f"{', '.join(below[:5])})"
        )
    ranked = sorted(
        spans,
        key=lambda item: (_overlap_s([(item[0], item[1])], sessions), item[1] - item[0]),
        reverse=True,
    )
    for start, end, who, row in ranked[:LONGEST_GAPS]:
        names = ",".join(sorted(who)[:5]) + ("…" if len(who) > 5 else "") or "all"
        problems.append(
            f"gap {duration((end - start).total_seconds())} ({row.get('cause')}, {names}, "
            f"{start.astimezone(WIB):%H:%M:%S}–{end.astimezone(WIB):%H:%M:%S})"
        )
    return {
        "day": day,
        "trading_day": calendar.is_trading_day(day),
        "generated_at": (generated_at or datetime.now(WIB))
        .astimezone(WIB)
        .isoformat(timespec="seconds"),
        "files": len(counts),
        "rows": sum(rows_of.values()),
        "book_rows": rows_of.get(ORDERBOOK, 0),
        "trades": rows_of.get(TRADES, 0),
        "price_rows": rows_of.get(PRICES, 0),
        "gap_rows": rows_of.get(GAPS, 0),
        "tickers": len(books),
        "gaps": len(gaps),
        "gap_seconds": round(total_s, 3),
        "gap_trading_seconds": round(in_trading, 3),
        "gap_causes": dict(sorted(causes.items())),
        "time_coverage_pct": coverage,
        "worst_ticker": worst,
        "volume_coverage_pct": volume_pct if volume is not None else None,
        "missing_tickers": missing,
        "problems": problems[:TOP_PROBLEMS],
    }


def recap_text(recap: Mapping[str, Any]) -> tuple[str, str]:
    """The notice's title and body (≤ 1000 characters, no secret in any of it)."""
    gaps = recap["gaps"]
    title = (
        f"Recap {recap['day']}: {recap['files']:,} files, {recap['rows']:,} rows, "
        f"{gaps} gap{'s' if gaps != 1 else ''}"
    )
    lines = [
        f"{recap['tickers']} ticker(s): {recap['book_rows']:,} book rows, "
        f"{recap['trades']:,} trades, {recap['files']:,} files, {recap['rows']:,} rows in all.",
    ]
    if gaps:
        causes = ", ".join(f"{n} {cause}" for cause, n in recap["gap_causes"].items())
        lines.append(
            f"Gaps: {gaps} ({causes}), {duration(recap['gap_seconds'])} in all, "
            f"{duration(recap['gap_trading_seconds'])} during continuous trading."
        )
    else:
        lines.append("Gaps: none.")
    coverage = []
    if recap["time_coverage_pct"] is not None:
        worst = recap["worst_ticker"]
        coverage.append(
            f"time {recap['time_coverage_pct']:g} % (lowest {worst['code']} {worst['pct']:g} %)"
        )
    volume = recap["volume_coverage_pct"]
    if volume is not None:
        coverage.append(
            f"volume {volume:g} %" if isinstance(volume, int | float) else f"volume {volume}"
        )
    if coverage:
        lines.append(f"Coverage: {'; '.join(coverage)}.")
    if recap["problems"]:
        lines.append("Top problems:")
        lines.extend(f"- {p}" for p in recap["problems"])
    return title, "\n".join(lines)


# -- the job ------------------------------------------------------------------------------------


def _connection() -> redis.Redis:
    from rq import get_current_job  # noqa: PLC0415 (only inside a worker)

    job = get_current_job()
    if job is None:
        raise RuntimeError("daily_recap needs a Redis connection outside an RQ worker")
    connection: redis.Redis = job.connection
    return connection


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _active_titles(client: redis.Redis, keys: Keys) -> list[str]:
    raw: Any = client.hgetall(keys.alerts_active)
    titles = []
    for cid, text in sorted(raw.items(), key=lambda kv: _text(kv[0])):
        try:
            state = Active.from_json(_text(cid), _text(text))
        except (AlertError, ValueError, KeyError, TypeError):
            continue
        titles.append(state.condition.title)
    return titles


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def daily_recap(
    day: str,
    data_dir: str,
    *,
    key_prefix: str = "obpipe:",
    holidays_file: str | None = None,
    connection: redis.Redis | None = None,
    now: datetime | None = None,
    send: bool = True,
) -> dict[str, Any]:
    """Recap ``day``: write ``DATA_DIR/recaps/DAY.json`` and raise it as a notice (``send``).

    Nothing happens on a day the calendar closes (the result says why). I/O errors raise, so
    RQ reports the job failed.
    """
    check_day(day)
    calendar = load_calendar(Path(holidays_file) if holidays_file else None)
    if not calendar.is_trading_day(day):
        reason = calendar.closure_reason(day) or "weekend"
        log.info("no recap for %s: not a trading day (%s)", day, reason)
        return {"day": day, "skipped": f"not a trading day ({reason})"}
    client = connection if connection is not None else _connection()
    keys = Keys(key_prefix)
    layout = Layout(Path(data_dir))
    raw: Any = client.hgetall(keys.day_counts(day))
    counts = {_text(k): int(v) for k, v in raw.items()}
    members: Any = client.smembers(keys.desired_tickers)
    desired = sorted(_text(code) for code in members)
    recap = build_recap(
        day,
        counts,
        read_gaps(layout, day),
        calendar=calendar,
        desired=desired,
        active=_active_titles(client, keys),
        volume=volume_coverage(layout, day),
        generated_at=now,
    )
    _write_atomically(layout.recap(day), json.dumps(recap, indent=2) + "\n")
    title, detail = recap_text(recap)
    if send:
        raise_event(client, keys, recap_id(day), INFO, title, detail=detail, source="recap")
    log.info("recap of %s: %s", day, title)
    return recap


def recap_due(calendar: TradingCalendar, now: datetime) -> tuple[str, datetime] | None:
    """(day, when) of the recap to have scheduled at ``now``: today's, if today is a trading
    day, at its close guard (16:45 WIB), or at once if that has passed (a worker that was
    down then still sends it, late)."""
    today = now.astimezone(WIB).date()
    at = calendar.after_close(today)
    return None if at is None else (today.isoformat(), max(at, now))
