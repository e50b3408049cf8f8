"""The file layer: header, appends, durability, truncation, dedup seeding, lock, fd LRU."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import writer.files
from pipeline.rows import BOOK_HEADER, book_rows
from writer.files import DataFile, FlushError, Lock, OpenFiles, sync, truncate

T = "2026-03-02T10:00:00.000000+07:00"
PATH = "orderbook/2026-03-02_BBCA.csv"


def rows(seq: int) -> tuple[str, int]:
    return book_rows(T, "BID", str(seq), T, "8200;1;100|8175;2;300")


def test_new_file_gets_header_then_rows(data_dir: Path) -> None:
    f = DataFile(data_dir, PATH, 0.0)
    assert not f.path.exists() and f.size == 0
    text, n = rows(1)
    assert f.add(("BID", "1", T), text, n)
    assert not f.add(("BID", "1", T), text, n)  # duplicate dropped
    pieces, count = f.take_pending()
    assert count == 2 and not f.pending
    f.write(pieces)
    sync([f])
    f.check()
    assert f.path.read_text() == BOOK_HEADER + text
    assert f.size == f.path.stat().st_size
    f.close()


def test_reopened_file_remembers_what_it_holds(data_dir: Path) -> None:
    first = DataFile(data_dir, PATH, 0.0)
    for seq in range(1, 4):
        first.add(("BID", str(seq), T), *rows(seq))
    first.write(first.take_pending()[0])
    first.close()
    again = DataFile(data_dir, PATH, 0.0)
    assert again.size == first.size and not again.pending  # no second header
    assert not again.add(("BID", "2", T), *rows(2))
    assert again.add(("BID", "4", T), *rows(4))


def test_check_notices_a_removed_file(data_dir: Path) -> None:
    f = DataFile(data_dir, PATH, 0.0)
    f.write(f.take_pending()[0])
    f.path.unlink()
    with pytest.raises(FileNotFoundError):
        f.check()
    f.close()


def test_truncate_to_committed_size(data_dir: Path) -> None:
    path = data_dir / PATH
    path.parent.mkdir(parents=True)
    path.write_text(BOOK_HEADER + "partial,li")
    truncate(data_dir, PATH, len(BOOK_HEADER))
    assert path.read_text() == BOOK_HEADER
    truncate(data_dir, PATH, len(BOOK_HEADER) + 100)  # never grows a file
    assert path.read_text() == BOOK_HEADER
    truncate(data_dir, PATH, 0)  # created after the last commit: removed
    assert not path.exists()
    truncate(data_dir, PATH, 0)  # and already gone is fine


def test_lock_is_exclusive(data_dir: Path) -> None:
    one, two = Lock(data_dir, "partition3"), Lock(data_dir, "partition3")
    assert one.acquire()
    assert not two.acquire()
    one.release()
    assert two.acquire()
    two.release()


def test_many_files_are_made_durable_together(data_dir: Path) -> None:
    files = [DataFile(data_dir, f"orderbook/2026-03-02_T{n:03d}.csv", 0.0) for n in range(12)]
    for f in files:
        f.write(f.take_pending()[0])
    sync(files)  # one syncfs(2) per file system instead of twelve fdatasyncs
    assert all(not f.created and f.path.read_text() == BOOK_HEADER for f in files)
    for f in files:
        f.close()


# --- the LRU of descriptors ---------------------------------------------------------------


def book(n: int) -> str:
    return f"orderbook/2026-03-02_T{n:03d}.csv"


def append(f: DataFile, seq: int) -> bool:
    """Queue one snapshot and write it (unsynced); False if it was a duplicate."""
    if not f.add(("BID", str(seq), T), *rows(seq)):
        return False
    f.write(f.take_pending()[0])
    return True


def fds_in_use() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_open_descriptors_stay_within_the_bound(data_dir: Path) -> None:
    fds = OpenFiles(4)
    files = [DataFile(data_dir, book(n), 0.0, fds) for n in range(10)]
    before = fds_in_use()
    for batch in range(3):
        for n, f in enumerate(files):
            assert append(f, 100 * batch + n)
            # Three day files and the file system's anchor (see the sync test below).
            assert len(fds) <= 3 and fds_in_use() <= before + 4
        sync(files)
    assert fds.evictions == 27 and fds.opens == fds.evictions + len(fds)
    for n, f in enumerate(files):
        # Reopened twice, appended where it left off: one header, rows in order.
        assert f.path.read_text() == BOOK_HEADER + "".join(rows(100 * b + n)[0] for b in range(3))
        assert f.size == f.path.stat().st_size and not f.dirty
    fds.close()
    assert len(fds) == 0 and fds_in_use() == before


def test_an_lru_close_keeps_the_dedup_window_and_the_size(data_dir: Path) -> None:
    fds = OpenFiles(4)
    f = DataFile(data_dir, PATH, 0.0, fds)
    assert append(f, 1)
    sync([f])
    window, size = f.dedup, f.size
    for n in range(3):  # three other files push it out (one descriptor is the anchor)
        other = DataFile(data_dir, book(n), 0.0, fds)
        other.write(other.take_pending()[0])
    assert f.fd is None and len(fds) == 3
    assert f.dedup is window and f.size == size  # not seeded again, nothing forgotten
    assert not append(f, 1)  # still known as written
    assert append(f, 2)
    sync([f])
    assert f.path.read_text() == BOOK_HEADER + rows(1)[0] + rows(2)[0]


@pytest.mark.skipif(writer.files._syncfs is None, reason="no syncfs(2) here")
def test_a_descriptor_closed_before_the_sync_is_covered_by_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fds = OpenFiles(4)
    files = [DataFile(data_dir, book(n), 0.0, fds) for n in range(6)]
    for n, f in enumerate(files):
        assert append(f, n)  # one round, more files than descriptors, no sync in between
    assert fds.flushes == 0 and fds.evictions == 3  # 3 files + the file system's anchor
    assert [f.fd is None for f in files] == [True] * 3 + [False] * 3 and all(f.dirty for f in files)
    real, through = writer.files._syncfs, []
    assert real is not None

    def recording(fd: int) -> int:
        through.append(fd)
        return int(real(fd))

    monkeypatch.setattr(writer.files, "_syncfs", recording)
    sync(files)  # the round's one sync: syncfs needs no descriptor of the closed ones
    anchor = fds.anchor(files[0])
    assert anchor is not None and through == [anchor]
    assert os.path.samefile(f"/proc/self/fd/{anchor}", data_dir / "orderbook")
    assert not any(f.dirty or f.created for f in files)


def test_without_syncfs_a_file_not_yet_durable_is_synced_before_it_closes(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer.files, "_syncfs", None)
    fds = OpenFiles(4)
    files = [DataFile(data_dir, book(n), 0.0, fds) for n in range(6)]
    for n, f in enumerate(files):
        assert append(f, n)
    assert fds.flushes == 1 and fds.evictions == 3
    assert [f.fd is None for f in files] == [True] * 3 + [False] * 3
    assert not any(f.dirty for f in files[:3]) and all(f.dirty for f in files[3:])
    sync(files)  # the round's own sync covers the rest (fdatasync each)
    assert not any(f.dirty for f in files)


def test_without_syncfs_a_failed_sync_to_make_room_closes_nothing(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer.files, "_syncfs", None)
    fds = OpenFiles(4)
    files = [DataFile(data_dir, book(n), 0.0, fds) for n in range(4)]
    for f in files[:3]:
        assert append(f, 1)

    def failing(_: Any) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(writer.files, "sync", failing)
    with pytest.raises(FlushError):
        append(files[3], 1)
    # Still open and still dirty: the caller fails the whole round (writer.service).
    assert all(f.fd is not None and f.dirty for f in files[:3]) and files[3].fd is None


def test_out_of_descriptors_sheds_idle_files_and_retries_at_once(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fds = OpenFiles(100)
    files = [DataFile(data_dir, book(n), 0.0, fds) for n in range(8)]
    for f in files:
        assert append(f, 1)
    sync(files)
    real_open = os.open
    refused: list[str] = []

    def emfile_once(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        if not refused:
            refused.append(str(path))
            raise OSError(errno.EMFILE, "Too many open files", str(path))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", emfile_once)
    new = DataFile(data_dir, book(99), 0.0, fds)
    new.write(new.take_pending()[0])
    assert refused == [str(new.path)]
    # A quarter of the idle ones closed, the bound lowered to what was left: no second EMFILE.
    assert fds.sheds == 1 and [f.fd is None for f in files] == [True] * 2 + [False] * 6
    assert fds.bound == 6 + 1 and new.fd is not None  # (and the anchor)
    sync([new])
    assert new.path.read_text() == BOOK_HEADER


def test_out_of_descriptors_twice_is_an_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fds = OpenFiles(100)
    idle = DataFile(data_dir, book(1), 0.0, fds)
    idle.write(idle.take_pending()[0])
    sync([idle])

    def emfile(path: Any, *_: Any, **__: Any) -> int:
        raise OSError(errno.EMFILE, "Too many open files", str(path))

    monkeypatch.setattr(os, "open", emfile)
    f = DataFile(data_dir, PATH, 0.0, fds)
    with pytest.raises(OSError) as caught:  # the partition's disk-trouble path takes it
        f.write(f.take_pending()[0])
    assert caught.value.errno == errno.EMFILE and fds.sheds == 1 and f.fd is None


def test_a_file_removed_while_its_descriptor_was_closed_is_an_error(data_dir: Path) -> None:
    fds = OpenFiles(4)
    f = DataFile(data_dir, PATH, 0.0, fds)
    assert append(f, 1)
    sync([f])
    f.close()  # as the LRU does
    f.path.unlink()
    with pytest.raises(FileNotFoundError, match="removed"):
        append(f, 2)  # not a fresh file without a header under the old size
    assert not f.path.exists()
    f.path.write_text(BOOK_HEADER)  # replaced by hand: another size
    with pytest.raises(OSError, match="changed outside the writer"):
        append(f, 3)


def test_the_bound_is_half_the_raised_limit_less_the_locks() -> None:
    script = (
        "import resource; from writer.files import OpenFiles, open_files; "
        "f = OpenFiles.for_process(reserved=17); "
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], f.bound, open_files() is f)"
    )
    wrapped = f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512)); {script}"
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 512:
        pytest.skip("hard open-file limit below 512 here")
    out = subprocess.run(
        [sys.executable, "-c", wrapped],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent,
    ).stdout.split()  # fmt: skip
    assert out == ["512", str(512 // 2 - 17), "True"]
