"""Rates from cumulative counters and the sparkline history (pure, injected time)."""

from __future__ import annotations

import pytest

from web.rates import RateTracker


def test_first_sample_has_no_rate_then_rates_follow() -> None:
    tracker = RateTracker(min_spacing_s=1.0, rate_window_s=5.0)
    assert tracker.observe(100.0, {"frames": 0}) == {}
    assert tracker.observe(102.0, {"frames": 20}) == {"frames": pytest.approx(10.0)}
    # With a sample 5 s older available, the rate is measured over that window.
    tracker.observe(104.0, {"frames": 40})
    rates = tracker.observe(106.0, {"frames": 100})
    assert rates["frames"] == pytest.approx((100 - 0) / 6)  # base: the newest ≥ 5 s old (100)


def test_counter_reset_and_new_counters_have_no_rate() -> None:
    tracker = RateTracker()
    tracker.observe(0.0, {"a": 500})
    rates = tracker.observe(2.0, {"a": 10, "b": 7})
    assert rates == {}


def test_close_samples_are_not_stored_but_answered() -> None:
    tracker = RateTracker(min_spacing_s=1.0)
    tracker.observe(0.0, {"a": 0})
    tracker.observe(0.5, {"a": 5})  # not stored
    assert tracker.observe(2.0, {"a": 20}) == {"a": pytest.approx(10.0)}
    assert [t for t, _ in tracker.history("a", 60, 2.0)] == [2.0]


def test_history_window_step_and_resets() -> None:
    tracker = RateTracker(min_spacing_s=1.0, keep_s=600)
    values = [0, 10, 30, 30, 5, 25]  # a restart between 30 and 5
    for i, value in enumerate(values):
        tracker.observe(float(i * 2), {"f": value})
    points = tracker.history("f", window_s=600, at=10.0)
    assert points == [(2.0, 5.0), (4.0, 10.0), (6.0, 0.0), (8.0, 0.0), (10.0, 10.0)]
    assert tracker.history("f", window_s=4, at=10.0) == [(8.0, 0.0), (10.0, 10.0)]
    stepped = tracker.history("f", window_s=600, at=10.0, step_s=4.0)
    assert stepped == [(4.0, 7.5), (8.0, 0.0)]


def test_old_samples_are_dropped() -> None:
    tracker = RateTracker(keep_s=10)
    for i in range(30):
        tracker.observe(float(i), {"f": i})
    assert len(tracker.history("f", window_s=1000, at=29.0)) <= 10
