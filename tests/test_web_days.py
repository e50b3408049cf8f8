"""The Days section's API: ``GET /api/days``, ``GET /api/days/<day>`` and
``POST /api/days/<day>/finalize``.

View tests run against fakeredis (RQ's jobs live there too); one test runs the queued job
with a real RQ worker on the session's redis-server and reads the result back through the API.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry

from jobs.finalize import finalize_day
from jobs.queue import QUEUE
from pipeline.keys import Keys
from pipeline.rows import BOOK_HEADER
from stockbit.timestamps import WIB
from tests.conftest import Clock
from tests.test_web_api import make_app
from web.app import undecoded
from web.days import summarize

TOKEN = "correct-horse-battery"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 3, 2, 10, 0, 0, tzinfo=WIB)  # a Monday
KEYS = Keys()


@pytest.fixture
def raw(fake: fakeredis.FakeRedis) -> redis.Redis:
    """The same fake server without decoding, as RQ needs."""
    return undecoded(fake)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def client(fake: fakeredis.FakeRedis, clock: Clock, data_dir: Path) -> FlaskClient:
    return make_app(fake, clock, data_dir).test_client()


def manifest(
    day: str, *, problems: tuple[str, ...] = (), compressed: bool = False
) -> dict[str, Any]:
    """A manifest shaped like ``jobs.manifest.build`` + ``finalize_day`` write it."""
    files = [
        {
            "path": f"{kind}/{day}_{code}.csv",
            "rows": rows,
            "bytes": rows * 100,
            "sha256": "0" * 64,
            "first_timestamp": f"{day}T09:00:00.000000+07:00",
            "last_timestamp": f"{day}T16:00:00.000000+07:00",
            "expected_rows": rows,
            "ok": True,
            "problems": [],
        }
        for kind, code, rows in (
            ("orderbook", "BBCA", 40),
            ("orderbook", "TLKM", 10),
            ("trades", "BBCA", 5),
        )
    ]
    doc: dict[str, Any] = {
        "day": day,
        "ok": not problems,
        "problems": list(problems),
        "files": files,
        "tickers": {"BBCA": {"snapshots": 4, "trades": 5}, "TLKM": {"snapshots": 1, "trades": 0}},
        "gaps": [{"start": f"{day}T10:00:00+07:00", "end": f"{day}T10:00:02+07:00"}],
        "generated_at": f"{day}T23:59:00+07:00",
    }
    if compressed:
        doc["compressed"] = True
    return doc


def write_manifest(data_dir: Path, name: str, content: dict[str, Any] | str) -> Path:
    folder = data_dir / "manifests"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def enqueue(raw: redis.Redis, day: str, status: JobStatus | None = None) -> Job:
    job = Queue(QUEUE, connection=raw).enqueue(
        finalize_day, day, "/nowhere", job_id=f"finalize-{day}"
    )
    if status is not None:
        job.set_status(status)
    return job


def seed(fake: fakeredis.FakeRedis, raw: redis.Redis, data_dir: Path) -> None:
    """Two finalized days, one broken manifest, two scheduled days, and junk to ignore."""
    write_manifest(data_dir, "2026-02-27.json", manifest("2026-02-27"))
    write_manifest(
        data_dir,
        "2026-02-26.json",
        manifest("2026-02-26", problems=("a", "b", "c", "d"), compressed=True),
    )
    write_manifest(data_dir, "2026-02-25.json", "{broken")
    for junk in ("notes.txt", "2026-02-30.json", "20260204.json", "2026-02-24.json.tmp"):
        write_manifest(data_dir, junk, manifest("2026-02-24"))
    (data_dir / "manifests" / "2026-02-23.json").mkdir()  # not a file
    fake.sadd(
        KEYS.finalize_scheduled, "2026-03-01", "2026-03-02", "2026-02-27", "../x", "2026-02-30"
    )
    enqueue(raw, "2026-02-27", JobStatus.FINISHED)
    enqueue(raw, "2026-02-26", JobStatus.FAILED)
    Queue(QUEUE, connection=raw).enqueue_at(
        datetime(2026, 3, 3, 0, 31, tzinfo=WIB), finalize_day, "2026-03-02",
        job_id="finalize-2026-03-02",
    )  # fmt: skip


# ---------------------------------------------------------------- GET /api/days


def test_days_lists_manifests_and_scheduled_days_newest_first(
    client: FlaskClient, fake: fakeredis.FakeRedis, raw: redis.Redis, data_dir: Path
) -> None:
    seed(fake, raw, data_dir)
    response = client.get("/api/days")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    doc = response.get_json()
    assert doc["today"] == "2026-03-02" and doc["total"] == 5
    days = {d["day"]: d for d in doc["days"]}
    assert [d["day"] for d in doc["days"]] == [
        "2026-03-02",
        "2026-03-01",
        "2026-02-27",
        "2026-02-26",
        "2026-02-25",
    ]
    today = days["2026-03-02"]
    assert today["manifest"] is None and today["scheduled"] is True
    assert today["job"] == {"id": "finalize-2026-03-02", "state": "scheduled"}
    assert today["finalizable"] is False  # not over yet in Jakarta
    sunday = days["2026-03-01"]
    assert sunday["manifest"] is None and sunday["manifest_error"] is None
    assert sunday["job"]["state"] == "none" and sunday["finalizable"] is True
    assert days["2026-02-27"] == {
        "day": "2026-02-27",
        "manifest": {
            "ok": True,
            "problems": 0,
            "first_problems": [],
            "files": 3,
            "rows": 55,
            "bytes": 5500,
            "tickers": 2,
            "gaps": 1,
            "compressed": False,
            "generated_at": "2026-02-27T23:59:00+07:00",
            # A manifest written before coverage existed: unknown, never a number.
            "coverage": {
                "pct": "unknown",
                "flagged": False,
                "floor": 99.9,
                "below": [],
                "below_count": 0,
                "unknown": 0,
            },
        },
        "manifest_error": None,
        "recap": None,  # no daily recap was written for that day
        "scheduled": True,
        "job": {"id": "finalize-2026-02-27", "state": "finished"},
        "finalizable": True,
    }
    bad = days["2026-02-26"]
    assert bad["manifest"]["ok"] is False and bad["manifest"]["problems"] == 4
    assert bad["manifest"]["first_problems"] == ["a", "b", "c"]
    assert bad["manifest"]["compressed"] is True
    assert bad["scheduled"] is False and bad["job"]["state"] == "failed"
    broken = days["2026-02-25"]
    assert broken["manifest"] is None
    assert broken["manifest_error"] == "manifest unreadable (JSONDecodeError)"
    assert broken["job"]["state"] == "none"


def test_days_notice_a_rewritten_manifest(
    client: FlaskClient, fake: fakeredis.FakeRedis, raw: redis.Redis, data_dir: Path
) -> None:
    path = write_manifest(data_dir, "2026-02-27.json", manifest("2026-02-27", problems=("x",)))
    first = client.get("/api/days").get_json()["days"][0]["manifest"]
    assert first["ok"] is False
    path.write_text(json.dumps(manifest("2026-02-27")) + "\n")  # run again: all good now
    second = client.get("/api/days").get_json()["days"][0]["manifest"]
    assert second["ok"] is True and second["problems"] == 0


def test_days_show_volume_coverage_and_flag_it_under_the_floor(
    client: FlaskClient, data_dir: Path
) -> None:
    cases: dict[str, dict[str, Any]] = {
        "2026-02-27": {"volume_coverage_pct": 100.0, "below": [], "unknown": []},
        "2026-02-26": {"volume_coverage_pct": 99.95, "below": ["TLKM"], "unknown": ["GOTO"]},
        "2026-02-25": {"volume_coverage_pct": 97.5, "below": [], "unknown": []},
        "2026-02-24": {"volume_coverage_pct": "unknown", "below": [], "unknown": ["BBCA"]},
    }
    for day, coverage in cases.items():
        doc = manifest(day)
        doc["coverage"] = {**coverage, "floor_pct": 99.9, "trades_captured": True}
        write_manifest(data_dir, f"{day}.json", doc)
    days = {d["day"]: d["manifest"]["coverage"] for d in client.get("/api/days").get_json()["days"]}
    assert days["2026-02-27"]["pct"] == 100.0 and days["2026-02-27"]["flagged"] is False
    # A day above the floor overall is still flagged when one ticker is under it.
    assert days["2026-02-26"]["flagged"] is True and days["2026-02-26"]["below"] == ["TLKM"]
    assert days["2026-02-26"]["unknown"] == 1
    assert days["2026-02-25"]["pct"] == 97.5 and days["2026-02-25"]["flagged"] is True
    assert days["2026-02-24"]["pct"] == "unknown" and days["2026-02-24"]["flagged"] is False
    page = client.get("/").get_data(as_text=True)
    assert ">Coverage</th>" in page


def test_days_are_capped(client: FlaskClient, fake: fakeredis.FakeRedis, data_dir: Path) -> None:
    start = datetime(2025, 12, 1)
    for n in range(65):
        day = (start + timedelta(days=n)).date().isoformat()
        write_manifest(data_dir, f"{day}.json", manifest(day))
    doc = client.get("/api/days").get_json()
    assert doc["total"] == 65 and len(doc["days"]) == 60
    assert doc["days"][0]["day"] == "2026-02-03" and doc["days"][-1]["day"] == "2025-12-06"


def test_days_without_a_data_dir_or_anything_scheduled(
    fake: fakeredis.FakeRedis, clock: Clock, tmp_path: Path
) -> None:
    app = make_app(fake, clock, tmp_path / "missing")
    assert app.test_client().get("/api/days").get_json() == {
        "days": [],
        "total": 0,
        "today": "2026-03-02",
    }


def test_summarize_tolerates_odd_manifests() -> None:
    odd = summarize({"files": [{"rows": "7"}, "x", {"rows": True, "bytes": 3.0}], "ok": "yes"})
    assert odd["ok"] is False and odd["files"] == 2 and odd["rows"] == 0 and odd["bytes"] == 3
    assert odd["tickers"] == 0 and odd["gaps"] == 0 and odd["generated_at"] is None
    with pytest.raises(ValueError, match="not a JSON object"):
        summarize([1, 2])


# ---------------------------------------------------------------- GET /api/days/<day>


def test_day_manifest_is_the_file(client: FlaskClient, data_dir: Path) -> None:
    doc = manifest("2026-02-27")
    write_manifest(data_dir, "2026-02-27.json", doc)
    response = client.get("/api/days/2026-02-27")
    assert response.status_code == 200 and response.get_json() == doc
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_day_manifest_missing_or_broken(client: FlaskClient, data_dir: Path) -> None:
    missing = client.get("/api/days/2026-02-20")
    assert missing.status_code == 404
    assert "2026-02-20" in missing.get_json()["error"]
    write_manifest(data_dir, "2026-02-25.json", "{broken")
    broken = client.get("/api/days/2026-02-25")
    assert broken.status_code == 500
    assert (
        broken.get_json()["error"] == "the manifest of 2026-02-25 is unreadable (JSONDecodeError)"
    )
    assert str(data_dir) not in broken.get_data(as_text=True)


BAD_DAYS = [
    "../etc",
    "..%2Fetc",
    "..%2F..%2Fetc%2Fpasswd",
    "2026-02-30",
    "2026-13-01",
    "20260204",
    "2026-2-4",
    "2026-02-04.json",
    "2026-02-04%00",
    "%EF%BC%92026-02-04",  # a full-width digit
    "2026-W06-3",
    " 2026-02-04",
    "2026-02-04/..",
]


@pytest.mark.parametrize("day", BAD_DAYS)
def test_bad_day_strings_are_400(
    client: FlaskClient, fake: fakeredis.FakeRedis, raw: redis.Redis, data_dir: Path, day: str
) -> None:
    (data_dir / "manifests").mkdir()
    (data_dir / "etc").mkdir()
    (data_dir / "etc" / "passwd").write_text("{}")
    for response in (
        client.get(f"/api/days/{day}"),
        client.post(f"/api/days/{day}/finalize", headers=AUTH),
    ):
        assert response.status_code == 400, (day, response.get_json())
        assert "not a" in response.get_json()["error"]
    assert Queue(QUEUE, connection=raw).count == 0


# ---------------------------------------------------------------- POST /api/days/<day>/finalize


def test_finalize_enqueues_the_job(
    client: FlaskClient, fake: fakeredis.FakeRedis, raw: redis.Redis, data_dir: Path
) -> None:
    fake.sadd(KEYS.finalize_scheduled, "2026-03-01")
    response = client.post("/api/days/2026-03-01/finalize", headers=AUTH)
    assert response.status_code == 202
    assert response.get_json() == {
        "day": "2026-03-01",
        "job": {"id": "finalize-2026-03-01", "state": "queued"},
        "previous": "none",
        "message": "finalize of 2026-03-01 queued as job finalize-2026-03-01",
    }
    queue = Queue(QUEUE, connection=raw)
    assert queue.job_ids == ["finalize-2026-03-01"]
    job = Job.fetch("finalize-2026-03-01", connection=raw)
    assert job.func_name == "jobs.finalize.finalize_day"
    assert job.args == ("2026-03-01",)
    assert job.kwargs == {
        "data_dir": str(data_dir.resolve()),
        "key_prefix": "obpipe:",
        "compress_after_days": 0,
        "keep_csv_days": 0,
        "grace_min": 30,
    }
    assert job.retries_left == 3 and job.retry_intervals == [60, 300, 900]
    listed = client.get("/api/days").get_json()["days"][0]
    assert listed["job"]["state"] == "queued" and listed["finalizable"] is False


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.STARTED])
def test_finalize_is_409_while_the_job_is_queued_or_running(
    client: FlaskClient, raw: redis.Redis, status: JobStatus
) -> None:
    enqueue(raw, "2026-02-27", status)
    response = client.post("/api/days/2026-02-27/finalize", headers=AUTH)
    assert response.status_code == 409
    body = response.get_json()
    assert body["state"] == status.value
    assert body["job"] == {"id": "finalize-2026-02-27", "state": status.value}
    assert status.value in body["error"]
    assert Job.fetch("finalize-2026-02-27", connection=raw).get_status() == status


@pytest.mark.parametrize("status", [JobStatus.FINISHED, JobStatus.FAILED])
def test_finalize_runs_a_finished_day_again(
    client: FlaskClient, raw: redis.Redis, status: JobStatus
) -> None:
    queue = Queue(QUEUE, connection=raw)
    old = enqueue(raw, "2026-02-27", status)
    queue.remove(old)
    registry = (
        FinishedJobRegistry(queue=queue)
        if status == JobStatus.FINISHED
        else FailedJobRegistry(queue=queue)
    )
    registry.add(old, 600)
    assert registry.get_job_ids() == ["finalize-2026-02-27"]
    response = client.post("/api/days/2026-02-27/finalize", headers=AUTH)
    assert response.status_code == 202
    assert response.get_json()["previous"] == status.value
    assert registry.get_job_ids() == []  # the old run left its registry
    assert queue.job_ids == ["finalize-2026-02-27"]
    assert Job.fetch("finalize-2026-02-27", connection=raw).get_status() == JobStatus.QUEUED


def test_finalize_replaces_a_job_still_scheduled_for_later(
    client: FlaskClient, raw: redis.Redis
) -> None:
    queue = Queue(QUEUE, connection=raw)
    queue.enqueue_at(
        datetime(2026, 3, 2, 0, 31, tzinfo=WIB), finalize_day, "2026-03-01",
        job_id="finalize-2026-03-01",
    )  # fmt: skip
    registry = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
    assert registry.get_job_ids() == ["finalize-2026-03-01"]
    response = client.post("/api/days/2026-03-01/finalize", headers=AUTH)
    assert response.status_code == 202 and response.get_json()["previous"] == "scheduled"
    assert registry.get_job_ids() == []  # the scheduler will not run it a second time
    assert queue.job_ids == ["finalize-2026-03-01"]


@pytest.mark.parametrize(
    ("moment", "day"),
    [
        (NOW, "2026-03-02"),  # today
        (NOW, "2026-03-03"),  # tomorrow
        (NOW, "2027-01-01"),
        (datetime(2026, 3, 2, 0, 10, tzinfo=WIB), "2026-03-01"),  # ended, but within the grace
        (datetime(2026, 3, 1, 17, 20, tzinfo=UTC), "2026-03-01"),  # 00:20 WIB on the 2nd
    ],
)
def test_finalize_refuses_days_not_over(
    client: FlaskClient, clock: Clock, raw: redis.Redis, moment: datetime, day: str
) -> None:
    clock.moment = moment
    response = client.post(f"/api/days/{day}/finalize", headers=AUTH)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == (
        f"{day} has not finished in Jakarta time (plus 30 min grace); "
        "its files may still be written"
    )
    assert body["day"] == day
    assert Queue(QUEUE, connection=raw).count == 0


def test_finalize_after_the_grace_period(
    client: FlaskClient, clock: Clock, raw: redis.Redis
) -> None:
    clock.moment = datetime(2026, 3, 2, 0, 30, tzinfo=WIB)
    assert client.post("/api/days/2026-03-01/finalize", headers=AUTH).status_code == 202


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer wrong-token-value"},
    ],
    ids=["missing", "empty", "wrong-scheme", "wrong"],
)
def test_finalize_refused_without_the_right_token(
    client: FlaskClient, raw: redis.Redis, headers: dict[str, str]
) -> None:
    for day in ("2026-03-01", "../etc", "2026-03-02"):  # authentication comes first
        response = client.post(f"/api/days/{day}/finalize", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in response.get_data(as_text=True)
    assert Queue(QUEUE, connection=raw).count == 0


def test_finalize_is_403_in_read_only_mode(
    fake: fakeredis.FakeRedis, raw: redis.Redis, clock: Clock, data_dir: Path
) -> None:
    client = make_app(fake, clock, data_dir, token=None).test_client()
    response = client.post("/api/days/2026-03-01/finalize", headers=AUTH)
    assert response.status_code == 403
    assert response.get_json()["read_only"] is True
    assert Queue(QUEUE, connection=raw).count == 0
    # Reading still works.
    assert client.get("/api/days").status_code == 200


def test_finalize_wants_post(client: FlaskClient) -> None:
    assert client.put("/api/days/2026-03-01/finalize", headers=AUTH).status_code == 405
    assert client.delete("/api/days/2026-03-01", headers=AUTH).status_code == 405


def test_days_with_redis_down_are_503(clock: Clock, data_dir: Path) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    down = fakeredis.FakeRedis(server=server, decode_responses=True)
    client = make_app(down, clock, data_dir).test_client()
    for response in (
        client.get("/api/days"),
        client.post("/api/days/2026-03-01/finalize", headers=AUTH),
    ):
        assert response.status_code == 503
        assert response.get_json()["error"] == "Redis is unavailable"


def test_page_has_the_days_section(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    assert 'id="h-days"' in html and 'id="days"' in html
    assert 'data-days-poll-ms="5000"' in html
    assert 'title="trades per second"' in html


# ---------------------------------------------------------------- a real worker


@pytest.mark.redis
def test_finalize_through_a_real_worker(
    redis_url: str, redis_client: redis.Redis, data_dir: Path
) -> None:
    day = "2025-12-01"  # long over, whatever today is
    rows = [
        f"{day}T09:00:00.100000+07:00,8200,10,8200000,BID,1,2,1,{day}T09:00:00.150000+07:00",
        f"{day}T09:00:00.100000+07:00,8225,3,2467500,OFFER,1,1,1,{day}T09:00:00.150000+07:00",
        f"{day}T09:00:01.100000+07:00,8200,12,9840000,BID,1,3,2,{day}T09:00:01.150000+07:00",
    ]
    text = BOOK_HEADER + "\n".join(rows) + "\n"
    (data_dir / "orderbook").mkdir()
    (data_dir / "orderbook" / f"{day}_BBCA.csv").write_text(text)
    redis_client.hset(KEYS.day_counts(day), mapping={f"orderbook/{day}_BBCA.csv": 3})
    redis_client.sadd(KEYS.finalize_scheduled, day)
    app = make_app(redis_client, Clock(datetime.now(WIB)), data_dir)
    client = app.test_client()

    (before,) = client.get("/api/days").get_json()["days"]
    assert before["day"] == day and before["manifest"] is None
    assert before["job"]["state"] == "none" and before["finalizable"] is True

    queued = client.post(f"/api/days/{day}/finalize", headers=AUTH)
    assert queued.status_code == 202 and queued.get_json()["job"]["state"] == "queued"
    assert client.post(f"/api/days/{day}/finalize", headers=AUTH).status_code == 409

    connection = redis.Redis.from_url(redis_url)
    try:
        worker = SimpleWorker([Queue(QUEUE, connection=connection)], connection=connection)
        assert worker.work(burst=True)
    finally:
        connection.close()

    (after,) = client.get("/api/days").get_json()["days"]
    assert after["job"] == {"id": f"finalize-{day}", "state": "finished"}
    assert after["manifest_error"] is None
    summary = after["manifest"]
    summary.pop("generated_at")
    assert summary == {
        "ok": True,
        "problems": 0,
        "first_problems": [],
        "files": 1,
        "rows": 3,
        "bytes": len(text.encode()),
        "tickers": 1,
        "gaps": 0,
        "compressed": False,
        # Books only, no trades and no LivePrice: the coverage cannot be known.
        "coverage": {
            "pct": "unknown",
            "flagged": False,
            "floor": 99.9,
            "below": [],
            "below_count": 0,
            "unknown": 1,
        },
    }
    assert after["finalizable"] is True  # it may be run again
    full = client.get(f"/api/days/{day}").get_json()
    assert full["day"] == day and full["ok"] is True
    (book,) = full["files"]
    assert book["path"] == f"orderbook/{day}_BBCA.csv" and book["expected_rows"] == 3
    assert full["tickers"]["BBCA"]["snapshots"] == 3
    assert (data_dir / "manifests" / f"{day}.json").is_file()
