"""Continuity across owners is proven from custody (overlap or clean release), never assumed."""

from __future__ import annotations

from datetime import datetime, timedelta

from ingestor.continuity import (
    CRASH,
    HAND_OVER,
    RELEASED_CASE,
    RESTART,
    Custody,
    Hole,
    Judge,
    gap_records,
    holder_id,
    parse_custody,
)
from stockbit.timestamps import WIB, wib_iso

T0 = datetime(2026, 3, 2, 10, 0, 0, tzinfo=WIB)
ME = holder_id("ing-a", "r2")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def custody(*entries: Custody) -> dict[str, Custody]:
    return {c.holder: c for c in entries}


def test_the_custody_hash_reads_back_per_holder() -> None:
    fields = {
        "ing-b@r1": wib_iso(at(5)),
        "ing-b@r1:released": wib_iso(at(6)),
        "ing-c@r9": wib_iso(at(7)),
        "ing-d@r3": "not a time",
        "ing-e@r4~": wib_iso(at(8)),
    }
    parsed = parse_custody(fields)
    assert parsed["ing-e@r4"] == Custody("ing-e@r4", pending=at(8))
    assert not parsed["ing-e@r4"].judged and parsed["ing-e@r4"].covered_until == at(8)
    assert parsed["ing-b@r1"].judged
    assert parsed["ing-b@r1"] == Custody("ing-b@r1", at(5), at(6))
    assert parsed["ing-b@r1"].covered_until == at(6) and parsed["ing-b@r1"].ingestor == "ing-b"
    assert parsed["ing-c@r9"].covered_until == at(7)
    assert parsed["ing-d@r3"].covered_until is None


def test_a_ticker_nobody_stored_before_needs_no_proof() -> None:
    judge = Judge(ME)
    judge.claim("BBCA", at(0))
    verdict = judge.judge("BBCA", None, custody(Custody(ME, at(1))), ["ing-a"], at(1))
    assert verdict is not None and verdict.hole is None and not judge.claims


def test_the_verdict_waits_for_the_first_frame_stored_here() -> None:
    judge = Judge(ME)
    judge.claim("BBCA", at(0))
    held = custody(Custody("ing-b@r1", at(-1)))
    assert judge.judge("BBCA", None, held, ["ing-a"], at(100)) is None
    assert "BBCA" in judge.claims


def test_overlapping_streams_prove_continuity() -> None:
    """Make-before-break, or an R=2 partner: the other holder stored frames past ours."""
    judge = Judge(ME)
    judge.claim("BBCA", at(0))
    held = custody(Custody("ing-b@r1", at(3)))
    verdict = judge.judge("BBCA", at(1), held, ["ing-a", "ing-b"], at(4))
    assert verdict is not None and verdict.hole is None
    assert verdict.reason == "overlap with ing-b" and verdict.prune == ()


def test_a_clean_release_after_our_first_frame_proves_continuity() -> None:
    """An illiquid ticker: no frame of it in the overlap, but the old owner held it until
    after the newcomer's first frame (the subscribe snapshot) and says so."""
    judge = Judge(ME)
    judge.claim("BBCA", at(0))
    held = custody(Custody("ing-b@r1", at(-600), at(3)))
    verdict = judge.judge("BBCA", at(1), held, ["ing-a", "ing-b"], at(4))
    assert verdict is not None and verdict.hole is None
    assert verdict.reason == "clean release with ing-b" and verdict.prune == ("ing-b@r1",)


def test_a_crash_is_a_gap_from_the_last_stored_frame_after_the_patience() -> None:
    judge = Judge(ME, patience_s=20)
    judge.claim("BBCA", at(0))
    held = custody(Custody("ing-b@r1", at(-0.4)))
    # The dead owner might still be handing over: wait.
    assert judge.judge("BBCA", at(0.5), held, ["ing-a"], at(10)) is None
    verdict = judge.judge("BBCA", at(0.5), held, ["ing-a"], at(20))
    assert verdict is not None and verdict.hole is not None
    hole = verdict.hole
    assert (hole.start, hole.end, hole.case) == (at(-0.4), at(0.5), CRASH)
    assert hole.detail.startswith("crash: ing-b gone, no clean release, no overlap")
    assert verdict.prune == ("ing-b@r1",)


def test_an_earlier_run_of_this_ingestor_is_judged_at_once_as_a_restart() -> None:
    judge = Judge(ME, patience_s=20)
    judge.claim("BBCA", at(0))
    held = custody(Custody(holder_id("ing-a", "r1"), at(-3)), Custody(ME, at(2)))
    verdict = judge.judge("BBCA", at(1), held, ["ing-a"], at(1))
    assert verdict is not None and verdict.hole is not None
    assert verdict.hole.case == RESTART and verdict.hole.start == at(-3)
    assert verdict.hole.detail.startswith("restart: the previous run ended without a clean release")
    # A clean stop of the previous run still leaves the time nobody held it.
    judge.claim("TLKM", at(0))
    cleanly = custody(Custody(holder_id("ing-a", "r1"), at(-9), at(-3)))
    later = judge.judge("TLKM", at(1), cleanly, ["ing-a"], at(1))
    assert later is not None and later.hole is not None
    assert later.hole.detail.startswith("restart: the previous run released it cleanly")
    assert later.hole.start == at(-3)


