"""The file layer: header on creation, appends, durability, truncation, dedup seeding, lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.rows import BOOK_HEADER, book_rows
from writer.files import DataFile, Lock, sync, truncate

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
