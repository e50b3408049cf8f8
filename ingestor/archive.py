"""The raw-frame archive: every frame an ingestor receives, with its receive time, on disk.

The feed is reverse-engineered and cannot be replayed from the server: the day a decoder turns
out wrong, the CSVs written until then are wrong for good unless the frames themselves were
kept. This module keeps them (``raw/YYYY-MM-DD/<ingestor>.<n>.zst``, format
:mod:`pipeline.rawfile`) so ``obpipe replay DAY`` can rebuild a day after a fix.

It must never slow or stop ingestion, so it is three layers with one direction of travel:

- **the hot path** (:mod:`ingestor.session`'s receive loop) appends ``(frame, received)`` to
  :attr:`Archive.pending`, a plain list — one tuple and one ``append``, nothing else;
- **the pump** (:meth:`Archive.pump`, on the event loop every 0.1 s) moves that list into a
  queue for the writer thread, bounded by bytes: when the thread is behind by more than
  ``queue_bytes``, the batch is dropped and *counted* instead of waiting;
- **the writer thread** packs records, compresses (zstd releases the GIL), writes, flushes a
  block every second, fsyncs every 10 s, starts a new file at midnight WIB (the receive
  time's Jakarta day), prunes folders older than ``RAW_KEEP_DAYS`` and stops writing while
  ``DATA_DIR`` has less than ``RAW_MIN_FREE_MB`` free, so the archive can never fill the disk
  the CSVs need. Frames it cannot keep (floor, write error) are counted, and a ``LOSS``
  record says so in the file once it can write again.

Trouble is counted in the status key (``raw_*`` fields, the web page) and turned into the
``raw_archive:<id>`` alert condition by :meth:`Archive.trouble` (the service raises it).
Redis plays no part: the archive keeps writing while Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pipeline import rawfile
from pipeline.alerts import CRITICAL, WARNING
from pipeline.conditions import RAW_ARCHIVE, clear_condition_async, raise_condition_async
from pipeline.days import WIB, age_days
from pipeline.keys import Keys
from pipeline.layout import Layout, raw_file

log = logging.getLogger(__name__)

PUMP_S = 0.1
"""How often the event loop moves the hot path's list to the writer thread."""
FLUSH_S = 1.0
"""A zstd block is ended and written at least this often: a crash loses at most this much."""
SYNC_S = 10.0
"""fsync period: the flush already survives a killed process; this bounds a machine crash."""
CHECK_S = 1.0
"""Free-space check period."""
PRUNE_S = 3600.0
REPORT_S = 5.0
"""How often the alert condition is raised again (or cleared) from :meth:`Archive.trouble`."""
REPORT_TTL_S = 60.0
"""The condition lapses this long after the last raise (an ingestor that died cannot clear)."""
QUEUE_BYTES = 32 * 1024 * 1024
"""Frame bytes the writer thread may be behind by before batches are dropped (and counted):
10 s of a whole-market feed's raw bytes, 1 s of the benchmarks' max rate; it is also the
archive's worst-case memory beside zstd's ~10 MiB."""
RETRY_S = (5.0, 60.0)
"""Backoff after a write error: first retry, longest wait."""
RECENT_DROP_S = 60.0
"""Frames dropped within this long still count as trouble (alert) after the cause passed."""

OK = "ok"
DISK_FLOOR = "disk_floor"
ERROR = "error"
QUEUE_FULL = "queue_full"
WRITE_ERROR = "write_error"

Pending = list[tuple[bytes | str, bytes]]
"""What the hot path appends: (the message as received, its receive time text)."""
_MIB = 1024 * 1024


