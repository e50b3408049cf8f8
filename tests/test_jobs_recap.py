"""The daily recap: figures, none on holidays, 16:45 WIB schedule, the notice, the manifest."""

# Scheduled once per trading day, sent through the alert monitor, and in agreement with the
# manifest ``finalize_day`` writes for a simulated day.

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from bench.stack import KEYS, Stack, wait_for
from jobs.finalize import finalize_day
from jobs.monitor import build_monitor
from jobs.queue import QUEUE, recap_job_id
from jobs.recap import build_recap, daily_recap, recap_due, recap_text
from jobs.schedule import RecapSchedule
from pipeline.alerts import INFO
from pipeline.calendar import TradingCalendar
from pipeline.conditions import raise_event
from pipeline.days import WIB, day_of
from pipeline.layout import Layout
from pipeline.settings import Settings

CAL = TradingCalendar()
MONDAY = "2026-03-02"


def at(day: str, clock: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=WIB)


COUNTS = {
    f"orderbook/{MONDAY}_BBCA.csv": 1000,
    f"orderbook/{MONDAY}_TLKM.csv": 800,
    f"trades/{MONDAY}_BBCA.csv": 120,
    f"trades/{MONDAY}_TLKM.csv": 30,
    f"prices/{MONDAY}_BBCA.csv": 40,
    f"gaps/{MONDAY}.csv": 3,
}
GAPS = [
    # 10:00:00-10:01:00 BBCA only (continuous trading), 12:10-12:20 all (lunch: no trading),
    # 15:59:00-16:00:30 TLKM (pre-closing: not continuous trading).
    {"start": f"{MONDAY}T10:00:00+07:00", "end": f"{MONDAY}T10:01:00+07:00",
     "cause": "disconnect", "tickers": "BBCA", "ingestor": "i1", "detail": ""},
    {"start": f"{MONDAY}T12:10:00+07:00", "end": f"{MONDAY}T12:20:00+07:00",
     "cause": "auth_failed", "tickers": "", "ingestor": "i1", "detail": ""},
    {"start": f"{MONDAY}T15:59:00+07:00", "end": f"{MONDAY}T16:00:30+07:00",
     "cause": "dead", "tickers": "TLKM", "ingestor": "i2", "detail": ""},
]  # fmt: skip


def test_figures_from_the_writers_counts_and_the_gaps() -> None:
    recap = build_recap(
        MONDAY,
        COUNTS,
        GAPS,
        calendar=CAL,
        desired=["BBCA", "TLKM", "GOTO"],
        active=["Writer w1 lags more than 30 s"],
        volume={"volume_coverage_pct": 98.5, "below": ["TLKM"]},
        generated_at=at(MONDAY, "16:45:00"),
    )
    assert (recap["files"], recap["rows"], recap["book_rows"], recap["trades"]) == (
        6,
        1993,
        1800,
        150,
    )
    assert (recap["tickers"], recap["gaps"], recap["gap_rows"]) == (2, 3, 3)
    assert recap["gap_seconds"] == 60 + 600 + 90
    assert recap["gap_trading_seconds"] == 60  # lunch and pre-closing are not continuous
    assert recap["gap_causes"] == {"auth_failed": 1, "dead": 1, "disconnect": 1}
    # BBCA lost 60 s of the day's continuous trading (5 h 50 min on a Monday); TLKM none.
    trading = CAL.trading_seconds(MONDAY)
    assert recap["worst_ticker"] == {"code": "BBCA", "pct": round(100 * (1 - 60 / trading), 3)}
    assert recap["time_coverage_pct"] == round(100 * (1 - 30 / trading), 3)
    assert recap["missing_tickers"] == ["GOTO"]
    problems = recap["problems"]
    assert problems[0] == "active now: Writer w1 lags more than 30 s"
    assert problems[1].startswith("1 desired ticker(s) without an order-book file: GOTO")
    assert problems[2] == "volume coverage 98.5 % (below 99.9 %: TLKM)"
    assert problems[3].startswith("gap 1m 0s (disconnect, BBCA, 10:00:00–10:01:00)")
    assert len(problems) == 5, "the top five"
    title, body = recap_text(recap)
    assert title == f"Recap {MONDAY}: 6 files, 1,993 rows, 3 gaps"
    assert "Gaps: 3 (1 auth_failed, 1 dead, 1 disconnect), 12m 30s in all" in body
    assert "Coverage: time" in body and "volume 98.5 %" in body and len(body) < 1000


