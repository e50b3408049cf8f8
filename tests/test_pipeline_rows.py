"""CSV rows (pure): golden rows, units, exact lots, times in WIB, fast path == exact path."""

from __future__ import annotations

import csv
import io
import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import rows as rows_module
from pipeline.records import GapRecord
from pipeline.rows import (
    BOOK_HEADER,
    TRADE_HEADER,
    RowError,
    _decimal,
    _Memo,
    _plain,
    book_rows,
    fast_trade_row,
    figure,
    gap_row,
    lots_text,
    normalise_time,
    trade_row,
)

T = "2026-03-02T10:15:30.123456+07:00"
R = "2026-03-02T10:15:30.223456+07:00"


def test_golden_book_rows() -> None:
    text, rows = book_rows(
        T, "BID", "1234567", R, "8200;123;4567800|8175;88;1203400|8150;301;9876500"
    )
    assert rows == 3
    assert text == (
        f"{T},8200,45678,37455960000,BID,1,123,1234567,{R}\n"
        f"{T},8175,12034,9837795000,BID,2,88,1234567,{R}\n"
        f"{T},8150,98765,80493475000,BID,3,301,1234567,{R}\n"
    )
    parsed = list(csv.reader(io.StringIO(BOOK_HEADER + text)))
    assert parsed[0] == [
        "timestamp", "price", "lots", "total_value", "side", "level", "orders", "seq",
        "received_at",
    ]  # fmt: skip
    assert all(len(row) == 9 for row in parsed)


def test_odd_lots_are_exact_decimals_and_offer_side() -> None:
    text, rows = book_rows(T, "OFFER", "7", R, "8225;5;50|8250;7;120005|8275;1;1")
    assert rows == 3
    lines = text.splitlines()
    assert lines[0] == f"{T},8225,0.5,411250,OFFER,1,5,7,{R}"
    assert lines[1] == f"{T},8250,1200.05,990041250,OFFER,2,7,7,{R}"
    assert lines[2] == f"{T},8275,0.01,8275,OFFER,3,1,7,{R}"


def test_empty_parts_are_skipped_and_empty_side_has_no_rows() -> None:
    text, rows = book_rows(T, "BID", "1", R, "100;1;100||90;2;200|")
    assert rows == 2 and text.count("\n") == 2
    assert book_rows(T, "BID", "1", R, "") == ("", 0)


@pytest.mark.parametrize("levels", ["1;2", "a;1;100", "1;2;3;4|5;6", "1;2;-3", "１;1;100"])
def test_bad_level_text_raises(levels: str) -> None:
    with pytest.raises(RowError):
        book_rows(T, "BID", "1", R, levels)


@given(
    st.lists(
        st.tuples(st.integers(0, 10**7), st.integers(0, 10**5), st.integers(0, 10**10)),
        min_size=1,
        max_size=80,
    )
)
def test_fast_and_exact_paths_agree(levels: list[tuple[int, int, int]]) -> None:
    text = "|".join(f"{p};{o};{s}" for p, o, s in levels)
    out, rows = book_rows(T, "BID", "9", R, text)
    assert rows == len(levels)
    for line, (p, o, s) in zip(out.splitlines(), levels, strict=True):
        cells = line.split(",")
        assert cells[1] == str(p) and cells[6] == str(o)
        assert cells[3] == str(p * s)
        # lots = shares / 100 exactly, no float noise, no trailing zeros
        whole, frac = [*cells[2].split("."), ""][:2]
        assert int(whole) * 100 + int((frac or "0").ljust(2, "0")) == s
        assert not frac.endswith("0")


def test_lots_text() -> None:
    assert lots_text(4476200) == "44762"
    assert lots_text(4476250) == "44762.5"
    assert lots_text(4476201) == "44762.01"
    assert lots_text(0) == "0"


def test_times_are_normalised_to_wib_microseconds() -> None:
    assert normalise_time(T) == T
    assert normalise_time("2026-03-02T16:59:59.9Z") == "2026-03-02T23:59:59.900000+07:00"
    assert normalise_time("2026-03-02T17:00:00.1+00:00") == "2026-03-03T00:00:00.100000+07:00"
    assert normalise_time("2026-03-02T10:15:30.123456789+07:00") == T
    with pytest.raises(RowError):
        normalise_time("yesterday")


