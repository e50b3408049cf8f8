"""The day files on disk: append, make durable, truncate back to a committed size, lock.

Shared by every kind of file (order book, trades, gaps), so the commit protocol in
:mod:`writer.partition` has one file layer. Rows wait in memory (encoded, one piece per
entry) until the partition commits; then each touched file gets its batch in a few
``writev`` calls (in the writer's I/O thread) and the files are made durable together
(:func:`sync`). Nothing here talks to Redis.

A new file is created with its header as the first pending text, so a file on disk always
starts with its header, and (after recovery) ends with a complete line.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from pipeline.layout import Layout, kind_of
from pipeline.schema import HEADERS, WINDOWS, DedupKey, Recent, tail_keys

log = logging.getLogger(__name__)

TAIL_BYTES = 512 * 1024
"""How much of a file's end seeds its dedup window (~80 snapshots of 60 levels)."""
IOV_MAX = min(1024, os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 16)
"""Buffers per writev(2)."""
SYNCFS_FROM = 8
"""With this many files to make durable, one syncfs(2) beats one fdatasync each."""


class DataFile:
    """One day file of one partition: committed size on disk, pending text, dedup window."""

    __slots__ = ("created", "dedup", "dev", "fd", "ino", "path", "pending", "pending_rows",
                 "relpath", "size", "used_at")  # fmt: skip

    def __init__(self, root: Path, relpath: str, now: float) -> None:
        """Look at the file (without creating it) and seed the dedup window from its tail."""
        self.relpath = relpath
        self.path = root / relpath
        self.fd: int | None = None
        self.ino = self.dev = 0
        self.created = False
        self.pending: list[bytes] = []
        self.pending_rows = 0
        self.used_at = now
        kind = kind_of(relpath)
        try:
            self.size = self.path.stat().st_size
        except FileNotFoundError:
            self.size = 0
        tail = _tail(self.path, self.size) if self.size else ""
        window = WINDOWS.get(kind)
        self.dedup = None if window is None else Recent(window, tail_keys(kind, tail))
        if self.size == 0:
            self.pending.append(HEADERS[kind].encode())

    def add(self, key: DedupKey, text: str, rows: int) -> bool:
        """Queue rows unless ``key`` was written lately (False: a duplicate, dropped)."""
        if key is not None and self.dedup is not None and not self.dedup.add(key):
            return False
        # Encoded here, in the reading thread: the I/O thread then runs without the GIL.
        self.pending.append(text.encode())
        self.pending_rows += rows
        return True

    def take_pending(self) -> tuple[list[bytes], int]:
        """Hand the queued text and its row count over (to be written), leaving none queued."""
        texts, rows = self.pending, self.pending_rows
        self.pending = []
        self.pending_rows = 0
        return texts, rows

    def write(self, pieces: list[bytes]) -> None:
        """Append ``pieces`` with one writev (creating the file and its folder if needed)."""
        if self.fd is None:
            self._open()
        fd = self.fd
        assert fd is not None
        # writev of the pieces as they are: one big join would allocate (and page-fault in)
        # tens of MB per batch, which costs more than the rows themselves.
        for start in range(0, len(pieces), IOV_MAX):
            chunk = pieces[start : start + IOV_MAX]
            total = sum(map(len, chunk))
            written = os.writev(fd, chunk)
            self.size += written
            if written < total:  # short write (disk full?): finish it, or raise the reason
                rest = memoryview(b"".join(chunk))[written:]
                while rest:
                    done = os.write(fd, rest)
                    self.size += done
                    rest = rest[done:]

    def _open(self) -> None:
        folder = self.path.parent
        if not folder.is_dir():
            make_dirs(folder)
        existed = self.path.exists()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self.created = not existed
        stat = os.fstat(self.fd)
        self.ino, self.dev = stat.st_ino, stat.st_dev

    def check(self) -> None:
        """OSError(ENOENT) if the file was removed or replaced since it was opened."""
        try:
            same = self.path.stat().st_ino == self.ino
        except FileNotFoundError:
            same = False
        if not same:
            raise FileNotFoundError(errno.ENOENT, "file removed while open", str(self.path))

    def close(self) -> None:
        """Close the descriptor (queued text, if any, is dropped: it was never committed)."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def _tail(path: Path, size: int) -> str:
    start = max(0, size - TAIL_BYTES)
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            data = handle.read(size - start)
    except OSError as exc:
        log.warning("cannot read the tail of %s for dedup: %s", path, exc)
        return ""
    text = data.decode(errors="replace")
    # From offset 0 the first line is the header; otherwise it may be cut: either way skipped.
    return text if start else "\n" + text


def make_dirs(folder: Path) -> None:
    """Create ``folder`` (and parents) durably: each new directory's parent is fsynced."""
    missing = []
    current = folder
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
        sync_dir(directory.parent)


def sync_dir(folder: Path) -> None:
    """fsync a directory, so the names created in it survive a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        func = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


_syncfs = _load_syncfs()


def sync(files: Iterable[DataFile]) -> None:
    """Make every flushed file durable, with the directory entries of the new ones.

    Many files: one syncfs(2) on their file system (Linux ≥ 5.8 reports write-back errors
    through it) instead of one fdatasync each, which costs a journal commit apiece. Few files:
    fdatasync each (the file size is part of what it flushes), then fsync the new ones'
    directories.
    """
    todo = [f for f in files if f.fd is not None]
    if not todo:
        return
    if _syncfs is not None and len(todo) >= SYNCFS_FROM:
        for fd in {f.dev: f.fd for f in todo}.values():  # one per file system
            if _syncfs(fd) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code))
    else:
        for f in todo:
            assert f.fd is not None
            os.fdatasync(f.fd)
        for folder in {f.path.parent for f in todo if f.created}:
            sync_dir(folder)
    for f in todo:
        f.created = False


def truncate(root: Path, relpath: str, size: int) -> int:
    """Cut a file back to its committed ``size`` (0: remove it — it was never committed).

    Returns the size the file has now (0 if it is gone). Only a file changed by hand can be
    shorter than its committed size, or missing: that is logged, and the smaller size is
    what the next commit builds on.
    """
    path = root / relpath
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        if size:
            log.error("%s: committed %d bytes but the file is gone (removed by hand?)", path, size)
        return 0
    if size == 0:
        path.unlink()
        sync_dir(path.parent)
        log.info("%s: removed, it was never committed", relpath)
        return 0
    if actual > size:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        log.info("%s: truncated %d uncommitted bytes", relpath, actual - size)
        return size
    if actual < size:
        log.error("%s: %d bytes on disk, %d committed (changed by hand?)", path, actual, size)
    return actual


class Lock:
    """An exclusive flock on ``DATA_DIR/.locks/NAME.lock``: the file-level fence.

    The Redis lease decides who owns a partition and fences its commits; this lock makes sure
    a writer that lost its lease but is still running (paused, partitioned from Redis) has
    closed the partition's files before the next owner truncates and appends to them. The
    kernel drops it when the holder dies, so kill -9 never leaves it behind.
    """

    def __init__(self, root: Path, name: str) -> None:
        self.path = Layout(root).lock(name)
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False if another process holds it."""
        if self.fd is not None:
            return True
        if not self.path.parent.is_dir():
            make_dirs(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        """Drop the lock."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)
