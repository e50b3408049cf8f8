"""The dedup window and its seeding from a file's tail (pure)."""

from __future__ import annotations

from pipeline.rows import BOOK_HEADER, TRADE_HEADER, book_rows, trade_row
from pipeline.schema import Recent, book_keys, trade_keys

T1 = "2026-03-02T10:00:00.000000+07:00"
T2 = "2026-03-02T10:00:01.000000+07:00"


def test_recent_is_bounded_and_reports_duplicates() -> None:
    window = Recent(3)
    assert window.add("a") and window.add("b") and not window.add("a")
    assert window.add("c") and window.add("d")
    assert "a" not in window and len(window) == 3
    assert window.add("a")  # fell out of the window: no longer recognised


def test_book_keys_from_a_tail_skip_header_and_partial_first_line() -> None:
    rows = (
        book_rows(T1, "BID", "5", T1, "1;1;100|2;1;100")[0]
        + book_rows(T2, "OFFER", "6", T2, "3;1;100")[0]
    )
    whole = BOOK_HEADER + rows
    assert book_keys("\n" + whole) == [("BID", "5", T1), ("OFFER", "6", T2)]
    cut = whole[len(BOOK_HEADER) + 10 :]  # starts inside the first row
    assert book_keys(cut) == [("BID", "5", T1), ("OFFER", "6", T2)]


def test_trade_keys() -> None:
    row = trade_row(
        time=T1, price="1", shares="100", action=1, trade_number=9, board=1, received=T1
    )
    assert trade_keys("\n" + TRADE_HEADER + row + row.replace(",9,", ",10,")) == ["9", "10"]
