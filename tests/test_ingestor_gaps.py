"""Gap bookkeeping: outages and overflow episodes become gap records."""

from __future__ import annotations

from ingestor.gaps import AUTH_FAILED, DISCONNECT, OVERFLOW, Outage, Overflow


def test_outage_opens_once_and_closes_with_the_first_data() -> None:
    outage = Outage("ing-1")
    assert outage.end("t0") is None
    assert outage.begin(DISCONNECT, "t1", ("BBCA",), "code 1006") is None
    # A second failure while down keeps the original start and adds tickers/detail.
    assert outage.begin(DISCONNECT, "t2", ("TLKM",), "refused") is None
    record = outage.end("t3")
    assert record is not None
    assert (record.start, record.end, record.cause) == ("t1", "t3", DISCONNECT)
    assert record.tickers == ("BBCA", "TLKM")
    assert record.ingestor == "ing-1"
    assert "code 1006" in record.detail and "refused" in record.detail
    assert not outage.open


def test_auth_failure_splits_the_running_gap() -> None:
    outage = Outage("ing-1")
    outage.begin(DISCONNECT, "t1", ("BBCA",))
    closed = outage.begin(AUTH_FAILED, "t2", ("BBCA",), "401")
    assert closed is not None and closed.cause == DISCONNECT and closed.end == "t2"
    # Repeated auth failures stay in the one auth gap.
    assert outage.begin(AUTH_FAILED, "t3", ("BBCA",)) is None
    record = outage.end("t4")
    assert record is not None and (record.cause, record.start, record.end) == (
        AUTH_FAILED,
        "t2",
        "t4",
    )


def test_overflow_episode_spans_first_to_last_drop() -> None:
    overflow = Overflow("ing-1")
    assert overflow.end() is None
    overflow.drop("TLKM", "t1")
    overflow.drop("BBCA", "t2")
    overflow.drop("TLKM", "t3")
    record = overflow.end()
    assert record is not None
    assert (record.start, record.end, record.cause) == ("t1", "t3", OVERFLOW)
    assert record.tickers == ("BBCA", "TLKM")
    assert "3 frame(s) dropped" in record.detail
    assert not overflow.open and overflow.end() is None
