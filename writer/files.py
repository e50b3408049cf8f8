"""The day files on disk: append, make durable, truncate back to a committed size, lock.

Shared by every kind of file (order book, trades, gaps), so the commit protocol in
:mod:`writer.partition` has one file layer. Rows wait in memory (encoded, one piece per
entry) until the partition commits; then each touched file gets its batch in a few
``writev`` calls (in the writer's I/O thread) and the files are made durable together
(:func:`sync`). Nothing here talks to Redis.

A new file is created with its header as the first pending text, so a file on disk always
starts with its header, and (after recovery) ends with a complete line.

Open descriptors are bounded (:class:`OpenFiles`): a live market touches every ticker's files
every few seconds, so an idle timeout alone would hold one descriptor per file (about 1,800 for
IDX's 900 tickers, past the common limit of 1,024). The LRU closes only the descriptor; the
:class:`DataFile` (committed size, dedup window) stays, and reopening appends where it left off.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import resource
import threading
from collections import OrderedDict
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
DATA_SHARE = 2
"""Day files may use 1/DATA_SHARE of the open-file limit; the rest is for sockets, logs, locks."""
MIN_BOUND = 4
"""Never fewer open day files than this, however low the limit (progress over efficiency)."""
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)


class DataFile:
    """One day file of one partition: committed size on disk, pending text, dedup window.

    The object outlives its descriptor: :class:`OpenFiles` may close ``fd`` between batches
    (least recently used first) and :meth:`write` reopens it, so the size bookkeeping and the
    dedup window are seeded once, when the object is made, and never lost to an LRU close.
    """

    __slots__ = ("created", "dedup", "dev", "dirty", "fd", "fds", "ino", "path", "pending",
                 "pending_rows", "relpath", "size", "used_at")  # fmt: skip

    def __init__(self, root: Path, relpath: str, now: float, fds: OpenFiles | None = None) -> None:
        """Look at the file (without creating it) and seed the dedup window from its tail."""
        self.relpath = relpath
        self.path = root / relpath
        self.fds = fds if fds is not None else open_files()
        self.fd: int | None = None
        self.ino = self.dev = 0
        self.created = False
        self.dirty = False
        """Written since it was last made durable (by :func:`sync`), descriptor open or not."""
        self.pending: list[bytes] = []
        self.pending_rows = 0
        self.used_at = now
        kind = kind_of(relpath)
        try:
            self.size = self.path.stat().st_size
        except FileNotFoundError:
            self.size = 0
        tail = _tail(self.path, self.size, self.fds) if self.size else ""
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
        """Append ``pieces`` with one writev (creating the file and its folder if needed).

        Reopens the file if the LRU closed it. Raises :class:`FlushError` if making room
        meant syncing other files and that failed.
        """
        # Under the LRU's lock: no other thread may close this descriptor mid-write.
        with self.fds.lock:
            fd = self.fds.use(self)
            self.dirty = True
            # writev of the pieces as they are: one big join would allocate (and page-fault
            # in) tens of MB per batch, which costs more than the rows themselves.
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

    def open(self) -> int:
        """Open the descriptor (for :meth:`OpenFiles.use`, which keeps the bound).

        Only a file expected to be new (size 0, header pending) is created. A file that holds
        committed bytes must still be there, as long as we left it: a file removed, replaced
        or changed by hand while its descriptor was closed is an error (as :meth:`check`
        reports one removed while open), never a fresh file without a header under an old size.
        """
        folder = self.path.parent
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        existed = True
        if self.size == 0:
            if not folder.is_dir():
                make_dirs(folder, self.fds)
            existed = self.path.exists()
            flags |= os.O_CREAT
        try:
            fd = self.fds.open(self.path, flags, 0o644)
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT, "file removed while closed", str(self.path)
            ) from None
        stat = os.fstat(fd)
        if stat.st_size != self.size or (self.ino and stat.st_ino != self.ino):
            os.close(fd)
            raise OSError(
                errno.ESTALE,
                f"file changed outside the writer ({stat.st_size} bytes, {self.size} expected)",
                str(self.path),
            )
        self.fd = fd
        self.created = self.created or not existed
        self.ino, self.dev = stat.st_ino, stat.st_dev
        return fd

    def check(self) -> None:
        """OSError(ENOENT) if the file was removed or replaced since it was opened."""
        try:
            same = self.path.stat().st_ino == self.ino
        except FileNotFoundError:
            same = False
        if not same:
            raise FileNotFoundError(errno.ENOENT, "file removed while open", str(self.path))

    def close(self) -> None:
        """Close the descriptor; the object (size, dedup window, queued text) stays usable.

        Bytes written but not yet durable stay ``dirty``: the round's :func:`sync` still makes
        them durable (syncfs needs no descriptor of the file), or the partition abandons them
        and recovery cuts the file back.
        """
        with self.fds.lock:
            if self.fd is not None:
                fd, self.fd = self.fd, None
                self.fds.forget(self)
                os.close(fd)


class FlushError(OSError):
    """Making room for a descriptor meant syncing files, and that failed (no syncfs only).

    The files synced may belong to any partition written in the same round, so none of that
    round's batches may be committed (a second fsync could report success for lost bytes).
    """


class OpenFiles:
    """The process's open day-file descriptors: an LRU kept under a bound.

    The bound comes from ``RLIMIT_NOFILE`` (:meth:`for_process`): 1/``DATA_SHARE`` of the
    limit, less the descriptors reserved for lock files; it also covers one *anchor* per
    file system, a directory descriptor opened before the first write there and kept. Opening
    past the bound closes the least recently used descriptor, even one whose bytes are not
    durable yet: the round's :func:`sync` is one syncfs(2) through the anchor, which covers
    files without a descriptor and reports every write-back error on that file system since
    the anchor was opened. So a round touching more files than the bound costs reopens, not
    extra syncs. Without syncfs (not Linux), such a file is synced before it is closed (all
    of them at once; :class:`FlushError` if that fails).

    If an open still fails with EMFILE/ENFILE (something else holds more than its share),
    idle descriptors are shed, the bound is lowered to what is left, and the open is retried
    at once; a second failure is raised (the partition's disk-trouble path).

    Thread-safe: the I/O thread writes and syncs under :attr:`lock`; the main thread closes
    files (and sheds, rarely) under it too.
    """

    def __init__(self, bound: int) -> None:
        self.bound = max(MIN_BOUND, bound)
        """Most descriptors open at once: day files and anchors."""
        self.lock = threading.RLock()
        self._lru: OrderedDict[DataFile, None] = OrderedDict()
        self._anchors: dict[int, int] = {}  # st_dev → a descriptor on that file system
        self.opens = 0
        """Descriptors opened (first opens and reopens), for tests and diagnostics."""
        self.evictions = 0
        """Descriptors closed to keep the bound."""
        self.flushes = 0
        """Syncs forced by an eviction of a file not yet durable (without syncfs only)."""
        self.sheds = 0
        """EMFILE/ENFILE recoveries."""

    @classmethod
    def for_process(cls, reserved: int = 0) -> OpenFiles:
        """Raise the soft open-file limit to the hard one; the bound from the result.

        ``reserved`` descriptors (the partition lock files, held as long as the partitions)
        come out of the day files' share. The result becomes the process default
        (:func:`open_files`), so every open in this module gets the EMFILE retry.
        """
        limit = raise_open_file_limit()
        files = cls(limit // DATA_SHARE - reserved)
        global _default  # noqa: PLW0603 - the limit is per process, so is its budget
        _default = files
        return files

    def __len__(self) -> int:
        """Day-file descriptors open now."""
        return len(self._lru)

    def use(self, f: DataFile) -> int:
        """The descriptor of ``f``, opened (within the bound) if needed; marks it recent."""
        with self.lock:
            if f.fd is not None:
                self._lru.move_to_end(f)
                return f.fd
            while self._lru and len(self._lru) + len(self._anchors) >= self.bound:
                self._evict()
            fd = f.open()
            self._lru[f] = None
            self.opens += 1
            if f.dev not in self._anchors:  # before the first byte is written there
                self._anchors[f.dev] = self._anchor(f)
            return fd

    def anchor(self, f: DataFile) -> int | None:
        """The descriptor to syncfs ``f``'s file system through (None before ``f`` was opened)."""
        return self._anchors.get(f.dev) if f.ino else None

    def _anchor(self, f: DataFile) -> int:
        fd = self.open(f.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if os.fstat(fd).st_dev != f.dev:  # the file is a mount of its own: anchor on it
            os.close(fd)
            fd = self.open(f.path, os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def close(self) -> None:
        """Close every descriptor, anchors too (at the end, with nothing left to commit)."""
        with self.lock:
            for f in list(self._lru):
                f.close()
            for fd in self._anchors.values():
                os.close(fd)
            self._anchors.clear()

    def forget(self, f: DataFile) -> None:
        """``f``'s descriptor was closed (by :meth:`DataFile.close`)."""
        with self.lock:
            self._lru.pop(f, None)

    def open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        """``os.open``, retried once at once after shedding idle descriptors on EMFILE/ENFILE."""
        try:
            return os.open(path, flags, mode)
        except OSError as exc:
            if exc.errno not in _OUT_OF_FDS or not self.shed(exc):
                raise
        return os.open(path, flags, mode)  # a second failure is a real error: raised

    def shed(self, cause: OSError) -> int:
        """Out of descriptors: close a quarter of the idle ones and lower the bound; the count.

        Files not yet durable are closed too where syncfs will make them durable anyway (as
        for an eviction), never otherwise.
        """
        with self.lock:
            idle = [f for f in self._lru if _closable(f)]
            victims = idle[: max(1, len(idle) // 4)]
            for f in victims:
                f.close()
            if victims:
                self.sheds += 1
                self.bound = max(MIN_BOUND, len(self._lru) + len(self._anchors))
                log.warning(
                    "out of file descriptors (%s): closed %d idle day files, at most %d open "
                    "from now on",
                    os.strerror(cause.errno or 0),
                    len(victims),
                    self.bound,
                )
            return len(victims)

    def _evict(self) -> None:
        victim = next(iter(self._lru))
        if not _closable(victim):
            # Sync every file written since the last sync, not just this one: they are all
            # due for it, and the next evictions are then plain closes.
            self.flushes += 1
            try:
                sync([f for f in self._lru if f.dirty])
            except OSError as exc:
                raise FlushError(exc.errno, f"sync to make room: {exc.strerror}") from exc
        victim.close()
        self.evictions += 1


def _closable(f: DataFile) -> bool:
    """May ``f``'s descriptor close now? Not if bytes would wait for a sync that needs it."""
    return not f.dirty or _syncfs is not None


_default: OpenFiles | None = None


def open_files() -> OpenFiles:
    """The process's :class:`OpenFiles` (sized from the current limit unless set up already)."""
    global _default  # noqa: PLW0603 - one budget per process, like the limit it divides
    if _default is None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = soft if soft != resource.RLIM_INFINITY else _nr_open()
        _default = OpenFiles(limit // DATA_SHARE)
    return _default


def raise_open_file_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (as far as allowed); the soft limit.

    The common default soft limit of 1,024 is an accident of history (select(2)'s fd sets);
    the hard limit is what the administrator allows. The writer never uses select(2)
    (redis-py waits with poll(2)), so descriptors past 1,024 are fine.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else _nr_open()
    if soft == resource.RLIM_INFINITY or soft >= target:
        return target if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def _nr_open() -> int:
    # With an unlimited hard limit, Linux still caps descriptors at fs.nr_open.
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return 1 << 20


def _tail(path: Path, size: int, fds: OpenFiles) -> str:
    start = max(0, size - TAIL_BYTES)
    try:
        fd = fds.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, size - start, start)
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("cannot read the tail of %s for dedup: %s", path, exc)
        return ""
    text = data.decode(errors="replace")
    # From offset 0 the first line is the header; otherwise it may be cut: either way skipped.
    return text if start else "\n" + text


def make_dirs(folder: Path, fds: OpenFiles | None = None) -> None:
    """Create ``folder`` (and parents) durably: each new directory's parent is fsynced."""
    missing = []
    current = folder
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
        sync_dir(directory.parent, fds)


def sync_dir(folder: Path, fds: OpenFiles | None = None) -> None:
    """fsync a directory, so the names created in it survive a crash."""
    fd = (fds or open_files()).open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
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
    """Make every written file durable, with the directory entries of the new ones.

    Many files, or any whose descriptor the LRU closed: one syncfs(2) per file system,
    through the :class:`OpenFiles` anchor opened before the first write there (Linux ≥ 5.8
    reports every write-back error since through it), instead of one fdatasync each, which
    costs a journal commit apiece. Few files, all open: fdatasync each (the file size is part
    of what it flushes), then fsync the new ones' directories.
    """
    files = list(files)
    with contextlib.ExitStack() as held:
        # No descriptor may be closed under us (the LRU closes only under this lock).
        for lock in {id(f.fds): f.fds.lock for f in files}.values():
            held.enter_context(lock)
        # Closed and clean: made durable before (or abandoned, then never passed here).
        todo = [f for f in files if f.fd is not None or f.dirty]
        if not todo:
            return
        closed = any(f.fd is None for f in todo)
        if _syncfs is not None and (closed or len(todo) >= SYNCFS_FROM):
            through: dict[int, int | None] = {}  # one per file system
            for f in todo:
                if f.dev not in through:
                    anchor = f.fds.anchor(f)
                    through[f.dev] = anchor if anchor is not None else f.fd
            for fd in through.values():
                if fd is None or _syncfs(fd) != 0:
                    # (No anchor cannot happen: one is opened before any write on its file
                    # system. Were it so, failing the round is the safe answer.)
                    code = errno.EBADF if fd is None else ctypes.get_errno()
                    raise OSError(code, os.strerror(code))
        else:
            for f in todo:
                if f.fd is None:  # cannot happen: without syncfs only durable files close
                    raise OSError(errno.EBADF, "written file closed before its sync", f.path)
                os.fdatasync(f.fd)
            for folder in {f.path.parent for f in todo if f.created}:
                sync_dir(folder, todo[0].fds)
        for f in todo:
            f.created = False
            f.dirty = False


def truncate(root: Path, relpath: str, size: int, fds: OpenFiles | None = None) -> int:
    """Cut a file back to its committed ``size`` (0: remove it — it was never committed).

    Returns the size the file has now (0 if it is gone). Only a file changed by hand can be
    shorter than its committed size, or missing: that is logged, and the smaller size is
    what the next commit builds on.
    """
    fds = fds or open_files()
    path = root / relpath
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        if size:
            log.error("%s: committed %d bytes but the file is gone (removed by hand?)", path, size)
        return 0
    if size == 0:
        path.unlink()
        sync_dir(path.parent, fds)
        log.info("%s: removed, it was never committed", relpath)
        return 0
    if actual > size:
        fd = fds.open(path, os.O_WRONLY | os.O_CLOEXEC)
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

    Its descriptor is held as long as the partition, outside the LRU (closing it would drop
    the lock): :meth:`OpenFiles.for_process` reserves one per partition.
    """

    def __init__(self, root: Path, name: str, fds: OpenFiles | None = None) -> None:
        self.path = Layout(root).lock(name)
        self.fds = fds
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False if another process holds it."""
        if self.fd is not None:
            return True
        fds = self.fds or open_files()
        if not self.path.parent.is_dir():
            make_dirs(self.path.parent, fds)
        fd = fds.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
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
