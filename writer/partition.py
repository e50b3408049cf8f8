"""One owned partition (or the gaps stream): entries → day files, and its commit protocol.

The protocol, per partition (P = the partition, R = its commit record ``commit:<P>``):

1. **Take over** (after the lease and the file lock are ours): read R = (last id, files
   {path: size}); cut every file listed back to its size (a size of 0 means created after
   the last commit: remove it). Now the disk holds exactly what R says, so reading resumes
   right after R's last id; whatever a dead owner had read, written or not committed is
   simply read and written again.
2. **Take** entries: render rows, drop dedup hits, queue text per file (memory only).
3. **Commit** (every ``commit_interval_ms`` of pending work, or sooner when much is queued):
   a. *intent*: if a file not listed in R is about to be appended to, first write R.files
      with it at its current size (fenced); so R always lists every file that may hold bytes
      past the commit;
   b. append each file's text (writev), then make all of them durable (fsync);
   c. *fenced commit* (one Lua script, atomic): if the lease still holds our owner|epoch,
      set R = (last id read, sizes of the open files), add the rows to the day counts, add
      the dead letters, move the consumer group to the last id and trim the stream up to it.
   A crash before (c) leaves bytes past R's sizes, which the next owner's step 1 removes; a
   crash after (c) leaves exactly what R says. The lease check makes (c) impossible for a
   writer that lost the partition, and the flock (:class:`writer.files.Lock`) keeps such a
   writer from touching the files once the next owner holds them.

Disk trouble during (a)-(b) abandons the batch: files closed, nothing committed; after a
backoff the partition recovers with step 1 and reads its entries again.

A file's descriptor may be closed between batches by the process-wide LRU
(:class:`writer.files.OpenFiles`) without the file leaving :attr:`Partition.open`: its size
stays in the record and its dedup window in memory, and the next write reopens it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.layout import PRICES, TRADES, day_of_file, kind_of
from pipeline.schema import EntryError, Rendered, render, render_gap
from writer.files import DataFile, Lock, OpenFiles, truncate
from writer.lease import GAPS, Leases

log = logging.getLogger(__name__)

Entry = list[Any]
"""A raw stream entry as the undecoded XREAD reply gives it: ``[id, [name, value, ...]]``."""


class Batch:
    """What one commit covers: the entries up to ``read_id`` and the text queued for them."""

    __slots__ = ("dead", "files", "part", "read_id", "texts")

    def __init__(
        self,
        part: Partition,
        read_id: str,
        files: list[DataFile],
        texts: list[tuple[DataFile, list[bytes], int]],
        dead: list[tuple[str, str, str]],
    ) -> None:
        self.part = part
        self.read_id = read_id
        self.files = files
        """Every file open when the batch was sealed: its size goes into the record."""
        self.texts = texts
        """(file, text to append, rows) for the files the batch writes to."""
        self.dead = dead

    def sizes(self) -> dict[str, int]:
        """Byte size of each file once the batch is written."""
        return {f.relpath: f.size for f in self.files}


class LeaseLostError(Exception):
    """The partition's lease is no longer ours: stop touching it at once."""