def test_a_quiet_day_and_a_day_without_trading_time() -> None:
    recap = build_recap(MONDAY, {}, [], calendar=CAL)
    assert recap["files"] == recap["rows"] == recap["gaps"] == 0
    assert recap["time_coverage_pct"] is None and recap["volume_coverage_pct"] is None
    assert "Gaps: none." in recap_text(recap)[1]
    holiday = build_recap("2026-03-19", COUNTS, [], calendar=CAL)
    assert holiday["trading_day"] is False and holiday["time_coverage_pct"] is None


def test_the_job_writes_the_recap_and_raises_the_notice(tmp_path: Path) -> None:
    client: Any = fakeredis.FakeRedis()
    client.hset(KEYS.day_counts(MONDAY), mapping=COUNTS)
    client.sadd(KEYS.desired_tickers, "BBCA", "TLKM")
    layout = Layout(tmp_path)
    layout.gaps(MONDAY).parent.mkdir(parents=True)
    header = "start,end,cause,tickers,ingestor,detail\n"
    rows = "".join(
        ",".join(g[k] for k in ("start", "end", "cause", "tickers", "ingestor", "detail")) + "\n"
        for g in GAPS
    )
    layout.gaps(MONDAY).write_text(header + rows)
    recap = daily_recap(MONDAY, str(tmp_path), connection=client, now=at(MONDAY, "16:45:00"))
    assert recap["gaps"] == 3 and recap["files"] == 6
    assert json.loads(layout.recap(MONDAY).read_text()) == recap
    assert layout.recap_days() == [MONDAY]
    [(_, fields)] = client.xrange(KEYS.alert_events)
    notice = {k.decode(): v.decode() for k, v in fields.items()}
    assert notice["id"] == f"recap:{MONDAY}" and notice["severity"] == INFO
    assert notice["title"].startswith(f"Recap {MONDAY}: 6 files")


@pytest.mark.parametrize("day", ["2026-03-19", "2026-03-07"], ids=["nyepi", "saturday"])
def test_no_recap_on_a_day_without_trading(tmp_path: Path, day: str) -> None:
    client = fakeredis.FakeRedis()
    done = daily_recap(day, str(tmp_path), connection=client)
    assert done["skipped"].startswith("not a trading day")
    assert client.xlen(KEYS.alert_events) == 0 and not Layout(tmp_path).recap_days()
    assert recap_due(CAL, at(day, "10:00:00")) is None


def test_recap_due_at_the_close_guard_or_at_once_when_late() -> None:
    assert recap_due(CAL, at(MONDAY, "09:00:00")) == (MONDAY, at(MONDAY, "16:45:00"))
    assert recap_due(CAL, at(MONDAY, "20:00:00")) == (MONDAY, at(MONDAY, "20:00:00"))
    friday = "2026-03-06"
    assert recap_due(CAL, at(friday, "09:00:00")) == (friday, at(friday, "16:45:00"))


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