@dataclass
class Loss:
    """Frames the archive could not keep, summarised for one ``LOSS`` record."""

    frames: int = 0
    bytes: int = 0
    first_us: int = 0
    last_us: int = 0
    reason: str = ""

    def add(self, frames: int, size: int, first_us: int, last_us: int, reason: str) -> None:
        """Count more lost frames (the span grows, the latest reason wins)."""
        self.first_us = first_us if not self.frames else min(self.first_us, first_us)
        self.last_us = max(self.last_us, last_us)
        self.frames += frames
        self.bytes += size
        self.reason = reason

    def payload(self) -> dict[str, int | str]:
        """The ``LOSS`` record's JSON."""
        return {
            "frames": self.frames,
            "bytes": self.bytes,
            "first_us": self.first_us,
            "last_us": self.last_us,
            "reason": self.reason,
        }


class RawWriter:
    """The file side, single-threaded: records into the right day's file, compressed.

    Used only by the archive's thread (and directly by tests). Every method may raise
    ``OSError``; after one, :meth:`abandon` drops the file and the next write opens a new one
    (never appending to a file whose tail may be torn).
    """

    def __init__(self, layout: Layout, ingestor: str, now_us: Callable[[], int]) -> None:
        self.layout = layout
        self.ingestor = ingestor
        self.now_us = now_us
        self.stamps = rawfile.Stamps()
        self.day = ""
        self.path: Path | None = None
        self.frames = 0
        """Frames written (all files)."""
        self.bytes = 0
        """Compressed bytes written (all files)."""
        self._fd: int | None = None
        self._compressor: rawfile.Compressor | None = None
        self._file_frames = 0
        self._dirty = False

    @property
    def open(self) -> bool:
        """A file is open for writing."""
        return self._fd is not None

    def write(self, batch: Pending, loss: Loss | None = None) -> None:
        """Append ``batch`` (in order) to the files of their receive days, ``loss`` first."""
        if not batch:
            return
        day = batch[0][1][:10].decode()
        if day != self.day or self._fd is None:
            self._open(day)
        if loss is not None and loss.frames:
            self._add(rawfile.json_record(rawfile.LOSS, self.now_us(), loss.payload()))
        if batch[-1][1][:10].decode() == day:
            self._frames(batch)
            return
        # Midnight WIB inside the batch: one file per receive day, records never reordered.
        start = 0
        for index in range(1, len(batch) + 1):
            if index == len(batch) or batch[index][1][:10].decode() != day:
                self._frames(batch[start:index])
                if index < len(batch):
                    day = batch[index][1][:10].decode()
                    self._open(day)
                    start = index

    def loss(self, loss: Loss) -> None:
        """Write a ``LOSS`` record alone (at shutdown: frames lost after the last batch)."""
        if self._fd is None:
            self._open(rawfile.iso(self.now_us())[:10])
        self._add(rawfile.json_record(rawfile.LOSS, self.now_us(), loss.payload()))

    def _frames(self, batch: Pending) -> None:
        # zip(*) and pack_frames are C-level per frame: this thread holds the GIL, which the
        # receive loop needs, for a fraction of a microsecond per frame.
        frames, times = zip(*batch, strict=True)
        self._add(rawfile.pack_frames(frames, times))
        # Counted once handed to the file (a failed write counts them as dropped instead).
        self.frames += len(batch)
        self._file_frames += len(batch)

    def _add(self, data: bytes) -> None:
        assert self._compressor is not None
        self._dirty = True
        self._out(self._compressor.add(data))

    def _out(self, data: bytes) -> None:
        fd = self._fd
        assert fd is not None
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            self.bytes += written
            view = view[written:]

    def _open(self, day: str) -> None:
        """Close the current file (if any) and start the next ``n`` of ``day``."""
        self.close()
        folder = self.layout.raw_dir(day)
        folder.mkdir(parents=True, exist_ok=True)
        taken = [n for ing, n, _ in self.layout.raw_files(day) if ing == self.ingestor]
        number = max(taken, default=-1) + 1
        path = self.layout.path(raw_file(day, self.ingestor, number))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        _sync_dir(folder)
        self._fd, self.path, self.day = fd, path, day
        self._compressor = rawfile.Compressor()
        self._file_frames = 0
        self._add(rawfile.header(self.ingestor, number, day, self.now_us()))
        log.info("raw archive: writing %s", path)

    def flush(self) -> None:
        """End the current zstd block: the file is readable up to everything written so far."""
        if self._fd is not None and self._compressor is not None and self._dirty:
            self._out(self._compressor.flush())
            self._dirty = False

    def sync(self) -> None:
        """Make the file durable (after :meth:`flush`)."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        """Finish the file cleanly: ``END`` record, zstd epilogue, fsync, close."""
        if self._fd is None or self._compressor is None:
            return
        end = {"frames": self._file_frames}
        self._add(rawfile.json_record(rawfile.END, self.now_us(), end))
        self._out(self._compressor.finish())
        os.fsync(self._fd)
        self.abandon()

    def abandon(self) -> None:
        """Let go of the file without finishing it (after a write error)."""
        fd, self._fd, self._compressor = self._fd, None, None
        self._dirty = False
        self.day = ""
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _sync_dir(folder: Path) -> None:
    # A new file's directory entry must survive a machine crash as well as its bytes.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Item(NamedTuple):
    """One batch handed from the pump to the writer thread."""

    batch: Pending
    size: int
    loss: Loss | None
    """Frames the pump had to drop just before this batch (queue full)."""


_STOP = _Item([], 0, None)
"""Queued after the last batch: finish the file and end the thread."""


class Archive:
    """One ingestor's raw archive: the hot path's list, the pump, the writer thread."""

    def __init__(
        self,
        root: Path,
        ingestor: str,
        *,
        keep_days: int = 7,
        min_free_mb: int = 0,
        queue_bytes: int = QUEUE_BYTES,
        wall: Callable[[], float] = time.time,
        free_bytes: Callable[[Path], int] | None = None,
    ) -> None:
        self.layout = Layout(root)
        self.ingestor = ingestor
        self.keep_days = keep_days
        self.min_free = min_free_mb * _MIB
        self.resume_free = self.min_free + max(100 * _MIB, self.min_free // 10)
        """Archiving resumes above this (hysteresis: no flapping at the floor)."""
        self.queue_bytes = queue_bytes
        self.wall = wall
        self.free_bytes = free_bytes or _free_bytes
        self.pending: Pending = []
        """The hot path appends here (``archive.keep``); only the event loop empties it."""
        self.keep = self.pending.append
        self.writer = RawWriter(self.layout, ingestor, self._now_us)
        self.state = OK
        self.error: str | None = None
        self.free: int | None = None
        """Free bytes on ``DATA_DIR`` at the last check."""
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._put_bytes = 0  # written by the pump only
        self._done_bytes = 0  # written by the thread only
        self._queue_loss: Loss | None = None  # pump only
        self._queue_dropped = 0  # pump only
        self._write_dropped = 0  # thread only
        self._write_loss: Loss | None = None  # thread only
        self._last_drop = -math.inf
        self._last_drop_reason = ""
        self._retry_at = 0.0
        self._retry_s = RETRY_S[0]
        self._stamps = rawfile.Stamps()  # pump only
        self._thread: threading.Thread | None = None

    # ---- figures for the status key and alerts ---------------------------------------------

    @property
    def frames(self) -> int:
        """Frames archived so far."""
        return self.writer.frames

    @property
    def bytes(self) -> int:
        """Compressed bytes written so far."""
        return self.writer.bytes

    @property
    def dropped(self) -> int:
        """Frames that could not be archived (queue full, disk floor, write errors)."""
        return self._queue_dropped + self._write_dropped

    @property
    def queued_bytes(self) -> int:
        """Frame bytes handed to the writer thread and not written yet."""
        return self._put_bytes - self._done_bytes

    def trouble(self, now: float | None = None) -> tuple[str, str, str] | None:
        """(severity, title, detail) of the alert to raise, or None when all is well."""
        moment = time.monotonic() if now is None else now
        dropped = f"{self.dropped:,} frame(s) not archived so far"
        if self.state == DISK_FLOOR:
            free = "?" if self.free is None else f"{self.free // _MIB:,}"
            return (
                CRITICAL,
                f"Raw archive of {self.ingestor} stopped: disk almost full",
                f"{free} MiB free on DATA_DIR, below RAW_MIN_FREE_MB={self.min_free // _MIB:,}; "
                f"archiving resumes above {self.resume_free // _MIB:,} MiB; {dropped}.",
            )
        if self.state == ERROR:
            return (
                CRITICAL,
                f"Raw archive of {self.ingestor} cannot write",
                f"{self.error or 'write error'}; retrying; {dropped}.",
            )
        if moment - self._last_drop < RECENT_DROP_S:
            why = {
                QUEUE_FULL: f"its writer thread fell over {self.queue_bytes // _MIB} MiB behind",
                DISK_FLOOR: "it was stopped at the disk floor until just now",
                WRITE_ERROR: "it could not write until just now",
            }.get(self._last_drop_reason, self._last_drop_reason)
            return (
                WARNING,
                f"Raw archive of {self.ingestor} is dropping frames",
                f"{why}; {dropped}.",
            )
        return None

    @property
    def condition_id(self) -> str:
        """The alert condition this archive raises: ``raw_archive:<ingestor id>``."""
        return f"{RAW_ARCHIVE}:{re.sub(r'[^a-z0-9_.:@-]', '-', self.ingestor.lower())}"

    def status_fields(self, now: float | None = None) -> dict[str, Any]:
        """The ``raw_*`` fields of the ingestor's status key."""
        state = self.state
        if state == OK and self.trouble(now) is not None:
            state = "dropping"
        return {
            "raw_state": state,
            "raw_frames": self.frames,
            "raw_bytes": self.bytes,
            "raw_dropped": self.dropped,
            "raw_error": self.error,
        }

    # ---- event loop side ---------------------------------------------------------------------

    async def run(self, client: aioredis.Redis, keys: Keys) -> None:
        """Start the thread, pump every :data:`PUMP_S` and keep the alert condition in step
        with :meth:`trouble`, until cancelled; then hand over the rest and finish the file.

        Redis trouble only delays the alert (retried every :data:`REPORT_S`): the archive
        itself needs no Redis.
        """
        self.start()
        raised = False
        next_report = 0.0
        report: asyncio.Task[bool] | None = None
        try:
            while True:
                try:
                    self.pump()
                except Exception:  # a bug here must not end archiving for the day
                    log.exception("raw archive: pump failed")
                    self._queue_dropped += len(self.pending)  # counted, never silent
                    self.pending.clear()
                now = time.monotonic()
                if now >= next_report and (report is None or report.done()):
                    next_report = now + REPORT_S
                    if report is not None:
                        raised = report.result()
                    # Its own task: a hung Redis must not hold up the pump.
                    report = asyncio.create_task(self._report(client, keys, raised))
                await asyncio.sleep(PUMP_S)
        finally:
            if report is not None:
                report.cancel()
            await asyncio.to_thread(self.close)

    async def _report(self, client: aioredis.Redis, keys: Keys, raised: bool) -> bool:
        trouble = self.trouble()
        try:
            if trouble is not None:
                severity, title, detail = trouble
                await raise_condition_async(
                    client,
                    keys,
                    self.condition_id,
                    severity,
                    title,
                    detail=detail,
                    ttl_s=REPORT_TTL_S,
                    source=self.ingestor,
                )
                return True
            if raised:
                await clear_condition_async(client, keys, self.condition_id)
            return False
        except (RedisError, OSError) as exc:
            # Redis down: the page shows the status fields once it is back; retried anyway.
            log.debug("raw archive: cannot report to Redis: %s", exc)
        except Exception:
            log.exception("raw archive: reporting the alert condition failed")
        return raised or trouble is not None

    def start(self) -> None:
        """Start the writer thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="raw-archive", daemon=True)
            self._thread.start()

    def pump(self) -> None:
        """Move what the hot path appended to the writer thread; never blocks.

        Runs on the event loop (the hot path's thread), so taking the list and clearing it
        is one step the receive loop cannot interleave with.
        """
        pending = self.pending
        if not pending:
            return
        batch = pending.copy()
        pending.clear()
        size = sum(len(frame) for frame, _ in batch)
        if self.queued_bytes + size > self.queue_bytes:
            self._queue_dropped += len(batch)
            self._last_drop, self._last_drop_reason = time.monotonic(), QUEUE_FULL
            dropped = self._queue_loss or Loss()
            first, last = self._stamps.micros(batch[0][1]), self._stamps.micros(batch[-1][1])
            dropped.add(len(batch), size, first, last, QUEUE_FULL)
            if self._queue_loss is None:
                behind = self.queued_bytes // _MIB
                log.warning("raw archive: writer thread %d MiB behind, dropping frames", behind)
            self._queue_loss = dropped
            return
        loss, self._queue_loss = self._queue_loss, None
        self._put_bytes += size
        self._queue.put(_Item(batch, size, loss))

    def close(self, timeout: float = 10.0) -> bool:
        """Hand over the last frames, finish the file and stop the thread; True if it did."""
        self.pump()
        thread = self._thread
        if thread is None:
            return True
        self._queue.put(_STOP)
        thread.join(timeout)
        if thread.is_alive():
            log.error("raw archive: the writer thread did not finish within %.0fs", timeout)
            return False
        return True

    # ---- the writer thread -------------------------------------------------------------------

    def _now_us(self) -> int:
        return int(self.wall() * 1_000_000)

    def _run(self) -> None:
        monotonic = time.monotonic
        last_flush = last_sync = monotonic()
        last_check = last_prune = -math.inf
        held: _Item | None = None
        while True:
            try:
                item = held or self._queue.get(timeout=FLUSH_S / 4)
            except queue.Empty:
                item = None
            held = None
            if item is _STOP:
                break
            if item is not None:
                item, held = self._gather(item)
            now = monotonic()
            try:
                if now - last_check >= CHECK_S:
                    last_check = now
                    self._check_space()
                if now - last_prune >= PRUNE_S:
                    last_prune = now
                    self.prune()
                if item is not None:
                    self._take(item.batch, item.size, item.loss, now)
                if now - last_flush >= FLUSH_S:
                    last_flush = now
                    self._guard(self.writer.flush, now)
                if now - last_sync >= SYNC_S:
                    last_sync = now
                    self._guard(self.writer.sync, now)
            except Exception as exc:  # the thread must outlive any bug: count, log, go on
                log.exception("raw archive: unexpected error")
                self._failed(f"{type(exc).__name__}: {exc}", now)
        self._finish()

    def _gather(self, item: _Item) -> tuple[_Item, _Item | None]:
        """``item`` and every batch queued behind it, as one (and the item it stopped at).

        Behind the receive loop, one write of many batches costs the same few hand-overs of
        the GIL as one write of one, so a thread that fell behind catches up. A batch with a
        loss before it (or the stop) is not merged: it is returned to be taken next.
        """
        batch, size = item.batch, item.size
        merged = False
        while True:
            try:
                following = self._queue.get_nowait()
            except queue.Empty:
                following = None
            if following is None or following is _STOP or following.loss is not None:
                break
            if not merged:
                batch, merged = list(batch), True
            batch += following.batch
            size += following.size
        if merged:
            item = _Item(batch, size, item.loss)
        return item, following

    def _take(self, batch: Pending, size: int, loss: Loss | None, now: float) -> None:
        self._done_bytes += size
        if loss is not None:
            self._merge_loss(loss)
        if self.state == DISK_FLOOR or (self.state == ERROR and now < self._retry_at):
            self._drop(batch, size, WRITE_ERROR if self.state == ERROR else DISK_FLOOR, now)
            return
        pending, self._write_loss = self._write_loss, None
        try:
            self.writer.write(batch, pending)
        except OSError as exc:
            if pending is not None:
                self._merge_loss(pending)
            self._failed(f"{type(exc).__name__}: {exc.strerror or exc}", now)
            self._drop(batch, size, WRITE_ERROR, now)
            return
        if self.state == ERROR:
            log.info("raw archive: writing again")
        self.state, self.error = OK, None
        self._retry_s = RETRY_S[0]

    def _guard(self, step: Callable[[], None], now: float) -> None:
        try:
            step()
        except OSError as exc:
            self._failed(f"{type(exc).__name__}: {exc.strerror or exc}", now)

    def _failed(self, error: str, now: float) -> None:
        if self.state != ERROR:
            log.error("raw archive: %s; frames are counted as lost until it writes again", error)
        self.state, self.error = ERROR, error[:300]
        self.writer.abandon()
        self._retry_at = now + self._retry_s
        self._retry_s = min(RETRY_S[1], self._retry_s * 2)

    def _drop(self, batch: Pending, size: int, reason: str, now: float) -> None:
        self._write_dropped += len(batch)
        self._last_drop, self._last_drop_reason = now, reason
        stamps = self.writer.stamps
        loss = Loss()
        loss.add(len(batch), size, stamps.micros(batch[0][1]), stamps.micros(batch[-1][1]), reason)
        self._merge_loss(loss)

    def _merge_loss(self, loss: Loss) -> None:
        if self._write_loss is None:
            self._write_loss = Loss()
        self._write_loss.add(loss.frames, loss.bytes, loss.first_us, loss.last_us, loss.reason)

    def _check_space(self) -> None:
        if self.min_free <= 0:
            return
        free = self.free_bytes(self.layout.root)
        self.free = free
        if self.state != DISK_FLOOR and free < self.min_free:
            log.error(
                "raw archive: %d MiB free on DATA_DIR, below RAW_MIN_FREE_MB=%d: archiving stops "
                "(the CSVs keep the space)",
                free // _MIB,
                self.min_free // _MIB,
            )
            self.state = DISK_FLOOR
            with contextlib.suppress(OSError):
                self.writer.close()
            self.writer.abandon()
        elif self.state == DISK_FLOOR and free >= self.resume_free:
            log.info("raw archive: %d MiB free again: archiving resumes", free // _MIB)
            self.state = OK

    def prune(self) -> list[str]:
        """Remove raw folders ``keep_days`` old or older (0: keep all); the days removed."""
        if self.keep_days <= 0:
            return []
        now = datetime.fromtimestamp(self.wall(), WIB)
        removed = []
        for day in self.layout.raw_days():
            if age_days(day, now) >= self.keep_days:
                shutil.rmtree(self.layout.raw_dir(day), ignore_errors=True)
                removed.append(day)
        if removed:
            days = ", ".join(removed)
            log.info("raw archive: removed %s (RAW_KEEP_DAYS=%d)", days, self.keep_days)
        return removed

    def _finish(self) -> None:
        # Everything queued before the stop is written by now; say what was lost, end cleanly.
        loss = self._write_loss
        try:
            if loss is not None and loss.frames:
                log.warning("raw archive: %d frame(s) not archived (%s)", loss.frames, loss.reason)
                if self.state == OK:
                    self.writer.loss(loss)
            self.writer.close()
        except OSError as exc:
            log.error("raw archive: closing %s: %s", self.writer.path, exc)
            self.writer.abandon()


def _free_bytes(root: Path) -> int:
    # DATA_DIR may not exist yet on a fresh machine: ask about the nearest existing parent.
    path = root
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free
