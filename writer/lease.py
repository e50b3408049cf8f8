"""Partition ownership in Redis: leases with fencing epochs, and the fenced commit (Lua).

A lease is ``lease:<p>`` = ``"<owner>|<epoch>"`` with a PX TTL; every acquisition increments
``epoch:<p>``, so each tenure has its own value. Every write a writer makes about a partition
(intent, commit, release) is a script that first checks the lease still holds exactly its
value: a writer whose lease expired, or was taken over, can no longer change the commit record,
the day counts, the consumer group or the stream. A successful commit also extends the lease.

The gaps stream is owned the same way, as pseudo-partition :data:`GAPS` (``lease:-1`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.commands.core import Script

from pipeline.keys import GAP_GROUP, WRITER_GROUP, Keys
from pipeline.layout import day_of_file

GAPS = -1
"""The pseudo-partition number of the gaps stream (lease, epoch and commit keys)."""
DEADLETTER_MAXLEN = 10_000

_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local bar = string.find(cur, '|', 1, true)
  -- A lease still held under our own id is a previous incarnation of this process (same
  -- OBPIPE_ID, killed): take it over with a new epoch instead of waiting for it to expire.
  if not bar or string.sub(cur, 1, bar - 1) ~= ARGV[1] then return false end
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. epoch, 'PX', ARGV[2])
return epoch
"""

_RENEW = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_INTENT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'files', ARGV[2])
return 1
"""

# KEYS: lease, commit, stream, counters, deadletter, day-count keys...
# ARGV: lease value, last id, trim min id, files JSON, group, ttl ms, now ms, epoch,
#       n counts, n × (KEYS index, file, rows), m dead letters, m × (id, error, fields)
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'id', ARGV[2], 'files', ARGV[4], 'at', ARGV[7], 'epoch', ARGV[8])
local i = 9
local n = tonumber(ARGV[i])
for _ = 1, n do
  redis.call('HINCRBY', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3])
  i = i + 3
end
i = i + 1
local m = tonumber(ARGV[i])
for _ = 1, m do
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[#ARGV], '*', 'stream', KEYS[3],
             'id', ARGV[i + 1], 'error', ARGV[i + 2], 'entry', ARGV[i + 3])
  i = i + 3
end
if m > 0 then redis.call('HINCRBY', KEYS[4], 'dead_letters', m) end
redis.call('XGROUP', 'SETID', KEYS[3], ARGV[5], ARGV[2])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""


@dataclass(frozen=True, slots=True)
class Record:
    """A partition's commit record: the last committed entry id and its files' sizes."""

    last_id: str = "0-0"
    files: str = "{}"
    """JSON ``{relative path: committed byte size}`` of every file that may hold bytes past
    the commit (written before a file is first appended to: the intent)."""
    epoch: int = 0
    at_ms: int = 0


def next_id(entry_id: str) -> str:
    """The smallest stream id after ``entry_id`` (for XTRIM MINID: keep what follows it)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


class Leases:
    """The lease, intent and commit scripts of one writer, over one Redis client."""

    def __init__(self, client: redis.Redis, keys: Keys, owner: str, ttl_ms: int) -> None:
        self.client = client
        self.keys = keys
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._intent = client.register_script(_INTENT)
        self.commit_script: Script = client.register_script(_COMMIT)

    def stream(self, part: int) -> str:
        """The stream a (pseudo-)partition reads."""
        return self.keys.gaps if part == GAPS else self.keys.stream(part)

    def group(self, part: int) -> str:
        """The consumer group whose position follows the partition's commits."""
        return GAP_GROUP if part == GAPS else WRITER_GROUP

    def acquire(self, part: int) -> str | None:
        """Take a free lease: its value ``owner|epoch``, or None if someone else holds it."""
        epoch = self._acquire(
            keys=[self.keys.lease(part), self.keys.epoch(part)], args=[self.owner, self.ttl_ms]
        )
        if epoch is None:
            return None
        try:
            self.client.xgroup_create(self.stream(part), self.group(part), id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        return f"{self.owner}|{int(epoch)}"

    def renew(self, held: dict[int, str]) -> dict[int, bool]:
        """Extend every held lease that is still ours; False for those we lost."""
        if not held:
            return {}
        parts = list(held)
        flags = cast(
            list[int],
            self._renew(
                keys=[self.keys.lease(p) for p in parts],
                args=[self.ttl_ms, *(held[p] for p in parts)],
            ),
        )
        return {p: bool(f) for p, f in zip(parts, flags, strict=True)}

    def release(self, part: int, value: str) -> None:
        """Give a lease up (only if it is still ours)."""
        self._release(keys=[self.keys.lease(part)], args=[value])

    def read(self, part: int) -> Record:
        """The partition's commit record (defaults when it has never committed)."""
        raw = cast(dict[bytes, bytes], self.client.hgetall(self.keys.commit(part)))
        return Record(
            last_id=raw.get(b"id", b"0-0").decode(),
            files=raw.get(b"files", b"{}").decode(),
            epoch=int(raw.get(b"epoch", b"0")),
            at_ms=int(raw.get(b"at", b"0")),
        )

    def intent(self, part: int, value: str, files_json: str) -> bool:
        """Record the files about to be appended to, before any byte goes to them (fenced)."""
        ok = self._intent(
            keys=[self.keys.lease(part), self.keys.commit(part)], args=[value, files_json]
        )
        return bool(ok)

    def commit_call(
        self,
        *,
        part: int,
        value: str,
        last_id: str,
        files_json: str,
        counts: dict[str, int],
        dead: list[tuple[str, str, str]],
        now_ms: int,
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of the fenced commit of ``part`` (run through :attr:`commit_script`).

        ``counts`` maps relative paths to rows committed now (added to the day counts);
        ``dead`` lists (entry id, error, entry text) for the dead-letter stream.
        """
        keys = [
            self.keys.lease(part),
            self.keys.commit(part),
            self.stream(part),
            self.keys.counters,
            self.keys.deadletter,
        ]
        day_index: dict[str, int] = {}
        triples: list[Any] = []
        for path, rows in counts.items():
            day = day_of_file(path)
            if day not in day_index:
                keys.append(self.keys.day_counts(day))
                day_index[day] = len(keys)  # Lua's KEYS is 1-based
            triples += [day_index[day], path, rows]
        args: list[Any] = [
            value,
            last_id,
            next_id(last_id),
            files_json,
            self.group(part),
            self.ttl_ms,
            now_ms,
            value.rsplit("|", 1)[1],
            len(counts),
            *triples,
            len(dead),
        ]
        for entry_id, error, text in dead:
            args += [entry_id, error, text]
        args.append(DEADLETTER_MAXLEN)
        return keys, args