class Partition:
    """The state of one owned partition between commits."""

    def __init__(
        self,
        number: int,
        *,
        value: str,
        leases: Leases,
        root: Path,
        lock: Lock,
        clock: Callable[[], float],
        fds: OpenFiles | None = None,
    ) -> None:
        self.number = number
        self.value = value
        """Our lease value ``owner|epoch`` (the fencing token)."""
        self.leases = leases
        self.root = root
        self.lock = lock
        self.clock = clock
        self.fds = fds
        """The descriptor budget its files share (None: the process default)."""
        self.stream = leases.stream(number)
        self.render: Callable[[list[bytes]], Rendered] = render_gap if number == GAPS else render
        self.open: dict[str, DataFile] = {}
        """The files in use (sizes go into the next commit record), open descriptor or not."""
        self.record_files: dict[str, int] = {}
        self.committed_id = "0-0"
        self.read_id = "0-0"
        self.dead: list[tuple[str, str, str]] = []
        self.pending_since: float | None = None
        self.pending_rows = 0
        self.latest_day = ""
        self.duplicates = 0
        self.rows_committed = 0
        self.trades_committed = 0
        self.prices_committed = 0
        self.dead_committed = 0
        self.last_commit_ms = 0

    def recover(self) -> None:
        """Step 1: cut the files back to the commit record and resume after its last id."""
        self.abandon()
        record = self.leases.read(self.number)
        files: dict[str, int] = json.loads(record.files)
        now = {path: truncate(self.root, path, size, self.fds) for path, size in files.items()}
        # A file gone or shortened by hand is recorded again (by intent) at its real size.
        self.record_files = {path: size for path, size in now.items() if size > 0}
        changed = any(now[path] != size for path, size in files.items() if size > 0)
        if changed and not self.leases.intent(self.number, self.value, _json(self.record_files)):
            raise LeaseLostError(self.number)
        self.committed_id = self.read_id = record.last_id
        self.last_commit_ms = record.at_ms

    def abandon(self) -> None:
        """Drop everything not committed (files closed, queued text and dead letters gone)."""
        for f in self.open.values():
            try:
                f.close()
            except OSError as exc:
                log.warning("closing %s: %s", f.path, exc)
        self.open.clear()
        self.dead.clear()
        self.pending_since = None
        self.pending_rows = 0
        self.read_id = self.committed_id

    @property
    def dirty(self) -> bool:
        """Entries read but not committed."""
        return self.read_id != self.committed_id

    def take(self, entries: list[Entry]) -> None:
        """Step 2: queue the rows of entries read from the stream (in stream order)."""
        if not entries:
            return
        now = self.clock()
        opened = self.open
        rendering = self.render
        rows = 0
        for entry_id, fields in entries:
            try:
                out = rendering(fields)
            except EntryError as exc:
                self.dead.append((entry_id.decode(), str(exc), repr(fields)[:2000]))
                continue
            f = opened.get(out.path)
            if f is None:
                f = self._file(out.path, now)
            if f.add(out.key, out.text, out.rows):
                rows += out.rows
            else:
                self.duplicates += 1
        self.pending_rows += rows
        self.read_id = entries[-1][0].decode()
        if self.pending_since is None:
            self.pending_since = now

    def _file(self, path: str, now: float) -> DataFile:
        f = DataFile(self.root, path, now, self.fds)
        self.open[path] = f
        day = day_of_file(path)
        self.latest_day = max(day, self.latest_day)
        return f

    def seal(self) -> Batch:
        """Step 3 begins: hand everything read so far over as one batch to commit.

        Reading and rendering go on into fresh queues while the batch is written (by the
        writer's I/O thread) and committed.
        """
        texts = []
        for f in self.open.values():
            if f.pending:
                queued, rows = f.take_pending()
                texts.append((f, queued, rows))
        batch = Batch(self, self.read_id, list(self.open.values()), texts, self.dead)
        self.dead = []
        self.pending_since = None
        self.pending_rows = 0
        return batch

    def write(self, batch: Batch) -> list[DataFile]:
        """Steps 3a and 3b up to the write (I/O thread): intent for new files, then append.

        Returns the files written (to be made durable); OSError on disk trouble,
        LeaseLostError if the intent was refused.
        """
        new = [f for f, _, _ in batch.texts if f.relpath not in self.record_files]
        if new:
            files = dict(self.record_files)
            for f in new:
                files[f.relpath] = f.size
            if not self.leases.intent(self.number, self.value, _json(files)):
                raise LeaseLostError(self.number)
            self.record_files = files
        for f, texts, _ in batch.texts:
            f.write(texts)
        return [f for f, _, _ in batch.texts]

    def commit_call(self, batch: Batch, now_ms: int) -> tuple[list[str], list[Any]]:
        """Step 3c's script call, once the batch's files are durable (and still in place)."""
        for f, _, _ in batch.texts:
            f.check()
        return self.leases.commit_call(
            part=self.number,
            value=self.value,
            last_id=batch.read_id,
            files_json=_json(batch.sizes()),
            counts={f.relpath: rows for f, _, rows in batch.texts if rows},
            dead=batch.dead,
            now_ms=now_ms,
        )

    def committed(self, batch: Batch, now_ms: int) -> None:
        """Step 3c succeeded: the batch's last id is the committed position."""
        self.record_files = batch.sizes()
        for f, _, rows in batch.texts:
            kind = kind_of(f.relpath)
            if kind == TRADES:
                self.trades_committed += rows
            elif kind == PRICES:
                self.prices_committed += rows
            else:
                self.rows_committed += rows
            f.used_at = self.clock()
        self.dead_committed += len(batch.dead)
        self.committed_id = batch.read_id
        self.last_commit_ms = now_ms

    def close_idle(self, now: float, idle_s: float) -> int:
        """Forget files idle for ``idle_s`` or of a day before the latest seen; the count.

        Unlike an LRU close, the file leaves :attr:`open` (and the next record), which frees
        its dedup window; written to again, it is looked at afresh (tail, size). Only
        committed, durable files are idle, so nothing is lost either way.
        """
        closing = [
            f
            for f in self.open.values()
            if not f.pending
            and (now - f.used_at >= idle_s or day_of_file(f.relpath) < self.latest_day)
        ]
        for f in closing:
            f.close()
            del self.open[f.relpath]
        return len(closing)

    def release(self) -> None:
        """Close everything and let go of the file lock and the lease (after a commit)."""
        self.abandon()
        self.lock.release()
        self.leases.release(self.number, self.value)

    def drop(self) -> None:
        """The lease was lost: stop at once (nothing more is written, the lock is let go)."""
        self.abandon()
        self.lock.release()


def _json(files: dict[str, int]) -> str:
    return json.dumps(files, separators=(",", ":"), sort_keys=True)
