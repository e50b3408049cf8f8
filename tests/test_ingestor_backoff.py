"""Reconnect backoff: doubling, cap, jitter range, reset after a stable connection."""

from __future__ import annotations

import random

from ingestor.backoff import Backoff


def test_delays_double_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    backoff = Backoff(base=0.5, cap=30.0, rng=random.Random(1))
    ceilings = [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    for ceiling in ceilings:
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling


def test_jitter_spreads_delays() -> None:
    delays = {round(Backoff(rng=random.Random(seed)).next_delay(), 6) for seed in range(20)}
    assert len(delays) > 10


def test_stable_connection_resets_and_short_one_does_not() -> None:
    backoff = Backoff(base=1.0, cap=30.0, stable_after=10.0, rng=random.Random(0))
    for _ in range(4):
        backoff.next_delay()
    backoff.connection_ended(lasted=3.0)
    assert backoff.next_delay() >= 8.0  # still climbing: 16 s ceiling
    backoff.connection_ended(lasted=12.0)
    assert backoff.next_delay() <= 1.0


def test_huge_attempt_counts_do_not_overflow() -> None:
    backoff = Backoff(rng=random.Random(0))
    backoff.attempt = 10_000
    assert backoff.next_delay() <= 30.0