def test_trade_rows() -> None:
    kw = {"time": T, "trade_number": 55, "received": R}
    assert trade_row(price="3300", shares="500", action=1, board=1, **kw) == (  # type: ignore[arg-type]
        f"{T},3300,5,1650000,BUY,55,RG,{R}\n"
    )
    assert trade_row(price="3300", shares="50", action=2, board=3, **kw) == (  # type: ignore[arg-type]
        f"{T},3300,0.5,165000,SELL,55,NG,{R}\n"
    )
    assert trade_row(price="99.5", shares="200", action=0, board=9, **kw) == (  # type: ignore[arg-type]
        f"{T},99.5,2,19900,,55,,{R}\n"
    )
    assert TRADE_HEADER.startswith("timestamp,price,lots,total_value,side,trade_number,board,")
    with pytest.raises(RowError):
        trade_row(price="nan", shares="1", action=0, board=1, **kw)  # type: ignore[arg-type]


def test_gap_row_quotes_the_ticker_list() -> None:
    gap = GapRecord(T, R, "disconnect", ("BBCA", "TLKM"), "ing-1", "socket closed")
    row = gap_row(gap)
    assert next(csv.reader(io.StringIO(row))) == [
        T,
        R,
        "disconnect",
        "BBCA,TLKM",
        "ing-1",
        "socket closed",
    ]


def test_level_memo_and_direct_paths_agree_and_switch() -> None:
    rng = random.Random(3)
    texts = [
        "|".join(
            f"{rng.randint(1, 9999)};{rng.randint(1, 500)};{rng.randint(1, 10**6) * 100}"
            for _ in range(60)
        )
        for _ in range(3 * _Memo.PERIOD)
    ]  # fmt: skip  (every level new: the memo only misses)
    memo = rows_module._memo
    assert memo.on
    outputs = [book_rows(T, "OFFER", "1", R, text) for text in texts]
    assert not memo.on  # switched off by its miss rate
    memo.on = True
    again = [book_rows(T, "OFFER", "1", R, text) for text in texts[: _Memo.PERIOD - 1]]
    assert again == outputs[: _Memo.PERIOD - 1]
    memo.on = False
    direct = [book_rows(T, "OFFER", "1", R, text) for text in texts[:50]]
    assert direct == outputs[:50]
    memo.off_for = 1
    book_rows(T, "OFFER", "1", R, texts[0])
    assert memo.on  # tried again after a while


def _exact_figure(text: bytes) -> str | None:
    """What price_row writes for a wire number (None: it refuses it), the Decimal way."""
    try:
        return _plain(_decimal(repr(float(text.decode()))))
    except (RowError, ValueError):
        return None


wide_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1e6),
    st.integers(0, 2**80).map(float),
    st.sampled_from([0.0, -0.0, 1e-5, 0.0001, 0.1, 99.5, 1e15, 1e16 - 2, 1e16, 2.0**53 + 2]),
)


@given(value=wide_floats, form=st.sampled_from(["repr", "number", "str"]))
def test_figure_is_the_decimal_form_of_the_double(value: float, form: str) -> None:
    if form == "number":  # as records.py writes: whole numbers without ".0"
        text = str(int(value)) if value.is_integer() else repr(value)
    else:
        text = repr(value) if form == "repr" else f"{value:f}"
    fast = figure(text.encode())
    if fast is not None:
        assert fast == _exact_figure(text.encode())
    elif 0 <= value < 1e16 and (value.is_integer() or 1e-4 <= value) and repr(value)[0] != "-":
        raise AssertionError(f"{text!r} should not need the general path")


@given(text=st.one_of(st.binary(max_size=20), st.integers(0, 10**30).map(lambda n: b"%d" % n)))
def test_figure_of_any_text_agrees_or_declines(text: bytes) -> None:
    fast = figure(text)
    if fast is not None:
        assert fast == _exact_figure(text)


@given(
    price=st.one_of(st.integers(0, 10**6), st.integers(0, 10**16)),
    shares=st.one_of(st.integers(0, 10**9), st.integers(0, 10**16)),
    action=st.integers(0, 9),
    board=st.integers(0, 9),
)
def test_integer_trade_rows_are_the_decimal_rows(
    price: int, shares: int, action: int, board: int
) -> None:
    fast = fast_trade_row(T, b"%d" % price, b"%d" % shares, b"%d" % action, "55", b"%d" % board, R)
    exact = trade_row(
        time=T, price=str(price), shares=str(shares), action=action, trade_number=55,
        board=board, received=R,
    )  # fmt: skip
    if fast is not None:
        assert fast == exact
    elif price < 10**15 and shares < 10**15:
        assert price * shares >= 10**28  # only a product Decimal would round is declined
    # lots and the total stay exact: lots × 100 is the shares, total the product.
    cells = exact.split(",")
    assert Decimal(cells[2]) * 100 == shares
    if price * shares < 10**28:
        assert cells[3] == str(price * shares)
