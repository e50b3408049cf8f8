"""Leases, epochs and the fenced commit scripts against a real redis-server."""

from __future__ import annotations

import json
import time
from typing import cast

import pytest
import redis

from pipeline.keys import WRITER_GROUP, Keys
from writer.lease import Leases, next_id

pytestmark = pytest.mark.redis


@pytest.fixture
def raw(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def test_next_id() -> None:
    assert next_id("1700000000000-7") == "1700000000000-8"


def test_acquire_renew_release_and_epochs(raw: redis.Redis) -> None:
    keys = Keys("obpipe:", 4)
    a = Leases(raw, keys, "a", 300)
    b = Leases(raw, keys, "b", 300)
    va = a.acquire(1)
    assert va == "a|1"
    assert b.acquire(1) is None
    assert a.renew({1: va}) == {1: True}
    assert b.renew({1: "b|1"}) == {1: False}
    a.release(1, va)
    vb = b.acquire(1)
    assert vb == "b|2"
    b.release(1, "b|1")  # a stale value releases nothing
    assert raw.get(keys.lease(1)) == b"b|2"
    time.sleep(0.4)  # expired: anyone may take it, with a new epoch
    assert a.acquire(1) == "a|3"
    # the same owner id (a restarted process) takes its old lease over with a new epoch
    assert a.acquire(1) == "a|4"


def test_commit_is_fenced_and_atomic(raw: redis.Redis) -> None:
    keys = Keys("obpipe:", 4)
    leases = Leases(raw, keys, "w", 5000)
    stream = keys.stream(2)
    ids = [cast(bytes, raw.xadd(stream, {"k": "b", "n": str(n)})).decode() for n in range(5)]
    value = leases.acquire(2)
    assert value is not None
    assert leases.intent(2, value, '{"orderbook/2026-03-02_BBCA.csv":0}')
    args = {
        "part": 2,
        "last_id": ids[2],
        "files_json": json.dumps({"orderbook/2026-03-02_BBCA.csv": 500}),
        "counts": {"orderbook/2026-03-02_BBCA.csv": 7, "trades/2026-03-03_BBCA.csv": 1},
        "dead": [(ids[1], "bad side", "[...]")],
        "now_ms": 123,
    }
    k, a = leases.commit_call(value=value, **args)  # type: ignore[arg-type]
    assert leases.commit_script(keys=k, args=a) == 1
    record = leases.read(2)
    assert record.last_id == ids[2] and record.epoch == 1 and record.at_ms == 123
    assert json.loads(record.files) == {"orderbook/2026-03-02_BBCA.csv": 500}
    assert raw.hgetall(keys.day_counts("2026-03-02")) == {b"orderbook/2026-03-02_BBCA.csv": b"7"}
    assert raw.hgetall(keys.day_counts("2026-03-03")) == {b"trades/2026-03-03_BBCA.csv": b"1"}
    assert raw.hget(keys.counters, "dead_letters") == b"1"
    assert raw.xlen(keys.deadletter) == 1
    # trimmed up to the commit; the group's position follows it
    left = cast(list[tuple[bytes, dict[bytes, bytes]]], raw.xrange(stream))
    assert [entry_id.decode() for entry_id, _ in left] == ids[3:]
    group = raw.xinfo_groups(stream)[0]
    assert group["last-delivered-id"] in (ids[2], ids[2].encode())
    assert group["name"] in (WRITER_GROUP, WRITER_GROUP.encode())
    # a writer whose lease was taken over can neither commit nor record intent
    raw.delete(keys.lease(2))
    newer = Leases(raw, keys, "other", 5000).acquire(2)
    assert newer == "other|2"
    k, a = leases.commit_call(value=value, **{**args, "last_id": ids[4]})  # type: ignore[arg-type]
    assert leases.commit_script(keys=k, args=a) == 0
    assert not leases.intent(2, value, "{}")
    assert leases.read(2).last_id == ids[2]
    assert raw.hget(keys.day_counts("2026-03-02"), "orderbook/2026-03-02_BBCA.csv") == b"7"
