"""Which tickers an ingestor streams, and how it proves continuity when it takes one: crash and restart gaps, overlap, hand-over."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis

from ingestor.entries import EntryPacker
from ingestor.roster import Plan, Roster
from ingestor.sink import Sink
from pipeline.keys import Keys
from pipeline.membership import assign, owners
from pipeline.records import GapRecord
from pipeline.status import IngestorStatus
from stockbit import wrapper
from stockbit.book import Level, format_body
from stockbit.messages import OrderBook
from stockbit.timestamps import wib_iso

TICKERS = [f"T{i:03d}" for i in range(60)]


def test_alone_at_start_it_takes_everything_and_judges_all_of_it() -> None:
    plan = Plan("a")
    changes = plan.update(TICKERS, {}, now=100.0)
    assert changes.changed and plan.tickers == tuple(sorted(TICKERS))
    # A (re)start knows nothing of the past: every ticker is claimed, custody decides.
    assert changes.acquired == tuple(sorted(TICKERS))


def test_tickers_spread_as_membership_assigns() -> None:
    members = {"a": 100.0, "b": 100.0, "c": 100.0}
    table = assign(TICKERS, sorted(members))
    for me in members:
        plan = Plan(me)
        plan.update(TICKERS, members, now=100.0)
        assert plan.tickers == tuple(sorted(table[me]))
    assert all(10 <= len(v) <= 30 for v in table.values())


def test_a_dead_members_tickers_are_claimed_when_it_counts_dead() -> None:
    plan = Plan("a", live_after=3.0)
    plan.update(TICKERS, {"a": 100.0, "b": 100.0}, now=100.0)
    mine_before = set(plan.tickers)
    # b stops beating at 100.5; at 104 it counts as dead. Its heartbeat proves nothing either
    # way: the takeover is only a claim, judged from what was stored.
    assert not plan.update(TICKERS, {"a": 103.5, "b": 100.5}, now=103.5).acquired
    changes = plan.update(TICKERS, {"a": 104.0, "b": 100.5}, now=104.0)
    assert changes.changed and set(plan.tickers) == set(TICKERS)
    assert set(changes.acquired) == set(TICKERS) - mine_before


def test_a_hand_over_waits_for_proof_that_the_newcomer_stores_the_ticker() -> None:
    plan = Plan("a", handover=2.0, handover_max=10.0)
    plan.update(TICKERS, {"a": 100.0}, now=100.0)
    theirs = set(assign(TICKERS, ["a", "b"])["b"])
    changes = plan.update(TICKERS, {"a": 101.0, "b": 101.0}, now=101.0)
    assert not changes.changed and set(plan.releasing) == theirs
    assert all(since == 101.0 for since in plan.releasing.values())
    # The newcomer stored some of them; the minimum hold is over: those go, the rest stay.
    proven = set(sorted(theirs)[:3])
    changes = plan.update(TICKERS, {"a": 103.5, "b": 103.5}, now=103.5, handed=proven)
    assert changes.changed and set(changes.handed_over) == proven
    assert set(plan.releasing) == theirs - proven and not changes.unwanted
    # Without proof, at most handover_max.
    changes = plan.update(TICKERS, {"a": 110.9, "b": 110.9}, now=110.9)
    assert not changes.changed
    changes = plan.update(TICKERS, {"a": 111.0, "b": 111.0}, now=111.0)
    assert set(changes.handed_over) == theirs - proven
    assert set(plan.tickers) == set(assign(TICKERS, ["a", "b"])["a"])


def test_a_newcomer_claims_its_share_of_tickers_live_members_hold() -> None:
    plan = Plan("b")
    changes = plan.update(TICKERS, {"a": 100.0, "b": 100.0}, now=100.0)
    assert set(changes.acquired) == set(assign(TICKERS, ["a", "b"])["b"])


def test_replication_two_keeps_every_ticker_on_two() -> None:
    members = {"a": 100.0, "b": 100.0, "c": 100.0}
    plans = {m: Plan(m, replicas=2) for m in members}
    for plan in plans.values():
        plan.update(TICKERS, members, now=100.0)
    for ticker in TICKERS:
        assert sum(ticker in p.tickers for p in plans.values()) == 2
    later = {"a": 105.0, "b": 105.0, "c": 100.0}
    for name in ("a", "b"):
        changes = plans[name].update(TICKERS, later, now=105.0)
        # c's tickers are claimed; the surviving replica's custody will prove continuity.
        assert set(changes.acquired) <= set(assign(TICKERS, sorted(members), 2)["c"])
    assert set(plans["a"].tickers) == set(plans["b"].tickers) == set(TICKERS)


def test_each_ticker_has_one_primary_and_a_replica_takes_over_when_it_dies() -> None:
    members = {"a": 100.0, "b": 100.0, "c": 100.0}
    plans = {m: Plan(m, replicas=2, live_after=3.0) for m in members}
    for plan in plans.values():
        plan.update(TICKERS, members, now=100.0)
        assert plan.primary <= set(plan.tickers)
    for ticker in TICKERS:
        primaries = [m for m, p in plans.items() if ticker in p.primary]
        assert primaries == [owners(ticker, sorted(members), 2)[0]]
    # c stops beating at 100; a and b notice at the first heartbeat that counts it dead.
    c_primary = plans["c"].primary
    assert c_primary
    still = {"a": 103.0, "b": 103.0, "c": 100.0}
    for name in ("a", "b"):
        plans[name].update(TICKERS, still, now=103.0)
    assert not c_primary & (plans["a"].primary | plans["b"].primary)  # c still counted live
    later = {"a": 103.5, "b": 103.5, "c": 100.0}
    for name in ("a", "b"):
        plans[name].update(TICKERS, later, now=103.5)
    assert plans["a"].primary | plans["b"].primary == set(TICKERS)
    assert not plans["a"].primary & plans["b"].primary


def test_alone_or_without_replication_every_ticker_is_primary() -> None:
    plan = Plan("a")
    plan.update(TICKERS, {"a": 1.0, "b": 1.0}, now=1.0)
    assert plan.primary == set(assign(TICKERS, ["a", "b"])["a"]) == set(plan.tickers)
    alone = Plan("a", replicas=2)
    alone.update(TICKERS, {}, now=1.0)
    assert alone.primary == set(TICKERS)


def test_removed_tickers_go_at_once_and_added_ones_are_not_claimed() -> None:
    plan = Plan("a")
    plan.update(["BBCA", "TLKM"], {"a": 1.0}, now=1.0)
    changes = plan.update(["BBCA", "ASII"], {"a": 1.5}, now=1.5)
    assert changes.changed and plan.tickers == ("ASII", "BBCA")
    assert changes.acquired == () and changes.unwanted == ("TLKM",)


def _status() -> IngestorStatus:
    return IngestorStatus(id="a", state="connected")


def test_roster_heartbeat_seed_and_leave() -> None:
    async def scenario() -> None:
        client: Any = fakeredis.FakeAsyncRedis()
        keys = Keys()
        gaps: list[GapRecord] = []
        primaries: list[frozenset[str]] = []
        roster = Roster(
            client,
            keys,
            "a",
            replicas=1,
            heartbeat_s=0.2,
            status_ttl_s=5,
            status=_status,
            on_gap=gaps.append,
            on_primary=primaries.append,
        )
        await roster.seed(("BBCA", "TLKM"))
        await client.sadd(keys.desired_tickers, "bad code!")
        await roster.seed(("ASII",))  # not empty any more: left alone
        await roster.beat()
        assert list(roster.tickers) == ["BBCA", "TLKM"] and roster.version == 1
        assert json.loads(await client.get(keys.ingestor("a")))["state"] == "connected"
        assert 0 < await client.pttl(keys.ingestor("a")) <= 5000
        assert await client.zscore(keys.ingestors, "a") is not None
        waiter = asyncio.create_task(roster.wait_change(1))
        await client.sadd(keys.desired_tickers, "ASII")
        await roster.beat()
        assert await asyncio.wait_for(waiter, 1) == 2
        assert list(roster.tickers) == ["ASII", "BBCA", "TLKM"]
        # Told once per change of the primary set (alone, it is primary for everything).
        assert primaries == [{"BBCA", "TLKM"}, {"ASII", "BBCA", "TLKM"}]
        await roster.beat()
        assert len(primaries) == 2
        await roster.leave(IngestorStatus(id="a", state="stopped"))
        assert await client.zscore(keys.ingestors, "a") is None
        assert json.loads(await client.get(keys.ingestor("a")))["state"] == "stopped"
        assert gaps == []

    asyncio.run(scenario())


PACKER = EntryPacker(Keys(), "a", 1000)


def book_frame(code: str) -> bytes:
    body = format_body(code, "BID", (Level(8200, 3, 12_300),))
    book = OrderBook(code, body, 7, 1, None, 1, None)
    return wrapper.encode_orderbook(book, time_text="2026-03-02T10:15:30.000007+07:00")


def iso(seconds_ago: float = 0.0) -> str:
    return wib_iso(datetime.now(UTC) - timedelta(seconds=seconds_ago))


def stored(sink: Sink, codes: list[str], received: str) -> None:
    """As if the sink had just had a batch with these tickers' first frames acknowledged."""
    batch = [PACKER.book(book_frame(code), received.encode()) for code in codes]
    sink._note_first([e for e in batch if e is not None])


