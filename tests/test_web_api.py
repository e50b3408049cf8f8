"""The web app's views through ``app.test_client()`` against fakeredis."""

# Every endpoint, its JSON shape, the security headers, the admin-token refusals (401/403),
# invalid tickers (400 naming them), unknown things (404) and Redis outages (503).

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from pipeline.keys import WRITER_GROUP, Keys
from pipeline.layout import Layout
from pipeline.records import BookRecord, GapRecord
from pipeline.rows import GAP_HEADER, gap_row
from pipeline.secret import Secret
from pipeline.settings import Settings
from pipeline.status import IngestorStatus, WriterStatus, render
from stockbit.timestamps import WIB
from tests.conftest import Clock
from web.app import create_app

TOKEN = "correct-horse-battery"
NOW = datetime(2026, 3, 2, 10, 0, 0, tzinfo=WIB)  # a Monday, in session 1
DAY = "2026-03-02"
KEYS = Keys()
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


def make_app(
    client: redis.Redis, clock: Clock, data_dir: Path, token: str | None = TOKEN, **extra: Any
) -> Flask:
    """The app over an injected client and clock; ``extra`` are further Settings fields."""
    settings = Settings(
        data_dir=data_dir, web_admin_token=Secret(token) if token is not None else None, **extra
    )
    app = create_app(settings, redis_client=client, clock=clock)
    app.testing = True
    return app


@pytest.fixture
def client(fake: fakeredis.FakeRedis, clock: Clock, data_dir: Path) -> FlaskClient:
    return make_app(fake, clock, data_dir).test_client()


@pytest.fixture
def read_only(fake: fakeredis.FakeRedis, clock: Clock, data_dir: Path) -> FlaskClient:
    return make_app(fake, clock, data_dir, token=None).test_client()


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def book(code: str, side: str, seq: int, levels: list[tuple[int, int, int]]) -> dict[str, str]:
    text = "|".join(f"{p};{o};{s}" for p, o, s in levels)
    when = iso(NOW - timedelta(seconds=1))
    return BookRecord(code, side, seq, when, text, when, "ing-a").fields()


def xadd(r: redis.Redis, stream: str, fields: dict[str, str]) -> None:
    """XADD with str fields (redis-py's annotation wants its own union types)."""
    loose: dict[Any, Any] = dict(fields)
    r.xadd(stream, loose)


