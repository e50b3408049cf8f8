"""Which tickers an ingestor streams: the assignment plan (pure) and the heartbeat (fakeredis)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import fakeredis

from ingestor.roster import Plan, Roster
from ingestor.sink import Sink
from pipeline.keys import Keys
from pipeline.membership import assign, owners
from pipeline.records import GapRecord
from pipeline.status import IngestorStatus

TICKERS = [f"T{i:03d}" for i in range(60)]


def test_alone_it_takes_everything_without_gaps() -> None:
    plan = Plan("a")
    changed, moves = plan.update(TICKERS, {}, now=100.0)
    assert changed and moves == []
    assert plan.tickers == tuple(sorted(TICKERS))


def test_tickers_spread_as_membership_assigns() -> None:
    members = {"a": 100.0, "b": 100.0, "c": 100.0}
    table = assign(TICKERS, sorted(members))
    for me in members:
        plan = Plan(me)
        plan.update(TICKERS, members, now=100.0)
        assert plan.tickers == tuple(sorted(table[me]))
    assert all(10 <= len(v) <= 30 for v in table.values())


def test_dead_member_tickers_move_with_a_gap_since_its_last_heartbeat() -> None:
    plan = Plan("a", live_after=3.0)
    plan.update(TICKERS, {"a": 100.0, "b": 100.0}, now=100.0)
    mine_before = set(plan.tickers)
    # b stops beating at 100.5; at 104 it counts as dead.
    plan.update(TICKERS, {"a": 103.5, "b": 100.5}, now=103.5)
    assert set(plan.tickers) == mine_before
    changed, moves = plan.update(TICKERS, {"a": 104.0, "b": 100.5}, now=104.0)
    assert changed and set(plan.tickers) == set(TICKERS)
    assert len(moves) == 1
    assert set(moves[0].tickers) == set(TICKERS) - mine_before
    assert moves[0].since == 100.5 and moves[0].departed == ("b",)


def test_newcomer_takes_over_make_before_break() -> None:
    plan = Plan("a", handover=2.0)
    plan.update(TICKERS, {"a": 100.0}, now=100.0)
    changed, moves = plan.update(TICKERS, {"a": 101.0, "b": 101.0}, now=101.0)
    assert moves == [] and not changed  # still holding everything during the hand-over
    changed, moves = plan.update(TICKERS, {"a": 103.5, "b": 103.5}, now=103.5)
    assert changed and moves == []
    assert set(plan.tickers) == set(assign(TICKERS, ["a", "b"])["a"])


def test_newcomer_records_no_gap_for_tickers_held_by_live_members() -> None:
    plan = Plan("b")
    changed, moves = plan.update(TICKERS, {"a": 100.0, "b": 100.0}, now=100.0)
    assert changed and moves == []


def test_replication_two_keeps_every_ticker_on_two_and_a_death_leaves_no_gap() -> None:
    members = {"a": 100.0, "b": 100.0, "c": 100.0}
    plans = {m: Plan(m, replicas=2) for m in members}
    for plan in plans.values():
        plan.update(TICKERS, members, now=100.0)
    for ticker in TICKERS:
        assert sum(ticker in p.tickers for p in plans.values()) == 2
    later = {"a": 105.0, "b": 105.0, "c": 100.0}
    for name in ("a", "b"):
        _, moves = plans[name].update(TICKERS, later, now=105.0)
        assert moves == []  # the other replica was still streaming them
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


def test_removed_tickers_go_at_once_and_added_ones_come_without_gap() -> None:
    plan = Plan("a")
    plan.update(["BBCA", "TLKM"], {"a": 1.0}, now=1.0)
    changed, moves = plan.update(["BBCA", "ASII"], {"a": 1.5}, now=1.5)
    assert changed and moves == [] and plan.tickers == ("ASII", "BBCA")


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


def test_roster_reports_a_gap_when_a_peer_dies() -> None:
    async def scenario() -> None:
        client: Any = fakeredis.FakeAsyncRedis()
        keys = Keys()
        gaps: list[GapRecord] = []
        roster = Roster(
            client,
            keys,
            "a",
            replicas=1,
            heartbeat_s=0.1,
            status_ttl_s=5,
            status=_status,
            on_gap=gaps.append,
        )
        await client.sadd(keys.desired_tickers, *TICKERS[:20])
        await client.zadd(keys.ingestors, {"b": 1})  # ancient heartbeat: dead
        await roster.beat()
        assert len(roster.tickers) == 20 and gaps == []  # no knowledge of b's past
        roster.plan.update(TICKERS[:20], {"a": 0.0, "b": 0.0}, now=0.0)  # pretend b was live
        roster.plan.tickers = tuple(
            t for t in roster.plan.tickers if t in assign(TICKERS[:20], ["a", "b"])["a"]
        )
        await roster.beat()
        assert len(gaps) == 1 and gaps[0].cause == "ticker_moved"
        assert set(gaps[0].tickers) == set(assign(TICKERS[:20], ["a", "b"])["b"])

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