def custodial(client: Any, gaps: list[GapRecord], holder: str = "a@r2") -> tuple[Roster, Sink]:
    """Ingestor "a" (this run: ``holder``) with a sink that records custody."""
    keys = Keys()
    sink = Sink(
        client,
        keys,
        "a",
        redis_url="redis://unused",
        buffer_max=10,
        stream_maxlen=10,
        holder=holder,
    )
    roster = Roster(
        client,
        keys,
        "a",
        replicas=1,
        heartbeat_s=0.1,
        status_ttl_s=5,
        status=_status,
        on_gap=gaps.append,
        sink=sink,
    )
    return roster, sink


def test_a_crashed_peer_leaves_a_gap_from_its_last_stored_frame_to_our_first() -> None:
    async def scenario() -> None:
        client: Any = fakeredis.FakeAsyncRedis()
        keys = Keys()
        gaps: list[GapRecord] = []
        roster, sink = custodial(client, gaps)
        assert roster.judge is not None
        roster.judge.patience_s = 0.0
        codes = TICKERS[:20]
        theirs = assign(codes, ["a", "b"])["b"]
        await client.sadd(keys.desired_tickers, *codes)
        await client.zadd(keys.ingestors, {"b": time.time() * 1000})
        await roster.beat()  # a's share is claimed ...
        await roster.beat()  # ... and needs no proof: nobody stored it before
        assert set(roster.tickers) == set(codes) - set(theirs) and gaps == []
        last = iso(1.0)
        for code in theirs:
            await client.hset(keys.custody(code), "b@r1", last)
        await client.zadd(keys.ingestors, {"b": 1})  # b's heartbeat is ancient: it died
        await roster.beat()
        assert set(roster.tickers) == set(codes) and set(roster.judge.claims) == set(theirs)
        first = iso()
        stored(sink, theirs, first)
        await roster.beat()
        (gap,) = gaps
        assert gap.cause == "ticker_moved" and set(gap.tickers) == set(theirs)
        assert (gap.start, gap.end, gap.ingestor) == (last, first, "a")
        assert gap.detail.startswith("crash: b gone, no clean release, no overlap")
        # Until the gap is stored our custody of those is pending and b's evidence stays ...
        assert await client.hexists(keys.custody(theirs[0]), "b@r1")
        sink._gaps.clear()  # (as the running sink does once it wrote the gap record)
        await sink._write_custody()
        # ... then b's fields are pruned and ours count as proof for the next owner.
        for code in theirs:
            assert not await client.hexists(keys.custody(code), "b@r1")

    asyncio.run(scenario())


