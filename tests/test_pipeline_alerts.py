"""The alert state machine: one start and one clear per condition, reminders only for critical ones, a rate limit that never loses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.alerts import (
    CLEAR,
    CRITICAL,
    DIGEST,
    EVENT,
    REMINDER,
    START,
    WARNING,
    Active,
    Alert,
    Alerter,
    AlertError,
    Condition,
    check_condition_id,
    duration,
    scrub_patterns,
)

T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # 10:00 WIB
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJkYXRhIjp7InVpZCI6MX19.c2lnbmF0dXJlLXNlY3JldA"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def crit(cid: str = "auth_failed", detail: str = "") -> Condition:
    return Condition(cid, CRITICAL, f"{cid} title", detail)


def warn(cid: str = "writer_lag:w1") -> Condition:
    return Condition(cid, WARNING, f"{cid} title")


def kinds(alerts: list[Alert]) -> list[tuple[str, str]]:
    return [(a.kind, a.condition) for a in alerts]


def test_one_start_and_one_clear_nothing_in_between() -> None:
    alerter = Alerter(repeat_s=0)
    first = alerter.update(at(0), [crit()])
    assert kinds(first.created) == [(START, "auth_failed")] == kinds(first.deliver)
    assert first.changed
    for second in range(5, 600, 5):  # the same condition, seen every 5 s: no repeats
        assert alerter.update(at(second), [crit()]).created == []
    cleared = alerter.update(at(600), [])
    assert kinds(cleared.deliver) == [(CLEAR, "auth_failed")]
    alert = cleared.deliver[0]
    assert alert.started_at == at(0) and alert.cleared_at == at(600)
    assert alert.subject == "obpipe RESOLVED: auth_failed title"
    assert (
        "Resolved after 10m 0s (2026-03-02 10:00:00 WIB to 2026-03-02 10:10:00 WIB)." in alert.body
    )
    assert alerter.update(at(605), []).created == []  # cleared once


def test_dedup_by_id_and_a_changed_detail_is_not_a_new_alert() -> None:
    alerter = Alerter(repeat_s=0)
    update = alerter.update(at(0), [crit(detail="a"), crit(detail="a")])
    assert kinds(update.created) == [(START, "auth_failed")]
    later = alerter.update(at(5), [crit(detail="b")])
    assert later.created == [] and later.changed
    assert alerter.active["auth_failed"].condition.detail == "b"
    assert alerter.update(at(10), []).deliver[0].detail == "b"  # the clear carries the last facts


def test_reminders_only_for_critical_every_repeat_s() -> None:
    alerter = Alerter(repeat_s=30 * 60, max_per_window=100)
    alerter.update(at(0), [crit(), warn()])
    sent: list[Alert] = []
    for minute in range(1, 95):
        sent += alerter.update(at(minute * 60), [crit(), warn()]).deliver
    assert kinds(sent) == [(REMINDER, "auth_failed")] * 3  # at 30, 60 and 90 minutes
    assert [a.at for a in sent] == [at(1800), at(3600), at(5400)]
    assert sent[0].subject == "obpipe CRITICAL (still): auth_failed title"
    assert "Still active after 30m 0s" in sent[0].body
    assert alerter.active["auth_failed"].reminders == 3


def test_no_reminders_when_repeat_is_zero() -> None:
    alerter = Alerter(repeat_s=0)
    alerter.update(at(0), [crit()])
    assert alerter.update(at(86_400), [crit()]).created == []


def test_rate_limit_holds_then_folds_excess_into_one_digest_losing_nothing() -> None:
    alerter = Alerter(repeat_s=0, max_per_window=3, window_s=60)
    burst = [crit(f"gone:ingestor:i{n}") for n in range(10)]
    first = alerter.update(at(0), burst)
    assert len(first.created) == 10
    # Two alone, then one digest naming the other eight: three notifications in the window.
    assert [a.kind for a in first.deliver] == [START, START, DIGEST]
    digest = first.deliver[-1]
    assert len(digest.items) == 8 and [a.key for a in first.coalesced] == [
        a.key for a in digest.items
    ]
    assert digest.severity == CRITICAL
    assert digest.body.startswith("8 alerts were held back by the rate limit:")
    assert all(item.condition in digest.body for item in digest.items)
    assert alerter.held == 0

    # The window is full: new alerts are held (not dropped), then sent when it frees up.
    cleared = alerter.update(at(10), burst[1:])
    assert kinds(cleared.created) == [(CLEAR, "gone:ingestor:i0")]
    assert cleared.deliver == [] and [a.key for a in cleared.held] == [cleared.created[0].key]
    assert alerter.update(at(30), burst[1:]).deliver == []
    later = alerter.flush(at(61))
    assert kinds(later.deliver) == [(CLEAR, "gone:ingestor:i0")]
    # Every alert made was either delivered alone or named in a digest.
    delivered = {a.key for a in first.deliver + later.deliver} | {a.key for a in digest.items}
    assert {a.key for a in first.created + cleared.created} <= delivered


def test_sliding_window_counts_each_notification_once() -> None:
    alerter = Alerter(repeat_s=0, max_per_window=2, window_s=60)
    assert len(alerter.update(at(0), [warn("a")]).deliver) == 1
    assert len(alerter.update(at(30), [warn("a"), warn("b")]).deliver) == 1
    held = alerter.update(at(40), [warn("a"), warn("b"), warn("c")])
    assert held.deliver == [] and len(held.held) == 1
    assert kinds(alerter.flush(at(60)).deliver) == [(START, "c")]  # the 0 s one left the window


def test_events_are_said_once_and_have_no_state() -> None:
    alerter = Alerter(repeat_s=60)
    update = alerter.update(at(0), [], events=[warn("gap:1-0")])
    assert kinds(update.deliver) == [(EVENT, "gap:1-0")]
    assert alerter.active == {}
    assert alerter.update(at(120), []).created == []


def test_clear_note_and_restore_from_persisted_state() -> None:
    alerter = Alerter(repeat_s=1800, tag="ab")
    alerter.update(at(0), [crit("gone:writer:w-1")])
    saved = {cid: state.to_json() for cid, state in alerter.active.items()}
    # Another monitor takes over: no second start alert, the reminder clock carries on.
    other = Alerter(repeat_s=1800, tag="cd")
    other.restore(Active.from_json(cid, text) for cid, text in saved.items())
    assert other.update(at(60), [crit("gone:writer:w-1")]).created == []
    assert kinds(other.update(at(1800), [crit("gone:writer:w-1")]).created) == [
        (REMINDER, "gone:writer:w-1")
    ]
    done = other.update(at(1900), [], notes={"gone:writer:w-1": "Replaced by writer w-2."})
    assert done.deliver[0].body.endswith("Replaced by writer w-2.")
    assert done.deliver[0].key.split("-", 1)[1].startswith("cd")


def test_texts_are_scrubbed_and_clipped() -> None:
    alerter = Alerter(repeat_s=0, scrub=lambda text: text.replace("wskey-123456", "<hidden>"))
    condition = Condition(
        "token_expiry",
        CRITICAL,
        f"token {JWT}",
        "key wskey-123456 url json://user:pa55word@host/x Authorization: Bearer abc.def "
        + "x" * 2000,
    )
    alert = alerter.update(at(0), [condition]).deliver[0]
    text = alert.subject + alert.body + str(alert.fields())
    for secret in (JWT, "wskey-123456", "pa55word", "abc.def"):
        assert secret not in text
    assert len(alert.detail) <= 1000 and alert.detail.endswith("…")


def test_scrub_patterns() -> None:
    assert scrub_patterns(f"a {JWT} b") == "a <hidden> b"
    assert scrub_patterns("mailto://me:secretpw@example.com") == "mailto://me:<hidden>@example.com"
    assert (
        scrub_patterns("no secrets here: 10:01:02, ratio 1.2.3")
        == "no secrets here: 10:01:02, ratio 1.2.3"
    )


def test_condition_validation() -> None:
    assert check_condition_id("gone:ingestor:host-12") == "gone:ingestor:host-12"
    for bad in ("", "Upper", "has space", "x" * 200, ":lead"):
        with pytest.raises(AlertError):
            check_condition_id(bad)
    with pytest.raises(AlertError):
        Condition("x", "fatal", "t")
    with pytest.raises(AlertError):
        Condition("x", WARNING, " ")
    with pytest.raises(ValueError):
        Alerter(repeat_s=0, max_per_window=0)


def test_duration() -> None:
    assert [duration(s) for s in (0, 45, 725, 11_040, 190_000)] == [
        "0s",
        "45s",
        "12m 5s",
        "3h 4m",
        "2d 4h",
    ]


def test_key_like_runs_are_hidden_but_words_and_numbers_stay() -> None:
    key = "q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6J7k8L9z0X1c="
    assert scrub_patterns(f"key {key} end") == "key <hidden> end"
    plain = "a" * 40 + " " + "1" * 40 + " 1709350000000-0"
    assert scrub_patterns(plain) == plain
