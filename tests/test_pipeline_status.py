"""obpipe status: the container health check."""

from __future__ import annotations

import fakeredis

from pipeline.keys import Keys
from pipeline.status import check


def test_health_check_finds_this_hosts_live_process() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys()
    assert check(client, keys, "redis", "box")[0]
    assert not check(client, keys, "ingestor", "box")[0]
    client.zadd(keys.ingestors, {"box-1": 1})
    assert not check(client, keys, "ingestor", "box")[0], "no heartbeat key: not alive"
    client.set(keys.ingestor("box-1"), "{}", px=10_000)
    assert check(client, keys, "ingestor", "box")[0]
    assert not check(client, keys, "ingestor", "other")[0]
    assert not check(client, keys, "writer", "box")[0]
