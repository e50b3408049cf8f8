"""The per-partition commit protocol in one process: commit, crash, take over, nothing twice."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

import writer.files
from pipeline.keys import Keys
from pipeline.records import BookRecord
from writer.files import FlushError, Lock, OpenFiles, sync
from writer.lease import Leases
from writer.partition import Partition
from writer.service import _write_batches

pytestmark = pytest.mark.redis
KEYS = Keys("obpipe:", 1)


def record(seq: int, day: str = "2026-03-02", code: str = "BBCA") -> dict[str, str]:
    stamp = f"{day}T10:00:{seq:02d}.000000+07:00"
    return BookRecord(code, "BID", seq, stamp, f"{8000 + seq};1;100", stamp, "i").fields()


def read_all(client: redis.Redis, after: str, keys: Keys = KEYS, number: int = 0) -> list[Any]:
    reply = client.xread({keys.stream(number): after}, count=1000)
    entries: list[Any] = (
        reply.get(keys.stream(number).encode(), []) if isinstance(reply, dict) else reply[0][1]
    )
    return entries


def owner(
    client: redis.Redis,
    root: Path,
    name: str,
    *,
    fds: OpenFiles | None = None,
    keys: Keys = KEYS,
    number: int = 0,
) -> Partition:
    leases = Leases(client, keys, name, 60_000)
    value = leases.acquire(number)
    assert value is not None
    lock = Lock(root, f"partition{number}", fds)
    assert lock.acquire()
    part = Partition(
        number, value=value, leases=leases, root=root, lock=lock, clock=time.monotonic, fds=fds
    )
    part.recover()
    return part


def commit(part: Partition) -> bool:
    batch = part.seal()
    sync(part.write(batch))
    keys, args = part.commit_call(batch, 1)
    ok = bool(part.leases.commit_script(keys=keys, args=args))
    if ok:
        part.committed(batch, 1)
    return ok


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    c = redis.Redis.from_url(redis_url)
    c.set_response_callback("XREAD", lambda r, **_: r)
    return c


def test_crash_after_write_before_commit_is_undone(client: redis.Redis, data_dir: Path) -> None:
    for seq in range(1, 4):
        client.xadd(KEYS.stream(0), record(seq))  # type: ignore[arg-type]
    first = owner(client, data_dir, "a")
    first.take(read_all(client, first.read_id))
    assert commit(first)
    book = data_dir / "orderbook/2026-03-02_BBCA.csv"
    committed = book.read_bytes()
    # More entries, one for a new day file; written and fsynced but the process "dies"
    # before the fenced commit.
    client.xadd(KEYS.stream(0), record(4))  # type: ignore[arg-type]
    client.xadd(KEYS.stream(0), record(5, day="2026-03-03"))  # type: ignore[arg-type]
    first.take(read_all(client, first.read_id))
    batch = first.seal()
    sync(first.write(batch))
    later = data_dir / "orderbook/2026-03-03_BBCA.csv"
    assert later.exists() and len(book.read_bytes()) > len(committed)
    first.lock.release()  # the kernel does this when the process dies
    client.delete(KEYS.lease(0))  # ... and its lease expires

    second = owner(client, data_dir, "b")
    assert book.read_bytes() == committed and not later.exists()
    assert second.read_id == first.committed_id
    second.take(read_all(client, second.read_id))
    assert commit(second)
    text = book.read_text()
    assert [line.split(",")[7] for line in text.splitlines()[1:]] == ["1", "2", "3", "4"]
    assert later.read_text().splitlines()[1].split(",")[7] == "5"
    # the zombie cannot commit what it had
    keys, args = first.leases.commit_call(
        part=0, value=first.value, last_id=batch.read_id, files_json="{}", counts={"x/1": 1},
        dead=[], now_ms=2,
    )  # fmt: skip
    assert first.leases.commit_script(keys=keys, args=args) == 0
    assert client.hgetall(KEYS.day_counts("2026-03-02")) == {b"orderbook/2026-03-02_BBCA.csv": b"4"}


def test_duplicates_are_dropped_across_a_takeover(client: redis.Redis, data_dir: Path) -> None:
    client.xadd(KEYS.stream(0), record(1))  # type: ignore[arg-type]
    # the second ingestor's copy
    client.xadd(KEYS.stream(0), record(1))  # type: ignore[arg-type]
    first = owner(client, data_dir, "a")
    first.take(read_all(client, first.read_id))
    assert first.duplicates == 1
    assert commit(first)
    first.release()
    # a late copy
    client.xadd(KEYS.stream(0), record(1))  # type: ignore[arg-type]
    client.xadd(KEYS.stream(0), record(2))  # type: ignore[arg-type]
    second = owner(client, data_dir, "b")
    second.take(read_all(client, second.read_id))
    assert second.duplicates == 1
    assert commit(second)
    text = (data_dir / "orderbook/2026-03-02_BBCA.csv").read_text()
    assert [line.split(",")[7] for line in text.splitlines()[1:]] == ["1", "2"]


def test_dead_letters_are_committed_with_the_batch(client: redis.Redis, data_dir: Path) -> None:
    client.xadd(KEYS.stream(0), {"k": "b", "c": "BBCA", "s": "Q"})
    client.xadd(KEYS.stream(0), record(1))  # type: ignore[arg-type]
    part = owner(client, data_dir, "a")
    part.take(read_all(client, part.read_id))
    assert client.xlen(KEYS.deadletter) == 0  # nothing before the commit
    assert commit(part)
    assert client.xlen(KEYS.deadletter) == 1 and part.dead_committed == 1
    assert client.hget(KEYS.counters, "dead_letters") == b"1"


def test_files_of_a_past_day_are_closed_and_leave_the_record(
    client: redis.Redis, data_dir: Path
) -> None:
    client.xadd(KEYS.stream(0), record(1))  # type: ignore[arg-type]
    client.xadd(KEYS.stream(0), record(2, day="2026-03-03"))  # type: ignore[arg-type]
    part = owner(client, data_dir, "a")
    part.take(read_all(client, part.read_id))
    assert commit(part)
    assert sorted(part.open) == ["orderbook/2026-03-02_BBCA.csv", "orderbook/2026-03-03_BBCA.csv"]
    assert part.close_idle(time.monotonic(), idle_s=60) == 1  # the day changed
    assert sorted(part.open) == ["orderbook/2026-03-03_BBCA.csv"]
    client.xadd(KEYS.stream(0), record(3, day="2026-03-03"))  # type: ignore[arg-type]
    part.take(read_all(client, part.read_id))
    assert commit(part)
    assert list(json.loads(part.leases.read(0).files)) == ["orderbook/2026-03-03_BBCA.csv"]
    assert part.close_idle(time.monotonic() + 61, idle_s=60) == 1  # idle
    assert not part.open


def test_more_files_than_descriptors(client: redis.Redis, data_dir: Path) -> None:
    fds = OpenFiles(4)
    codes = [f"T{n:03d}" for n in range(10)]
    part = owner(client, data_dir, "a", fds=fds)
    for seq in range(1, 4):
        for code in codes:
            client.xadd(KEYS.stream(0), record(seq, code=code))  # type: ignore[arg-type]
        # A late replica copy of the last batch's snapshot of T000, whose descriptor the LRU
        # closed since: the dedup window outlived it.
        client.xadd(KEYS.stream(0), record(max(1, seq - 1), code="T000"))  # type: ignore[arg-type]
        part.take(read_all(client, part.read_id))
        assert commit(part)
        assert len(fds) <= 4 and len(part.open) == 10  # the LRU closes fds, not files
    assert part.duplicates == 3 and fds.evictions > 0
    sizes = json.loads(part.leases.read(0).files)
    for code in codes:
        path = f"orderbook/2026-03-02_{code}.csv"
        text = (data_dir / path).read_text()
        assert [line.split(",")[7] for line in text.splitlines()[1:]] == ["1", "2", "3"]
        assert sizes[path] == len(text.encode())
    assert client.hget(KEYS.day_counts("2026-03-02"), "orderbook/2026-03-02_T005.csv") == b"3"


def test_a_failed_sync_to_make_room_fails_the_whole_round(
    client: redis.Redis, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys("obpipe:", 2)
    fds = OpenFiles(4)
    parts = [owner(client, data_dir, "a", fds=fds, keys=keys, number=number) for number in (0, 1)]
    codes = [f"T{n:03d}" for n in range(40)]
    for stream in (keys.stream(0), keys.stream(1)):  # two files in each partition
        for code in [c for c in codes if keys.stream_for(c) == stream][:2]:
            client.xadd(stream, record(1, code=code))  # type: ignore[arg-type]
    for number, part in enumerate(parts):
        part.take(read_all(client, part.read_id, keys, number))
    assert [len(p.open) for p in parts] == [2, 2]

    def failing(_: Any) -> None:
        raise OSError(5, "Input/output error")

    # Only without syncfs is a file synced to make room (with it, the round's syncfs covers
    # the closed ones).
    monkeypatch.setattr(writer.files, "_syncfs", None)
    monkeypatch.setattr(writer.files, "sync", failing)
    errors = _write_batches([p.seal() for p in parts])
    # The failed sync covered the first partition's files too: neither may commit.
    assert set(errors) == {0, 1} and all(isinstance(e, FlushError) for e in errors.values())
