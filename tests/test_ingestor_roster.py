"""Which tickers an ingestor streams: the assignment plan (pure) and the heartbeat (fakeredis)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import fakeredis

from ingestor.roster import Plan, Roster
from pipeline.keys import Keys
from pipeline.membership import assign
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
        roster = Roster(
            client,
            keys,
            "a",
            replicas=1,
            heartbeat_s=0.2,
            status_ttl_s=5,
            status=_status,
            on_gap=gaps.append,
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