def test_a_restart_judges_against_its_own_previous_run_without_waiting() -> None:
    async def scenario() -> None:
        client: Any = fakeredis.FakeAsyncRedis()
        keys = Keys()
        gaps: list[GapRecord] = []
        roster, sink = custodial(client, gaps)
        await client.sadd(keys.desired_tickers, "BBCA", "TLKM")
        last = iso(2.0)
        await client.hset(keys.custody("BBCA"), "a@r1", last)  # killed: no release
        await client.hset(keys.custody("TLKM"), mapping={"a@r1": iso(9), "a@r1:released": last})
        await roster.beat()
        assert roster.judge is not None and set(roster.judge.claims) == {"BBCA", "TLKM"}
        first = iso()
        stored(sink, ["BBCA", "TLKM"], first)
        await roster.beat()
        assert sorted((g.tickers, g.start, g.end) for g in gaps) == [
            (("BBCA",), last, first),
            (("TLKM",), last, first),
        ]
        details = sorted(g.detail for g in gaps)
        assert details[0].startswith("restart: the previous run ended without a clean release")
        assert details[1].startswith("restart: the previous run released it cleanly")
        assert roster.releasable() == ("BBCA", "TLKM")

    asyncio.run(scenario())


def test_overlap_with_a_live_holder_records_nothing() -> None:
    async def scenario() -> None:
        client: Any = fakeredis.FakeAsyncRedis()
        keys = Keys()
        gaps: list[GapRecord] = []
        roster, sink = custodial(client, gaps)
        await client.sadd(keys.desired_tickers, "BBCA")
        await client.hset(keys.custody("BBCA"), "b@r1", iso(30))
        await roster.beat()
        first = iso()
        stored(sink, ["BBCA"], first)
        await roster.beat()  # b may still hand over: wait (patience)
        assert roster.judge is not None and "BBCA" in roster.judge.claims
        await client.hset(keys.custody("BBCA"), "b@r1", iso())  # b stored past our first
        await roster.beat()
        assert gaps == [] and not roster.judge.claims

    asyncio.run(scenario())