def test_a_run_replaced_by_a_newer_run_of_its_id_is_known_dead() -> None:
    """ing-b was killed and restarted (its id is live again, with another run)."""
    judge = Judge(ME, patience_s=20)
    judge.claim("BBCA", at(0))
    held = custody(Custody("ing-b@r1", at(-2)), Custody("ing-b@r2", pending=at(-1)))
    runs = {"ing-b": "ing-b@r2"}
    # ing-b@r2 (alive, judging its own claim) may still prove something: wait for it ...
    assert judge.judge("BBCA", at(1), held, ["ing-a", "ing-b"], at(2), runs=runs) is None
    # ... but not for the dead run: once r2 is gone from the custody, the verdict is at once.
    del held["ing-b@r2"]
    verdict = judge.judge("BBCA", at(1), held, ["ing-a", "ing-b"], at(2), runs=runs)
    assert verdict is not None and verdict.hole is not None
    assert verdict.hole.case == CRASH and verdict.prune == ("ing-b@r1",)


def test_a_release_before_anyone_took_over_is_a_gap_without_waiting() -> None:
    judge = Judge(ME, patience_s=20)
    judge.claim("BBCA", at(0))
    held = custody(Custody("ing-b@r1", at(-5), at(-2)))
    verdict = judge.judge("BBCA", at(1), held, ["ing-a"], at(1))
    assert verdict is not None and verdict.hole is not None
    assert verdict.hole.case == RELEASED_CASE and verdict.hole.start == at(-2)


def test_a_live_holder_that_neither_overlaps_nor_releases_is_a_hand_over_gap() -> None:
    judge = Judge(ME, patience_s=20)
    judge.claim("BBCA", at(0))
    held = custody(Custody("ing-b@r1", at(-1)))
    live = ["ing-a", "ing-b"]
    assert judge.judge("BBCA", at(1), held, live, at(19)) is None
    verdict = judge.judge("BBCA", at(1), held, live, at(20))
    assert verdict is not None and verdict.hole is not None
    assert verdict.hole.case == HAND_OVER and verdict.prune == ()


def test_a_claimant_that_died_before_judging_proves_nothing_before_its_frames() -> None:
    """b took the ticker from crashed c, stored frames (pending) and died before its verdict:
    c's hole must not vanish behind b's frames, so the gap starts at c's last frame."""
    judge = Judge(ME, patience_s=0)
    judge.claim("BBCA", at(0))
    held = custody(
        Custody("ing-c@r1", at(-60)),
        Custody("ing-b@r1", pending=at(5)),  # b overlaps our first frame, unjudged
    )
    verdict = judge.judge("BBCA", at(1), held, ["ing-a"], at(6))
    assert verdict is not None and verdict.hole is not None
    assert (verdict.hole.start, verdict.hole.end) == (at(-60), at(1))
    assert verdict.hole.detail.startswith(
        "crash: ing-b took it over but ended before judging that, no proven overlap"
    )
    assert set(verdict.prune) == {"ing-c@r1", "ing-b@r1"}
    # Once judged (its value moved to the plain field), b's frames are proof again.
    judge.claim("TLKM", at(0))
    settled = custody(Custody("ing-c@r1", at(-60)), Custody("ing-b@r1", at(5), pending=at(4)))
    later = judge.judge("TLKM", at(1), settled, ["ing-a", "ing-b"], at(6))
    assert later is not None and later.hole is None


def test_the_latest_holder_decides_and_the_gap_starts_no_earlier_than_midnight() -> None:
    judge = Judge(ME, patience_s=0)
    judge.claim("BBCA", at(0))
    yesterday = T0 - timedelta(days=1)
    held = custody(Custody("ing-b@r1", yesterday), Custody("ing-c@r1", yesterday, yesterday))
    verdict = judge.judge("BBCA", at(1), held, ["ing-a"], at(1))
    assert verdict is not None and verdict.hole is not None
    assert verdict.hole.start == datetime(2026, 3, 2, tzinfo=WIB)
    assert set(verdict.prune) == {"ing-b@r1", "ing-c@r1"}


def test_holes_of_one_crash_become_one_record_per_cluster() -> None:
    detail = "crash: ing-b gone, no clean release, no overlap; covered until ..."
    holes = [
        Hole("BBCA", at(-0.4), at(0.5), CRASH, detail),
        Hole("TLKM", at(-0.2), at(0.6), CRASH, detail),
        Hole("ASII", at(-600), at(0.7), CRASH, detail),  # illiquid: its own record
        Hole("GOTO", at(-1), at(0.5), RESTART, "restart: the previous run ended ..."),
    ]
    records = gap_records(holes, "ing-a")
    assert [(r.tickers, r.start, r.end) for r in records] == [
        (("ASII",), wib_iso(at(-600)), wib_iso(at(0.7))),
        (("GOTO",), wib_iso(at(-1)), wib_iso(at(0.5))),
        (("BBCA", "TLKM"), wib_iso(at(-0.4)), wib_iso(at(0.6))),
    ]
    assert all(r.cause == "ticker_moved" and r.ingestor == "ing-a" for r in records)
    assert records[2].detail.startswith("crash: ing-b gone, no clean release, no overlap; 2 ")
    assert records[0].detail == detail