@pytest.mark.redis
def test_the_worker_schedules_each_trading_day_once(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    settings = Settings.from_env({"DATA_DIR": str(tmp_path)})
    clock = Clock(at(MONDAY, "08:00:00"))
    first = RecapSchedule(client, KEYS, settings, CAL, clock)
    second = RecapSchedule(client, KEYS, settings, CAL, clock)
    assert first.ensure() == MONDAY and first.ensure() is None and second.ensure() is None
    registry = ScheduledJobRegistry(queue=Queue(QUEUE, connection=client))  # type: ignore[no-untyped-call]
    assert registry.get_job_ids() == [recap_job_id(MONDAY)]
    job = Job.fetch(recap_job_id(MONDAY), connection=client)
    assert job.func_name == "jobs.recap.daily_recap" and job.args == (MONDAY,)
    assert job.kwargs["data_dir"] == str(tmp_path.resolve())
    assert registry.get_scheduled_time(job).timestamp() == at(MONDAY, "16:45:00").timestamp()
    clock.moment = at("2026-03-19", "08:00:00")  # Nyepi: nothing
    assert first.ensure() is None and len(registry.get_job_ids()) == 1
    client.close()


@pytest.mark.redis
def test_the_monitor_sends_the_notice_once(redis_url: str) -> None:
    client: Any = redis.Redis.from_url(redis_url, decode_responses=True)
    settings = Settings.from_env({"REDIS_URL": redis_url, "OBPIPE_ID": "jobs-test"})
    monitor = build_monitor(settings, calendar=CAL, disk=lambda: None)
    monitor.step()  # takes the lock; older notices would be history
    raise_event(client, KEYS, f"recap:{MONDAY}", INFO, f"Recap {MONDAY}: 6 files", detail="x")
    monitor.step()
    monitor.step()
    sent = [f for _, f in client.xrange(KEYS.alerts) if f["condition"] == f"recap:{MONDAY}"]
    assert len(sent) == 1 and sent[0]["kind"] == "event" and sent[0]["severity"] == INFO
    assert sent[0]["subject"] == f"obpipe INFO: Recap {MONDAY}: 6 files"
    monitor.stop()
    client.close()


@pytest.mark.e2e
@pytest.mark.redis
@pytest.mark.timeout(180)
def test_recap_of_a_simulated_day_matches_its_manifest(tmp_path: Path) -> None:
    stack = Stack(
        tmp_path,
        tickers="BBCA,TLKM,ASII",
        sim_args=("--rate", "4", "--drop-every", "3"),
        env={"LEASE_TTL_MS": "2000"},
    )
    stack.start()
    try:
        wait_for(stack.ready, 30, "the pipeline")
        assert stack.client is not None
        wait_for(lambda: sum(s.gaps for s in stack.live()["ingestors"]) >= 3, 30, "gaps")
        wait_for(stack.settled, 30, "the writer to catch up")
    finally:
        codes = stack.stop()
    assert all(code == 0 for code in codes.values()), codes
    day = day_of(datetime.now(WIB))
    stack.redis.start()
    try:
        client: Any = redis.Redis.from_url(stack.redis.url)
        # The recap's figures (what the 16:45 job sends), then finalize_day after midnight.
        counts = {k.decode(): int(v) for k, v in client.hgetall(KEYS.day_counts(day)).items()}
        from jobs.finalize import _gaps
        from jobs.recap import volume_coverage

        layout = Layout(stack.data_dir)
        recap: dict[str, Any] = build_recap(
            day, counts, _gaps(layout, day), calendar=CAL,
            volume=volume_coverage(layout, day),
        )  # fmt: skip
        later = datetime.fromisoformat(day).replace(tzinfo=WIB) + timedelta(days=2)
        manifest = finalize_day(day, str(stack.data_dir), connection=client, now=later)
        client.close()
    finally:
        stack.redis.stop()
    assert manifest["ok"], manifest["problems"]
    gap_seconds = sum(
        (datetime.fromisoformat(g["end"]) - datetime.fromisoformat(g["start"])).total_seconds()
        for g in manifest["gaps"]
    )
    print(
        f"\nrecap {day}: files={recap['files']} rows={recap['rows']} trades={recap['trades']} "
        f"gaps={recap['gaps']} ({recap['gap_seconds']:.1f} s) volume={recap['volume_coverage_pct']}"
        f" | manifest: files={len(manifest['files'])} "
        f"rows={sum(f['rows'] for f in manifest['files'])} "
        f"trades={sum(t['trades'] for t in manifest['tickers'].values())} "
        f"gaps={len(manifest['gaps'])} ({gap_seconds:.1f} s) "
        f"volume={manifest['coverage']['volume_coverage_pct']}"
    )
    assert recap["gaps"] >= 3
    assert recap["files"] == len(manifest["files"])
    assert recap["rows"] == sum(f["rows"] for f in manifest["files"])
    assert recap["trades"] == sum(t["trades"] for t in manifest["tickers"].values())
    assert recap["gaps"] == len(manifest["gaps"])
    assert recap["gap_seconds"] == pytest.approx(gap_seconds, abs=0.01)
    assert recap["volume_coverage_pct"] == manifest["coverage"]["volume_coverage_pct"]