def seed(r: redis.Redis, data_dir: Path) -> None:
    """A small live deployment: two ingestors, one writer, three tickers, gaps, files."""
    now_ms = NOW.timestamp() * 1000
    ing_a = IngestorStatus(
        id="ing-a",
        state="connected",
        started_at=iso(NOW - timedelta(hours=2)),
        connected_since=iso(NOW - timedelta(minutes=90)),
        frames=12_345,
        reconnects=2,
        tickers=["BBCA", "TLKM"],
        last_frame_at=iso(NOW - timedelta(seconds=1)),
        token_expires_at=iso(NOW + timedelta(hours=5)),
    )
    ing_b = IngestorStatus(
        id="ing-b", state="auth_failed", tickers=["GOTO"], last_error="401 from Stockbit"
    )
    r.set(KEYS.ingestor("ing-a"), ing_a.to_json())
    r.set(KEYS.ingestor("ing-b"), ing_b.to_json())
    r.zadd(KEYS.ingestors, {"ing-a": now_ms - 500, "ing-b": now_ms - 800, "ing-dead": 1})
    writer = WriterStatus(
        id="wr-1", partitions=[3, 1, 2], rows=99_000, lag_entries=42, lag_seconds=0.7
    )
    r.set(KEYS.writer("wr-1"), writer.to_json())
    r.zadd(KEYS.writers, {"wr-1": now_ms - 300})
    r.sadd(KEYS.desired_tickers, "BBCA", "TLKM", "GOTO")
    r.hset(
        KEYS.ticker("BBCA"),
        mapping={
            "frames": 1000,
            "trades": 50,
            "last_update": iso(NOW - timedelta(seconds=2)),
            "best_bid": 8200,
            "best_offer": 8225,
            "best_bid_lots": 120,
            "best_offer_lots": 80,
        },
    )
    r.hset(
        KEYS.ticker("TLKM"),
        mapping={"frames": 10, "last_update": iso(NOW - timedelta(seconds=30))},
    )
    r.hset(
        KEYS.ticker("GOTO"),
        mapping={"frames": 1, "last_update": iso(NOW - timedelta(minutes=5))},
    )
    today_gap = GapRecord(
        iso(NOW - timedelta(minutes=10)),
        iso(NOW - timedelta(minutes=9, seconds=30)),
        "disconnect",
        ("BBCA", "TLKM"),
        "ing-a",
        "connection closed",
    )
    old_gap = GapRecord("2026-02-27T15:00:00+07:00", "2026-02-27T15:01:00+07:00", "stall", (), "x")
    xadd(r, KEYS.gaps, old_gap.fields())
    xadd(r, KEYS.gaps, today_gap.fields())
    xadd(r, KEYS.gaps, {"junk": "1"})
    r.hset(
        KEYS.day_counts(DAY),
        mapping={
            f"orderbook/{DAY}_BBCA.csv": 5000,
            f"orderbook/{DAY}_TLKM.csv": 20,
            "orderbook/../../etc/passwd_X.csv": 1,
            "orderbook/2026-03-01_BBCA.csv": 7,
        },
    )
    (data_dir / "orderbook").mkdir(exist_ok=True)
    (data_dir / "orderbook" / f"{DAY}_BBCA.csv").write_bytes(b"x" * 1234)
    xadd(r, KEYS.deadletter, {"error": "bad frame", "raw": "AAAA"})
    r.hset(KEYS.counters, mapping={"maxlen_trims": 3})
    stream = KEYS.stream_for("BBCA")
    for seq in range(5):
        xadd(r, stream, book("BBCA", "BID", seq, [(8200, 3, 12_000)]))
    r.xgroup_create(stream, WRITER_GROUP, id="0")
    r.xreadgroup(WRITER_GROUP, "wr-1", {stream: ">"}, count=2)


# ---------------------------------------------------------------- page and headers


