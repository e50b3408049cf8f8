"""The page, /api/status, /api/alerts and /metrics show alerts with their delivery state, and never an alert URL."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from pipeline.alerts import CRITICAL, WARNING, Alert, Alerter, Condition
from pipeline.secret import Secret
from tests.conftest import Clock
from tests.test_web_api import KEYS, NOW, make_app

ALERT_URL = "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/987654321"


def record(r: fakeredis.FakeRedis, alert: Alert, state: dict[str, Any]) -> None:
    """Store an alert as the monitor does: a stream entry and its delivery state."""
    fields: dict[Any, Any] = alert.fields()
    r.xadd(KEYS.alerts, fields)
    r.hset(KEYS.alerts_delivery, alert.key, json.dumps(state))


def seed(r: fakeredis.FakeRedis) -> list[Alert]:
    alerter = Alerter(repeat_s=0)
    disk = Condition("disk_error:wr-1", CRITICAL, "Writer wr-1 cannot write to disk", "ENOSPC")
    lag = Condition("writer_lag:wr-1", WARNING, "Writer wr-1 lags more than 30 s")
    first = alerter.update(NOW - timedelta(minutes=10), [disk, lag]).deliver
    cleared = alerter.update(NOW - timedelta(minutes=2), [disk]).deliver
    record(r, first[0], {"state": "sent", "attempts": 1, "sent_to": ["#1 Telegram"]})
    record(r, first[1], {"state": "failed", "attempts": 3, "failed_to": ["#1 Telegram"]})
    record(r, cleared[0], {"state": "pending", "attempts": 0})
    r.hset(KEYS.alerts_active, mapping={cid: s.to_json() for cid, s in alerter.active.items()})
    r.hset(KEYS.counters, mapping={"alerts_sent": 4, "alerts_failed": 3})
    monitor = {
        "id": "jobs-host-7/ab12cd",
        "since": (NOW - timedelta(hours=1)).isoformat(),
        "updated_at": NOW.isoformat(),
        "destinations": 1,
        "services": ["Telegram"],
        "held": 0,
        "backlog": 1,
    }
    r.set(KEYS.alerts_monitor, json.dumps(monitor))
    return [*first, *cleared]


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def client(fake: fakeredis.FakeRedis, clock: Clock, data_dir: Path) -> FlaskClient:
    app = make_app(fake, clock, data_dir, alert_urls=(Secret(ALERT_URL),))
    return app.test_client()


def test_status_carries_active_and_recent_alerts(
    client: FlaskClient, fake: fakeredis.FakeRedis
) -> None:
    made = seed(fake)
    alerts = client.get("/api/status").get_json()["alerts"]
    assert alerts["monitor"]["id"] == "jobs-host-7/ab12cd"
    assert alerts["monitor"]["destinations"] == 1 and alerts["monitor"]["services"] == ["Telegram"]
    assert alerts["sent"] == 4 and alerts["failed"] == 3
    assert alerts["active"] == [
        {
            "id": "disk_error:wr-1",
            "severity": "critical",
            "title": "Writer wr-1 cannot write to disk",
            "detail": "ENOSPC",
            "since": (NOW - timedelta(minutes=10)).isoformat(),
            "for_s": 600.0,
        }
    ]
    recent = alerts["recent"]
    assert [(a["kind"], a["condition"]) for a in recent] == [
        ("clear", "writer_lag:wr-1"),
        ("start", "writer_lag:wr-1"),
        ("start", "disk_error:wr-1"),
    ]
    newest = recent[0]
    assert newest["key"] == made[2].key
    assert newest["subject"] == "obpipe RESOLVED: Writer wr-1 lags more than 30 s"
    assert newest["started_at"] == (NOW - timedelta(minutes=10)).isoformat()
    assert newest["cleared_at"] == (NOW - timedelta(minutes=2)).isoformat()
    assert [a["delivery"]["state"] for a in recent] == ["pending", "failed", "sent"]
    assert recent[1]["delivery"]["failed_to"] == ["#1 Telegram"]


def test_api_alerts_limit(client: FlaskClient, fake: fakeredis.FakeRedis) -> None:
    seed(fake)
    doc = client.get("/api/alerts?limit=1").get_json()
    assert len(doc["recent"]) == 1 and len(doc["active"]) == 1
    assert len(client.get("/api/alerts").get_json()["recent"]) == 3
    for bad in ("0", "201", "x", "-1", "²"):
        answer = client.get(f"/api/alerts?limit={bad}")
        assert answer.status_code == 400
        assert "limit must be a whole number" in answer.get_json()["error"]


def test_no_monitor_and_no_alerts(client: FlaskClient, fake: fakeredis.FakeRedis) -> None:
    fake.xadd(KEYS.alerts, {"key": "1-1", "kind": "start", "title": "orphan"})
    alerts = client.get("/api/status").get_json()["alerts"]
    assert alerts["monitor"] is None and alerts["active"] == []
    assert alerts["recent"][0]["delivery"] == {"state": "unknown"}
    assert alerts["sent"] == 0 and alerts["failed"] == 0


def test_page_has_the_alerts_section(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    assert 'id="h-alerts"' in html and 'id="alerts-active"' in html and 'id="alerts"' in html
    script = client.get("/static/app.js").get_data(as_text=True)
    assert "renderAlerts" in script and "no ALERT_URLS" in script


def test_metrics_count_sent_and_failed(client: FlaskClient, fake: fakeredis.FakeRedis) -> None:
    seed(fake)
    text = client.get("/metrics").get_data(as_text=True)
    assert "obpipe_alerts_sent_total 4.0" in text
    assert "obpipe_alerts_failed_total 3.0" in text


def test_alert_urls_never_appear(client: FlaskClient, fake: fakeredis.FakeRedis) -> None:
    seed(fake)
    pieces = [ALERT_URL, "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"]
    for path in ("/", "/api/status", "/api/alerts", "/metrics", "/static/app.js"):
        body = client.get(path).get_data(as_text=True)
        assert not [p for p in pieces if p in body], path
