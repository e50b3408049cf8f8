"""The writer process: owned partition streams → day files, exactly once (``obpipe write``).

The main thread reads every owned partition with one blocking XREAD and renders rows; every
``COMMIT_INTERVAL_MS`` of pending work (sooner when a lot is queued) it seals one batch per
partition, which an I/O thread writes and fsyncs while reading goes on, and then commits them
(:mod:`writer.partition` describes the protocol). Every ``HEARTBEAT_S`` it publishes its
status, renews its leases, and rebalances: the owned set is the rendezvous-hash share
(:mod:`pipeline.membership`) of the partitions and the gaps pseudo-partition among the writers
seen alive in the ``writers`` ZSET. Partitions it should no longer own are committed and
released; those it should own are acquired as soon as their lease is free (at once when a
writer leaves cleanly, after the lease TTL when it died).

Open files: at start the soft ``RLIMIT_NOFILE`` is raised to the hard limit and the day files
get half of it, less one lock file per partition (:class:`writer.files.OpenFiles`, an LRU of
descriptors shared by every partition); idle files are also forgotten after ``IDLE_CLOSE_S``.

SIGTERM/SIGINT: commit, release every partition, leave the ZSET, exit 0.
"""

from __future__ import annotations

import logging
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any, cast

import redis

from jobs.schedule import DaySchedule
from pipeline.keys import Keys
from pipeline.layout import day_of_file
from pipeline.membership import mine
from pipeline.settings import Settings
from pipeline.status import WriterStatus
from writer.files import FlushError, Lock, OpenFiles, sync
from writer.lease import GAPS, Leases, next_id
from writer.partition import Batch, LeaseLostError, Partition

log = logging.getLogger(__name__)

READ_COUNT = 2000
"""Entries per stream per XREAD."""
BATCH_ROWS = 200_000
"""Commit early once this many rows are queued in a partition (bounds memory, ~20 MB)."""
IDLE_CLOSE_S = 60.0
"""Forget a day file after this long without rows (frees memory; the LRU bounds descriptors)."""
MAX_BLOCK_S = 0.1
"""Longest XREAD block, so signals and heartbeats are never late by more."""
IO_POLL_S = 0.005
"""Shortest XREAD block while a batch is being written (no busy loop against Redis)."""
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 5.0
GAPS_ITEM = "gaps"


def _raw(response: Any, **_: Any) -> Any:
    return response


@dataclass
class _Held:
    """A partition we hold the lease of, possibly still waiting for its file lock."""

    value: str
    lock: Lock
    part: Partition | None = None
    renewed_at: float = 0.0
    fault_until: float = 0.0
    backoff: float = 0.0