def test_page_is_a_static_shell_with_strict_headers(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # No inline script bodies and no inline event handlers: all JS is in static/app.js.
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert re.search(r"\son[a-z]+\s*=", html) is None
    assert "style=" not in html
    assert 'data-read-only="false"' in html
    assert TOKEN not in html


def test_page_in_read_only_mode_never_needs_redis(clock: Clock, data_dir: Path) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    down = fakeredis.FakeRedis(server=server, decode_responses=True)
    response = make_app(down, clock, data_dir, token=None).test_client().get("/")
    assert response.status_code == 200
    assert 'data-read-only="true"' in response.get_data(as_text=True)


def test_static_files_are_served_with_headers(client: FlaskClient) -> None:
    for name in ("app.js", "style.css"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        response.close()


# ---------------------------------------------------------------- /api/status


def test_status_document(client: FlaskClient, fake: fakeredis.FakeRedis, data_dir: Path) -> None:
    seed(fake, data_dir)
    response = client.get("/api/status")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    doc: dict[str, Any] = response.get_json()

    assert doc["now"] == "2026-03-02T10:00:00+07:00" and doc["day"] == DAY
    assert doc["market"] == {
        "open": True,
        "session": "Session 1",
        "phase": "session_1",
        "continuous": True,
        "next_change_at": "2026-03-02T12:00:00+07:00",
        "next_phase": "lunch_break",
        "holiday": None,
    }
    assert doc["read_only"] is False

    by_id = {i["id"]: i for i in doc["ingestors"]}
    assert set(by_id) == {"ing-a", "ing-b"}  # ing-dead's status key is gone
    a = by_id["ing-a"]
    for name in ("id", "state", "connected_since", "uptime_s", "frames", "reconnects",
                 "tickers", "last_frame_at"):  # fmt: skip
        assert name in a
    assert a["state"] == "connected" and a["uptime_s"] == 5400
    assert a["frames"] == 12_345 and a["reconnects"] == 2 and a["tickers"] == ["BBCA", "TLKM"]
    assert a["token_expires_in_s"] == 5 * 3600
    assert a["heartbeat_age_s"] == 0.5
    assert by_id["ing-b"]["state"] == "auth_failed" and by_id["ing-b"]["uptime_s"] is None
    assert by_id["ing-b"]["last_error"] == "401 from Stockbit"

    (writer,) = doc["writers"]
    assert writer["id"] == "wr-1" and writer["partitions"] == [1, 2, 3]
    assert writer["rows"] == 99_000 and writer["lag"] == 42 and writer["lag_seconds"] == 0.7

    tickers = doc["tickers"]
    assert set(tickers) == {"BBCA", "GOTO", "TLKM"}
    bbca = tickers["BBCA"]
    assert bbca["frames"] == 1000 and bbca["best_bid"] == 8200 and bbca["best_offer"] == 8225
    assert bbca["spread"] == 25 and bbca["spread_bps"] == pytest.approx(30.4, abs=0.1)
    assert bbca["last_update"] == "2026-03-02T09:59:58+07:00" and bbca["age_s"] == 2
    assert bbca["freshness"] == "ok" and bbca["ingestors"] == ["ing-a"]
    assert tickers["TLKM"]["freshness"] == "amber"
    assert tickers["GOTO"]["freshness"] == "red" and tickers["GOTO"]["spread"] is None

    (gap,) = doc["gaps"]  # yesterday's gap and the malformed entry are left out
    assert gap["cause"] == "disconnect" and gap["tickers"] == ["BBCA", "TLKM"]
    assert gap["duration_s"] == 30 and doc["gaps_today"] == 1

    files = {f["name"]: f for f in doc["files"]}
    assert set(files) == {f"{DAY}_BBCA.csv", f"{DAY}_TLKM.csv"}
    assert files[f"{DAY}_BBCA.csv"] == {
        "name": f"{DAY}_BBCA.csv",
        "code": "BBCA",
        "rows": 5000,
        "bytes": 1234,
    }
    assert files[f"{DAY}_TLKM.csv"]["bytes"] is None  # counted in Redis, not on this disk

    streams = doc["streams"]
    assert streams["partitions"] == 16 and streams["length"] == 5
    assert streams["pending"] == 2 and streams["backlog"] == 3  # fakeredis reports lag
    assert doc["dead_letters"] == 1 and doc["counters"] == {"maxlen_trims": 3}
    assert doc["desired_tickers"] == ["BBCA", "GOTO", "TLKM"]
    assert set(doc["throughput"]) >= {"frames_per_s", "rows_per_s", "history", "window_s"}


def test_status_outside_sessions_does_not_call_quiet_tickers_stale(
    client: FlaskClient, fake: fakeredis.FakeRedis, clock: Clock, data_dir: Path
) -> None:
    seed(fake, data_dir)
    clock.moment = NOW.replace(hour=12, minute=45)  # lunch break
    doc = client.get("/api/status").get_json()
    assert doc["market"]["open"] is False
    assert {t["freshness"] for t in doc["tickers"].values()} == {"closed"}


def test_status_rates_come_from_successive_reads(
    client: FlaskClient, fake: fakeredis.FakeRedis, clock: Clock, data_dir: Path
) -> None:
    seed(fake, data_dir)
    first = client.get("/api/status").get_json()["tickers"]["BBCA"]
    assert first["frames_per_s"] is None and first["trades_per_s"] is None
    fake.hincrby(KEYS.ticker("BBCA"), "frames", 200)
    fake.hincrby(KEYS.ticker("BBCA"), "trades", 20)
    fake.hincrby(KEYS.ticker("TLKM"), "frames", 100)
    clock.moment = NOW + timedelta(seconds=5)
    doc = client.get("/api/status").get_json()
    assert doc["tickers"]["BBCA"]["frames_per_s"] == 40
    assert doc["tickers"]["BBCA"]["trades"] == 70 and doc["tickers"]["BBCA"]["trades_per_s"] == 4
    assert doc["tickers"]["TLKM"]["trades"] == 0 and doc["tickers"]["TLKM"]["trades_per_s"] is None
    assert doc["throughput"]["frames_per_s"] == 60
    assert doc["throughput"]["history"] == [[NOW.timestamp() + 5, 60]]


def test_status_with_empty_redis(client: FlaskClient) -> None:
    doc = client.get("/api/status").get_json()
    assert doc["ingestors"] == [] and doc["writers"] == [] and doc["tickers"] == {}
    assert doc["gaps"] == [] and doc["files"] == [] and doc["dead_letters"] == 0


def test_malformed_status_keys_do_not_break_the_page(
    client: FlaskClient, fake: fakeredis.FakeRedis
) -> None:
    fake.set(KEYS.ingestor("bad"), "{not json")
    fake.zadd(KEYS.ingestors, {"bad": 1})
    fake.hset(KEYS.ticker("BBCA"), mapping={"frames": "many", "last_update": "yesterday"})
    fake.sadd(KEYS.desired_tickers, "BBCA")
    doc = client.get("/api/status").get_json()
    assert doc["ingestors"] == []
    assert doc["tickers"]["BBCA"]["frames"] == 0 and doc["tickers"]["BBCA"]["age_s"] is None


def down_client(clock: Clock, data_dir: Path) -> FlaskClient:
    server = fakeredis.FakeServer()
    server.connected = False
    down = fakeredis.FakeRedis(server=server, decode_responses=True)
    return make_app(down, clock, data_dir).test_client()


def test_redis_down_answers_503_json(clock: Clock, data_dir: Path) -> None:
    client = down_client(clock, data_dir)
    for method, path in [
        ("GET", "/api/status"),
        ("GET", "/api/tickers"),
        ("GET", "/api/depth/BBCA"),
        ("POST", "/api/tickers"),
    ]:
        response = client.open(path, method=method, json={"add": ["BBCA"]}, headers=AUTH)
        assert response.status_code == 503, path
        assert response.get_json()["error"] == "Redis is unavailable"
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_json() == {"status": "error", "redis": "unreachable"}


# ---------------------------------------------------------------- /healthz and /metrics


def test_healthz_ok(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "redis": "ok"}


def test_metrics_read_redis_at_scrape_time(
    client: FlaskClient, fake: fakeredis.FakeRedis, data_dir: Path
) -> None:
    seed(fake, data_dir)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.get_data(as_text=True)
    for line in [
        "obpipe_redis_up 1.0",
        'obpipe_ingestor_frames_total{ingestor="ing-a"} 12345.0',
        'obpipe_ingestor_reconnects_total{ingestor="ing-a"} 2.0',
        'obpipe_ingestor_state{ingestor="ing-b",state="auth_failed"} 1.0',
        'obpipe_ingestor_state{ingestor="ing-b",state="connected"} 0.0',
        'obpipe_ingestor_token_expiry_seconds{ingestor="ing-a"} 18000.0',
        'obpipe_writer_rows_total{writer="wr-1"} 99000.0',
        'obpipe_writer_lag_entries{writer="wr-1"} 42.0',
        'obpipe_ticker_frames_total{ticker="BBCA"} 1000.0',
        "obpipe_gaps_today 1.0",
        "obpipe_deadletter_entries 1.0",
        'obpipe_pipeline_events_total{name="maxlen_trims"} 3.0',
        'obpipe_stream_pending{partition="',
    ]:
        assert line in text, line
    # A later scrape sees later figures: nothing is cached.
    fake.hincrby(KEYS.ticker("BBCA"), "frames", 5)
    assert 'ticker="BBCA"} 1005.0' in client.get("/metrics").get_data(as_text=True)


def test_a_gap_stays_listed_after_the_writer_copied_it_and_trimmed_the_stream(
    client: FlaskClient, fake: fakeredis.FakeRedis, clock: Clock, data_dir: Path
) -> None:
    """Issue 13: counters.gaps was 1 and the gap file had the record, but the page said 0."""
    gap = GapRecord(
        iso(NOW - timedelta(seconds=40)),
        iso(NOW - timedelta(seconds=10)),
        "disconnect",
        ("BBCA",),
        "ing-a",
        "closed by the server: code 1006",
    )
    xadd(fake, KEYS.gaps, gap.fields())
    fake.sadd(KEYS.desired_tickers, "BBCA", "TLKM")

    def listed() -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
        doc = client.get("/api/status").get_json()
        return doc["gaps"], doc["gaps_today"], doc["tickers"]

    gaps, count, _ = listed()
    assert count == 1 and gaps[0]["detail"] == gap.detail
    # The writer copies it to the day's gap file; both places hold it for a moment: one row.
    path = Layout(data_dir).gaps(DAY)
    path.parent.mkdir(parents=True)
    path.write_text(GAP_HEADER + gap_row(gap))
    assert listed()[1] == 1
    # ... then its commit trims the stream (XTRIM MINID past the entry).
    fake.xtrim(KEYS.gaps, minid="9999999999999", approximate=False)
    assert fake.xlen(KEYS.gaps) == 0
    clock.moment = NOW + timedelta(minutes=10)
    gaps, count, tickers = listed()
    assert count == 1 and gaps[0]["start"] == gap.start and gaps[0]["tickers"] == ["BBCA"]
    assert gaps[0]["duration_s"] == 30 and gaps[0]["id"].startswith("file:")
    # Trading time so far: 09:00-10:10, 4,200 s; BBCA missed 30 s of it, TLKM nothing.
    assert tickers["BBCA"]["time_covered_pct"] == round(100 * 4170 / 4200, 2)
    assert tickers["TLKM"]["time_covered_pct"] == 100.0
    text = client.get("/metrics").get_data(as_text=True)
    assert "obpipe_gaps_today 1.0" in text
    assert 'obpipe_ticker_time_covered_ratio{ticker="BBCA"} 0.9929' in text
    printed = render(fake, KEYS, now=clock.moment, data_dir=data_dir)
    assert "gaps today (1 shown, 1 in all):" in printed
    assert "disconnect" in printed and "closed by the server: code 1006" in printed
    # The next day starts empty.
    clock.moment = NOW + timedelta(days=1)
    assert listed()[1] == 0


def test_metrics_with_redis_down_still_scrape(clock: Clock, data_dir: Path) -> None:
    response = down_client(clock, data_dir).get("/metrics")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "obpipe_redis_up 0.0" in text and "obpipe_ingestor" not in text


# ---------------------------------------------------------------- /api/tickers


def test_list_tickers(client: FlaskClient, fake: fakeredis.FakeRedis) -> None:
    fake.sadd(KEYS.desired_tickers, "TLKM", "BBCA")
    assert client.get("/api/tickers").get_json() == {
        "tickers": ["BBCA", "TLKM"],
        "read_only": False,
    }


def test_add_and_remove_with_the_token(client: FlaskClient, fake: fakeredis.FakeRedis) -> None:
    fake.sadd(KEYS.desired_tickers, "TLKM", "ASII")
    response = client.post(
        "/api/tickers", json={"add": ["bbca", " goto ", "BBCA", "TLKM"], "remove": ["ASII"]},
        headers=AUTH,
    )  # fmt: skip
    assert response.status_code == 200
    assert response.get_json() == {
        "tickers": ["BBCA", "GOTO", "TLKM"],
        "added": ["BBCA", "GOTO"],
        "removed": ["ASII"],
        "unchanged": ["TLKM"],
        "message": "added BBCA, GOTO; removed ASII; no change for TLKM",
    }
    assert fake.smembers(KEYS.desired_tickers) == {"BBCA", "GOTO", "TLKM"}


def test_delete_one_ticker(client: FlaskClient, fake: fakeredis.FakeRedis) -> None:
    fake.sadd(KEYS.desired_tickers, "TLKM", "BBCA")
    response = client.delete("/api/tickers/tlkm", headers=AUTH)
    assert response.status_code == 200
    assert response.get_json()["removed"] == ["TLKM"]
    assert fake.smembers(KEYS.desired_tickers) == {"BBCA"}
    missing = client.delete("/api/tickers/TLKM", headers=AUTH)
    assert missing.status_code == 404 and "TLKM" in missing.get_json()["error"]
    bad = client.delete("/api/tickers/B%40D", headers=AUTH)
    assert bad.status_code == 400 and bad.get_json()["invalid"] == ["B@D"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer wrong-token-value"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
    ids=["missing", "empty", "wrong-scheme", "wrong", "longer"],
)
def test_control_refused_without_the_right_token(
    client: FlaskClient, fake: fakeredis.FakeRedis, headers: dict[str, str]
) -> None:
    fake.sadd(KEYS.desired_tickers, "TLKM")
    for response in (
        client.post("/api/tickers", json={"add": ["BBCA"]}, headers=headers),
        client.delete("/api/tickers/TLKM", headers=headers),
        # Authentication comes before validation: an invalid body still gets 401.
        client.post("/api/tickers", data="junk", headers=headers),
    ):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        body = response.get_json()
        assert "token" in body["error"] and TOKEN not in response.get_data(as_text=True)
    assert fake.smembers(KEYS.desired_tickers) == {"TLKM"}


def test_control_is_403_in_read_only_mode(
    read_only: FlaskClient, fake: fakeredis.FakeRedis
) -> None:
    fake.sadd(KEYS.desired_tickers, "TLKM")
    for response in (
        read_only.post("/api/tickers", json={"add": ["BBCA"]}, headers=AUTH),
        read_only.delete("/api/tickers/TLKM", headers=AUTH),
    ):
        assert response.status_code == 403
        body = response.get_json()
        assert body["read_only"] is True and "WEB_ADMIN_TOKEN" in body["error"]
    assert read_only.get("/api/tickers").get_json()["read_only"] is True
    assert read_only.get("/api/status").get_json()["read_only"] is True
    assert fake.smembers(KEYS.desired_tickers) == {"TLKM"}


def test_invalid_tickers_are_named_and_nothing_changes(
    client: FlaskClient, fake: fakeredis.FakeRedis
) -> None:
    fake.sadd(KEYS.desired_tickers, "TLKM")
    response = client.post(
        "/api/tickers", json={"add": ["BBCA", "2BBCA", "bb ca"], "remove": ["TLKM"]},
        headers=AUTH,
    )  # fmt: skip
    assert response.status_code == 400
    body = response.get_json()
    assert body["invalid"] == ["2BBCA", "bb ca"]
    assert "'2BBCA'" in body["error"] and "'bb ca'" in body["error"]
    assert "nothing changed" in body["error"]
    assert fake.smembers(KEYS.desired_tickers) == {"TLKM"}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("not json", "bad request body"),
        ([], "bad request body"),
        ({}, "bad request body"),
        ({"add": ["BBCA"], "drop": ["X"]}, "bad request body"),
        ({"add": "BBCA"}, '"add" must be a list'),
        ({"remove": [1, 2]}, '"remove" must be a list'),
        ({"add": []}, "nothing to change"),
        ({"add": ["BBCA"], "remove": ["bbca"]}, "both added and removed"),
        ({"add": [f"A{i:03d}" for i in range(501)]}, "at most 500"),
    ],
)
def test_bad_bodies_are_400(client: FlaskClient, payload: object, message: str) -> None:
    if isinstance(payload, str):
        response = client.post("/api/tickers", data=payload, headers=AUTH)
    else:
        response = client.post("/api/tickers", json=payload, headers=AUTH)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_oversized_body_is_413(client: FlaskClient) -> None:
    response = client.post(
        "/api/tickers", data=b"x" * 100_000, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413 and "error" in response.get_json()


# ---------------------------------------------------------------- /api/depth


def levels_text(levels: list[tuple[int, int, int]]) -> str:
    return "|".join(f"{p};{o};{s}" for p, o, s in levels)


def test_depth_reads_the_ticker_hash(client: FlaskClient, fake: fakeredis.FakeRedis) -> None:
    fake.sadd(KEYS.desired_tickers, "BBCA")
    offers = [(8225 + 25 * i, i + 1, 100 * (i + 1)) for i in range(12)]
    bid_at, offer_at = iso(NOW - timedelta(seconds=1)), iso(NOW - timedelta(seconds=30))
    fake.hset(
        KEYS.ticker("BBCA"),
        mapping={
            "frames": 3,
            "bid_depth": levels_text([(8200, 4, 5000), (8175, 2, 250)]),
            "bid_depth_at": bid_at,
            "offer_depth": levels_text(offers),
            "offer_depth_at": offer_at,
        },
    )
    # An older book still in the stream is not what the depth shows.
    xadd(fake, KEYS.stream_for("BBCA"), book("BBCA", "BID", 1, [(8100, 1, 100)]))
    response = client.get("/api/depth/bbca")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["code"] == "BBCA"
    assert doc["bid"] == {
        "received": bid_at,
        "levels": [
            {"price": 8200, "orders": 4, "shares": 5000, "lots": 50},
            {"price": 8175, "orders": 2, "shares": 250, "lots": 2.5},
        ],
    }
    assert doc["offer"]["received"] == offer_at
    assert len(doc["offer"]["levels"]) == 10  # never more than 10, best first
    assert doc["offer"]["levels"][0]["price"] == 8225
    assert doc["offer"]["levels"][-1]["price"] == 8225 + 25 * 9


def test_depth_survives_trimmed_streams_and_shows_one_side(
    client: FlaskClient, fake: fakeredis.FakeRedis
) -> None:
    fake.hset(
        KEYS.ticker("TLKM"),
        mapping={"offer_depth": levels_text([(3300, 1, 100)]), "offer_depth_at": iso(NOW)},
    )
    assert fake.xlen(KEYS.stream_for("TLKM")) == 0  # everything written and trimmed
    doc = client.get("/api/depth/TLKM").get_json()
    assert doc["bid"] is None
    assert doc["offer"]["levels"] == [{"price": 3300, "orders": 1, "shares": 100, "lots": 1}]


def test_depth_reports_unreadable_level_text(
    client: FlaskClient, fake: fakeredis.FakeRedis
) -> None:
    fake.hset(KEYS.ticker("BBCA"), mapping={"bid_depth": "8200;x;100", "bid_depth_at": "t"})
    side = client.get("/api/depth/BBCA").get_json()["bid"]
    assert side["levels"] == [] and "bad book level" in side["error"]
    assert side["received"] == "t"


def test_depth_of_an_empty_side(client: FlaskClient, fake: fakeredis.FakeRedis) -> None:
    fake.hset(KEYS.ticker("BBCA"), mapping={"bid_depth": "", "bid_depth_at": iso(NOW)})
    assert client.get("/api/depth/BBCA").get_json()["bid"] == {
        "received": iso(NOW),
        "levels": [],
    }


def test_depth_of_a_known_ticker_without_books(
    client: FlaskClient, fake: fakeredis.FakeRedis
) -> None:
    fake.hset(KEYS.ticker("TLKM"), mapping={"frames": 3})
    assert client.get("/api/depth/TLKM").get_json() == {
        "code": "TLKM",
        "bid": None,
        "offer": None,
    }


def test_depth_refusals(client: FlaskClient) -> None:
    unknown = client.get("/api/depth/ZZZZ")
    assert unknown.status_code == 404 and "ZZZZ" in unknown.get_json()["error"]
    invalid = client.get("/api/depth/..%2F..")
    assert invalid.status_code in (400, 404)
    bad = client.get("/api/depth/B@D")
    assert bad.status_code == 400 and bad.get_json()["invalid"] == ["B@D"]


# ---------------------------------------------------------------- generic errors


def test_unknown_route_and_wrong_method_are_json(client: FlaskClient) -> None:
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and missing.get_json()["status"] == 404
    assert missing.headers["X-Frame-Options"] == "DENY"
    wrong = client.put("/api/tickers")
    assert wrong.status_code == 405 and wrong.get_json()["status"] == 405