def test_a_clean_stop_judges_open_claims_at_once() -> None:
    async def scenario() -> None:
        client: Any = fakeredis.FakeAsyncRedis()
        keys = Keys()
        gaps: list[GapRecord] = []
        roster, sink = custodial(client, gaps)
        await client.sadd(keys.desired_tickers, "BBCA", "TLKM")
        last = iso(5)
        await client.hset(keys.custody("BBCA"), "b@r1", last)  # b might still hand it over
        await roster.beat()
        first = iso()
        stored(sink, ["BBCA"], first)  # TLKM: nothing stored here, nothing to judge
        await roster.beat()
        assert roster.judge is not None and "BBCA" in roster.judge.claims
        await roster.conclude()
        ((gap_tickers, start, end),) = [(g.tickers, g.start, g.end) for g in gaps]
        assert (gap_tickers, start, end) == (("BBCA",), last, first)
        assert not roster.judge.claims and roster.releasable() == ("BBCA", "TLKM")

    asyncio.run(scenario())


def test_a_hand_over_goes_once_the_newcomer_stores_and_is_released_cleanly() -> None:
    async def scenario() -> None:
        client: Any = fakeredis.FakeAsyncRedis()
        keys = Keys()
        gaps: list[GapRecord] = []
        roster, sink = custodial(client, gaps)
        roster.plan.handover = 0.0
        codes = TICKERS[:10]
        theirs = assign(codes, ["a", "b"])["b"]
        await client.sadd(keys.desired_tickers, *codes)
        await roster.beat()
        assert set(roster.tickers) == set(codes)
        await client.zadd(keys.ingestors, {"b": time.time() * 1000})
        await roster.beat()
        assert set(roster.plan.releasing) == set(theirs) and set(roster.tickers) == set(codes)
        await roster.beat()  # no frame of theirs stored by b yet: kept
        assert set(roster.tickers) == set(codes)
        for code in theirs:
            await client.hset(keys.custody(code), "b@r7", iso())
        await roster.beat()
        assert set(roster.tickers) == set(codes) - set(theirs)
        await sink._write_custody()  # what the running sink does once earlier entries are in
        for code in theirs:
            assert await client.hget(keys.custody(code), "a@r2:released") is not None
        assert gaps == []

    asyncio.run(scenario())


def test_a_ticker_removed_from_the_desired_set_loses_its_custody() -> None:
    async def scenario() -> None:
        client: Any = fakeredis.FakeAsyncRedis()
        keys = Keys()
        roster, _ = custodial(client, [])
        await client.sadd(keys.desired_tickers, "BBCA", "TLKM")
        await roster.beat()
        await client.hset(keys.custody("TLKM"), "a@r2", iso())
        await client.srem(keys.desired_tickers, "TLKM")
        await roster.beat()
        assert roster.tickers == ("BBCA",) and not await client.exists(keys.custody("TLKM"))

    asyncio.run(scenario())


def test_roster_hands_the_primary_tickers_to_the_sink_and_takes_over_from_a_dead_peer() -> None:
    async def scenario() -> None:
        client: Any = fakeredis.FakeAsyncRedis()
        keys = Keys()
        sink = Sink(client, keys, "a", redis_url="redis://unused", buffer_max=10, stream_maxlen=10)
        roster = Roster(
            client,
            keys,
            "a",
            replicas=2,
            heartbeat_s=0.1,
            status_ttl_s=5,
            status=_status,
            on_gap=lambda _: None,
            on_primary=sink.set_primary,
        )
        assert sink.primary is None  # until the first heartbeat: every ticker
        await client.sadd(keys.desired_tickers, *TICKERS[:20])
        await client.zadd(keys.ingestors, {"b": time.time() * 1000})
        await roster.beat()
        expected = {t for t in TICKERS[:20] if owners(t, ["a", "b"], 2)[0] == "a"}
        assert sink.primary == expected and 0 < len(expected) < 20
        assert len(roster.tickers) == 20  # R = 2: a replica of all the others
        await client.zadd(keys.ingestors, {"b": 1})  # b's heartbeat is now ancient
        await roster.beat()
        assert sink.primary == set(TICKERS[:20])

    asyncio.run(scenario())