class Writer:
    """The writer's state and loop."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.id = settings.process_id
        self.keys = Keys(settings.key_prefix, settings.partitions)
        self.client = client or redis.Redis.from_url(
            settings.redis_url.reveal(), socket_timeout=10, socket_connect_timeout=5
        )
        # XREAD replies stay raw ([stream, [[id, [name, value...]]]]): redis-py's per-entry
        # dicts would cost more than the rows.
        self.client.set_response_callback("XREAD", _raw)
        self.leases = Leases(self.client, self.keys, self.id, settings.lease_ttl_ms)
        self.schedule = DaySchedule(self.client, self.keys, settings)
        self.root = settings.data_dir
        # One lock file per partition (and the gaps pseudo-partition) may be held at once.
        self.fds = OpenFiles.for_process(reserved=settings.partitions + 1)
        self.held: dict[int, _Held] = {}
        self.stopping = False
        self.status = WriterStatus(id=self.id, started_at=_iso_now())
        self.rows_done = 0  # rows/trades/dead letters of partitions since given up
        self.trades_done = 0
        self.prices_done = 0
        self.dead_done = 0
        self.duplicates_done = 0
        self.last_housekeeping = 0.0
        self.io = ThreadPoolExecutor(1, thread_name_prefix="writer-io")
        self.inflight: tuple[Future[dict[int, Exception]], list[Batch]] | None = None

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the process exit code."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        log.info(
            "writer %s: data in %s, %d partitions, at most %d day-file descriptors",
            self.id,
            self.root,
            self.settings.partitions,
            self.fds.bound,
        )
        next_beat = 0.0
        while not self.stopping:
            try:
                now = time.monotonic()
                if now >= next_beat:
                    self.heartbeat()
                    next_beat = time.monotonic() + self.settings.heartbeat_s
                self.step(next_beat)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._error(f"redis: {exc}")
                time.sleep(0.5)
        self.shutdown()
        return 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("writer %s: signal %d, finishing", self.id, signum)
        self.stopping = True

    def step(self, next_beat: float) -> None:
        """Finish or start a commit when due, then one read (blocking at most until due)."""
        now = time.monotonic()
        for number, held in list(self.held.items()):
            if held.part is None and held.fault_until and now >= held.fault_until:
                self._recover(number, held)
        if self.inflight is not None and self.inflight[0].done():
            self.finish_commit()
        parts = self._parts()
        interval = self.settings.commit_interval_ms / 1000
        full = any(p.pending_rows >= BATCH_ROWS for p in parts)
        commit_at = min(
            (p.pending_since + interval for p in parts if p.pending_since is not None),
            default=next_beat,
        )
        if self.inflight is None and (full or commit_at <= now):
            self.start_commit()
        if self.inflight is None and now - self.last_housekeeping >= 1.0:
            self.last_housekeeping = now
            for p in parts:
                if not p.dirty:
                    p.close_idle(now, IDLE_CLOSE_S)
        wait = max(0.0, min(commit_at - now, next_beat - now, MAX_BLOCK_S))
        if self.inflight is not None:
            wait = max(wait, IO_POLL_S)  # a commit is overdue but waits for the I/O thread
        readable = {p.stream: p for p in parts if p.pending_rows < BATCH_ROWS}
        if full or not readable:
            # Nothing (more) to read before the batch in flight is committed: wait for it.
            if self.inflight is not None:
                wait_futures([self.inflight[0]], timeout=MAX_BLOCK_S if full else wait)
            elif wait > 0:
                time.sleep(wait)
            return
        streams: dict[Any, Any] = {name: p.read_id for name, p in readable.items()}
        block = int(wait * 1000)
        reply = cast(
            list[Any] | None,
            self.client.xread(streams, count=READ_COUNT, block=block if block > 0 else None),
        )
        # RESP3 (redis-py's default with Redis >= 6) answers a map, RESP2 a list of pairs.
        pairs = reply.items() if isinstance(reply, dict) else reply or ()
        for name, entries in pairs:
            readable[name.decode()].take(entries)

    def _parts(self) -> list[Partition]:
        return [h.part for h in self.held.values() if h.part is not None]

    # --- commits ----------------------------------------------------------------------------

    def commit(self, only: list[int] | None = None) -> None:
        """Commit everything read so far (of the ``only`` partitions), and wait for it."""
        if self.inflight is not None:
            self.finish_commit()
        self.start_commit(only)
        if self.inflight is not None:
            self.finish_commit()

    def start_commit(self, only: list[int] | None = None) -> None:
        """Seal a batch per partition with work and have the I/O thread write and fsync it.

        Reading and rendering go on meanwhile (writev and fsync release the GIL), which is
        what lets one writer process keep up with about a million rows a second.
        """
        batches = [
            p.seal()
            for n, h in self.held.items()
            if (p := h.part) is not None
            and p.pending_since is not None
            and (only is None or n in only)
        ]
        if batches:
            self.inflight = (self.io.submit(_write_batches, batches), batches)

    def finish_commit(self) -> None:
        """Wait for the I/O thread, then run the fenced commits of what it made durable."""
        assert self.inflight is not None
        future, batches = self.inflight
        self.inflight = None
        errors = future.result()
        now_ms = int(time.time() * 1000)
        calls: list[Batch] = []
        pipe = self.client.pipeline(transaction=False)
        for batch in batches:
            number = batch.part.number
            error = errors.get(number)
            if isinstance(error, LeaseLostError):
                self._lost(number)
                continue
            if error is not None:
                # Disk trouble, or Redis failing the intent: nothing of the batch is committed.
                self._fault(number, error)
                continue
            try:
                keys, args = batch.part.commit_call(batch, now_ms)
            except OSError as exc:
                self._fault(number, exc)
                continue
            self.leases.commit_script(keys=keys, args=args, client=pipe)
            calls.append(batch)
        try:
            results = pipe.execute() if calls else []
        except (redis.ConnectionError, redis.TimeoutError):
            # Whether these commits were applied is unknown: the commit records will tell.
            for batch in calls:
                self._fault(batch.part.number, OSError("commit outcome unknown (Redis lost)"))
            raise
        stamp = time.monotonic()
        days: set[str] = set()
        for batch, ok in zip(calls, results, strict=True):
            number = batch.part.number
            if ok:
                batch.part.committed(batch, now_ms)
                days.update(day_of_file(text[0].relpath) for text in batch.texts)
                held = self.held[number]
                held.renewed_at = stamp
                held.backoff = 0.0
            else:
                self._lost(number)
        self.schedule.note(days)

    def _fault(self, number: int, exc: Exception) -> None:
        held = self.held[number]
        held.backoff = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, held.backoff * 2))
        held.fault_until = time.monotonic() + held.backoff
        self._error(f"partition {number}: {exc}; retrying in {held.backoff:.1f}s")
        if held.part is not None:
            self._retire(held.part)
            held.part.abandon()
            held.part = None

    def _recover(self, number: int, held: _Held) -> None:
        part = Partition(
            number,
            value=held.value,
            leases=self.leases,
            root=self.root,
            lock=held.lock,
            clock=time.monotonic,
            fds=self.fds,
        )
        try:
            part.recover()
        except LeaseLostError:
            self._lost(number)
            return
        except OSError as exc:
            held.part = part
            self._fault(number, exc)
            return
        held.part = part
        held.fault_until = 0.0

    def _error(self, text: str) -> None:
        log.error("writer %s: %s", self.id, text)
        self.status.last_error = f"{_iso_now()} {text}"

    def _retire(self, p: Partition) -> None:
        # Keep the process totals when a partition object goes away.
        self.rows_done += p.rows_committed
        self.trades_done += p.trades_committed
        self.prices_done += p.prices_committed
        self.dead_done += p.dead_committed
        self.duplicates_done += p.duplicates
        p.rows_committed = p.trades_committed = p.prices_committed = 0
        p.dead_committed = p.duplicates = 0

    def _lost(self, number: int) -> None:
        log.warning("writer %s: lease of partition %d lost", self.id, number)
        self._let_go(number, self.held.pop(number), lost=True)

    def _let_go(self, number: int, held: _Held, *, lost: bool = False) -> None:
        """Stop writing a partition: release it cleanly, or (``lost``) drop what was pending."""
        if held.part is not None:
            self._retire(held.part)
            if lost:
                held.part.drop()
            else:
                held.part.release()
        else:
            held.lock.release()
            if not lost:
                self.leases.release(number, held.value)

    # --- ownership --------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Publish status, renew leases, rebalance."""
        if self.inflight is not None:
            self.finish_commit()  # ownership changes never race the I/O thread
        now_ms = int(time.time() * 1000)
        ttl_ms = self.settings.lease_ttl_ms
        # A lease not renewed for a whole TTL (Redis unreachable) may be someone else's now:
        # stop writing and let go of the file lock, so the next owner is not kept waiting.
        expired = time.monotonic() - ttl_ms / 1000
        for number in [n for n, h in self.held.items() if h.renewed_at < expired]:
            self._lost(number)
        self.client.zadd(self.keys.writers, {self.id: now_ms})
        self.client.zremrangebyscore(self.keys.writers, 0, now_ms - 10 * ttl_ms)
        alive = [
            m.decode()
            for m in cast(
                list[bytes], self.client.zrangebyscore(self.keys.writers, now_ms - ttl_ms, "+inf")
            )
        ]
        renewed = self.leases.renew({n: h.value for n, h in self.held.items()})
        stamp = time.monotonic()
        for number, ok in renewed.items():
            if ok:
                self.held[number].renewed_at = stamp
            else:
                self._lost(number)
        items = [str(p) for p in range(self.settings.partitions)] + [GAPS_ITEM]
        wanted = {GAPS if i == GAPS_ITEM else int(i) for i in mine(items, alive, self.id)}
        leaving = [n for n in self.held if n not in wanted]
        if leaving:
            self.commit(only=leaving)
            for number in leaving:
                held = self.held.pop(number, None)
                if held is not None:
                    self._let_go(number, held)
        taken = [number for number in sorted(wanted) if self._take(number)]
        if taken or leaving:
            # One line per rebalance (not one per partition): who holds what is the news.
            log.info(
                "writer %s: rebalanced: took %s, released %s; holds %d of %d partitions",
                self.id,
                _numbers(taken),
                _numbers(leaving),
                len(self.held),
                self.settings.partitions + 1,
            )
        self._publish(now_ms)

    def _take(self, number: int) -> bool:
        """Hold ``number`` if its lease is free; True if it was newly acquired now."""
        held = self.held.get(number)
        acquired = False
        if held is None:
            value = self.leases.acquire(number)
            if value is None:
                return False
            lock = Lock(self.root, f"partition{number}", self.fds)
            held = self.held[number] = _Held(value, lock)
            held.renewed_at = time.monotonic()
            acquired = True
            log.debug("writer %s: acquired partition %d (%s)", self.id, number, value)
        if held.part is not None or held.fault_until:
            return acquired
        try:
            if not held.lock.acquire():
                log.debug("writer %s: partition %d files still locked, waiting", self.id, number)
                return acquired
        except OSError as exc:
            held.part = None
            held.backoff = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, held.backoff * 2))
            held.fault_until = time.monotonic() + held.backoff
            self._error(f"partition {number} lock: {exc}")
            return acquired
        self._recover(number, held)
        return acquired

    def _publish(self, now_ms: int) -> None:
        s = self.status
        parts = self._parts()
        s.partitions = sorted(self.held)
        s.rows = self.rows_done + sum(p.rows_committed for p in parts)
        s.trades = self.trades_done + sum(p.trades_committed for p in parts)
        s.prices = self.prices_done + sum(p.prices_committed for p in parts)
        s.dead_letters = self.dead_done + sum(p.dead_committed for p in parts)
        s.duplicates_dropped = self.duplicates_done + sum(p.duplicates for p in parts)
        s.files_open = len(self.fds)
        faulted = any(h.fault_until for h in self.held.values())
        s.state = "stopping" if self.stopping else ("disk_error" if faulted else "running")
        last = max((p.last_commit_ms for p in parts), default=0)
        if last:
            s.last_commit_at = datetime.fromtimestamp(last / 1000, UTC).isoformat(
                timespec="milliseconds"
            )
        s.lag_entries, s.lag_seconds = self._lag(now_ms)
        s.updated_at = _iso_now()
        ttl = max(1, round(self.settings.status_ttl_s * 1000))
        self.client.set(self.keys.writer(self.id), s.to_json(), px=ttl)

    def _lag(self, now_ms: int) -> tuple[int, float]:
        held = [(n, h) for n, h in sorted(self.held.items())]
        if not held:
            return 0, 0.0
        pipe = self.client.pipeline(transaction=False)
        for number, h in held:
            stream = self.leases.stream(number)
            start = next_id(h.part.committed_id) if h.part is not None else "-"
            pipe.xlen(stream)
            pipe.xrange(stream, start, "+", count=1)
        replies = pipe.execute()
        entries = sum(int(n) for n in replies[0::2])
        oldest = [int(r[0][0].split(b"-")[0]) for r in replies[1::2] if r]
        seconds = max(0.0, (now_ms - min(oldest)) / 1000) if oldest else 0.0
        return entries, round(seconds, 3)

    def shutdown(self) -> None:
        """Commit, release every partition, leave the writers set."""
        try:
            self.commit()
            for number in list(self.held):
                self._let_go(number, self.held.pop(number))
            self.client.zrem(self.keys.writers, self.id)
            self.status.state = "stopped"
            self.client.delete(self.keys.writer(self.id))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.error("writer %s: could not release cleanly: %s", self.id, exc)
        self.io.shutdown()
        self.fds.close()
        log.info("writer %s: stopped", self.id)


def _write_batches(batches: list[Batch]) -> dict[int, Exception]:
    """I/O thread: write every batch, then make all written files durable at once."""
    errors: dict[int, Exception] = {}
    written = []
    for batch in batches:
        try:
            written += batch.part.write(batch)
        except FlushError as exc:
            # The failed sync covered files of the batches written before this one too.
            return dict.fromkeys((b.part.number for b in batches), exc)
        except Exception as exc:  # every failure must reach the main thread
            errors[batch.part.number] = exc
    try:
        sync(written)
    except OSError as exc:
        for batch in batches:
            errors.setdefault(batch.part.number, exc)
    return errors


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def run_writer(settings: Settings) -> int:
    """``obpipe write``: run one writer until SIGTERM; returns the exit code."""
    return Writer(settings).run()


def _numbers(partitions: list[int]) -> str:
    """``[0, 1, 2, -1]`` → ``0-2,gaps`` for the rebalance line (``-`` when none)."""
    names = ["gaps" for n in partitions if n == GAPS]
    runs: list[list[int]] = []
    for n in sorted(n for n in partitions if n != GAPS):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    spans = [f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs]
    return ",".join(spans + names) or "-"
