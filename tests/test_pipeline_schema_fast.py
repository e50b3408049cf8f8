"""Trade and LivePrice entries: the writer's fast paths render exactly as the general path."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import schema
from pipeline.layout import PRICES, TRADES
from pipeline.records import PriceRecord, TradeRecord
from pipeline.schema import HEADERS, EntryError, Rendered, render, render_general, tail_keys

TIME = "2026-03-02T10:15:30.123000+07:00"
RECEIVED = "2026-03-02T10:15:30.200000+07:00"

Outcome = tuple[str, Rendered | str]


def raw(fields: dict[str, str]) -> list[bytes]:
    out: list[bytes] = []
    for name, value in fields.items():
        out += [name.encode(), value.encode()]
    return out


def outcome(render_with: object, fields: list[bytes]) -> Outcome:
    """("ok", the rendering) or ("error", the EntryError's message)."""
    assert callable(render_with)
    try:
        return "ok", render_with(fields)
    except EntryError as exc:
        return "error", str(exc)


def same(fields: list[bytes]) -> Outcome:
    """Render both ways, insist on the same outcome, and return it."""
    fast = outcome(render, fields)
    assert fast == outcome(render_general, fields), fields
    return fast


# Wide numbers: whole and fractional, zero, tiny, beyond 2**53 and 10**28, negative, not finite.
numbers = st.one_of(
    st.integers(0, 10**6).map(float),
    st.integers(0, 10**17).map(float),
    st.integers(0, 2**70).map(float),
    st.floats(min_value=0, max_value=1e9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-7, 0.0001, 99.5, 8200.4567, 1e15, 1e16, 9.99e27, 1e300]),
)
# Mostly valid codes, times and sources, so that the numbers decide most outcomes.
codes = st.one_of(
    st.just("BBCA"),
    st.sampled_from(["GOTO", "LQ45", "BBCA-W", "bbca", "BB CA", "ÄBCD", "2BBCA"]),
)
times = st.one_of(
    st.just(TIME),
    st.sampled_from(["2026-03-02T17:00:00.5Z", "2026-03-02T10:15:30+07:00", "later", "２０２６"]),
)
sources = st.one_of(st.just("ing-1"), st.sampled_from(["", "ingé"]))


@st.composite
def trades(draw: st.DrawFn) -> TradeRecord:
    return TradeRecord(
        code=draw(codes),
        trade_number=draw(st.one_of(st.integers(0, 10**9), st.integers(-3, 10**20))),
        price=draw(numbers),
        shares=draw(numbers),
        action=draw(st.one_of(st.integers(0, 2), st.integers(-1, 12))),
        board=draw(st.one_of(st.integers(1, 3), st.integers(-1, 12))),
        value=draw(numbers),
        time=draw(times),
        received=draw(times),
        source=draw(sources),
    )


@st.composite
def prices(draw: st.DrawFn) -> PriceRecord:
    last, open_, high, low, previous, shares, value, frequency, average, fbuy, fsell = (
        draw(numbers) for _ in range(11)
    )
    return PriceRecord(
        draw(codes),
        last,
        open_,
        high,
        low,
        previous,
        shares,
        value,
        frequency,
        average,
        fbuy,
        fsell,
        sequence=draw(st.one_of(st.none(), st.integers(-5, 10**20))),
        time=draw(times),
        received=draw(times),
        source=draw(sources),
    )


def typical_trade(number: int = 77) -> TradeRecord:
    return TradeRecord(
        "BBCA", number, 8200.0, 1_500.0, 1, 1, 12_300_000.0, TIME, RECEIVED, "ing-1"
    )  # fmt: skip


def typical_price(sequence: int | None = None) -> PriceRecord:
    return PriceRecord(
        "BBCA", 8225.0, 8175.0, 8250.0, 8150.0, 8175.0, 1_234_550.0, 10_123_450_000.0, 321.0,
        10_123_450_000.0 / 1_234_550.0, 400_000.0, 350_050.0, sequence, TIME, RECEIVED, "ing-1",
    )  # fmt: skip


def test_usual_entries_take_the_fast_paths() -> None:
    assert schema._fast_trade(raw(typical_trade().fields())) is not None
    assert schema._fast_price(raw(typical_price().fields())) is not None
    assert schema._fast_price(raw(typical_price(sequence=42).fields())) is not None
    trade = same(raw(typical_trade().fields()))
    assert trade == (
        "ok",
        Rendered(
            "trades/2026-03-02_BBCA.csv", "77", f"{TIME},8200,15,12300000,BUY,77,RG,{RECEIVED}\n", 1
        ),
    )
    price = same(raw(typical_price(sequence=42).fields()))
    assert price[0] == "ok" and isinstance(price[1], Rendered)
    assert price[1].key == "#42"
    assert price[1].text == (
        f"{TIME},8225,8175,8250,8150,8175,12345.5,10123450000,321,8200.113401644323,400000,"
        f"350050,{RECEIVED},42\n"
    )


@settings(max_examples=400, deadline=None)
@given(record=trades())
def test_trade_fast_path_is_the_general_path(record: TradeRecord) -> None:
    result = same(raw(record.fields()))
    if result[0] == "ok":
        assert isinstance(result[1], Rendered)
        # The duplicate window rebuilt from the file's tail knows exactly this key.
        assert tail_keys(TRADES, "\n" + HEADERS[TRADES] + result[1].text) == [result[1].key]


@settings(max_examples=400, deadline=None)
@given(record=prices())
def test_price_fast_path_is_the_general_path(record: PriceRecord) -> None:
    result = same(raw(record.fields()))
    if result[0] == "ok":
        assert isinstance(result[1], Rendered)
        assert tail_keys(PRICES, "\n" + HEADERS[PRICES] + result[1].text) == [result[1].key]


# What a corrupted or foreign-written field may hold: texts int() and float() read in ways a
# plain digit check does not (signs, spaces, underscores, exponents, Unicode digits), and
# bytes that are not UTF-8 at all.
ODD_VALUES = [
    b"", b"0", b"00", b"007", b"-0", b"-1", b"+5", b" 12", b"12 ", b"1_000", b"1e3", b"1E+30",
    b"nan", b"inf", b"-inf", b"8200.0", b"8200.50", b"0.00001", b"1" * 15, b"1" * 16,
    b"12345678901234567", b"9" * 30, "\u0661\u0662".encode(), "\u00b2".encode(), b"\xff\xfe",
    b"b", b"t", b"p", b"3", b"9", b"10", b"BBCA", b"B", "ingé".encode(), TIME.encode(),
    b"2026-03-02T10:15:30.123000+07:00 ", b"2026-03-02T17:00:00.5Z",
]  # fmt: skip
odd_values = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.binary(max_size=12),
    st.integers(0, 10**30).map(lambda n: str(n).encode()),
)


def test_every_odd_value_in_every_field_is_decided_alike() -> None:
    """Each odd value in each field of each usual entry: a deterministic sweep."""
    usual: list[TradeRecord | PriceRecord] = [typical_trade(), typical_price(), typical_price(7)]
    for record in usual:
        base = raw(record.fields())
        for index in range(1, len(base), 2):
            for value in ODD_VALUES:
                fields = list(base)
                fields[index] = value
                same(fields)


def test_products_past_28_digits_are_rounded_as_decimal_rounds_them() -> None:
    # 999999999999999² has 30 digits: Decimal's context rounds the total to 28, exactly as
    # before; smaller products stay exact.
    big = TradeRecord(
        "BBCA", 1, 999_999_999_999_999.0, 999_999_999_999_999.0, 1, 1, 0.0, TIME, RECEIVED, "i"
    )
    result = same(raw(big.fields()))
    assert result[0] == "ok" and isinstance(result[1], Rendered)
    assert ",999999999999998000000000000000," in result[1].text
    for price, shares in ((10**13, 10**14 + 1), (99_999, 10**15 - 1), (0, 10**15 - 1)):
        small = TradeRecord(
            "BBCA", 1, float(price), float(shares), 2, 3, 0.0, TIME, RECEIVED, "i"
        )  # fmt: skip
        assert same(raw(small.fields()))[0] == "ok"


@settings(max_examples=600, deadline=None)
@given(data=st.data())
def test_corrupted_entries_are_rejected_or_rendered_alike(data: st.DataObject) -> None:
    usual: list[TradeRecord | PriceRecord] = [typical_trade(), typical_price(), typical_price(7)]
    record = data.draw(st.sampled_from(usual))
    fields = raw(record.fields())
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["value", "value", "value", "name", "drop", "cut"]))
        if action == "value":
            index = 2 * data.draw(st.integers(0, len(fields) // 2 - 1)) + 1
            fields[index] = data.draw(odd_values)
        elif action == "name":
            index = 2 * data.draw(st.integers(0, len(fields) // 2 - 1))
            fields[index] = data.draw(st.sampled_from([b"q", b"x", b"k", b"z", b"\xff"]))
        elif action == "drop" and len(fields) > 2:
            index = 2 * data.draw(st.integers(0, len(fields) // 2 - 1))
            del fields[index : index + 2]
        elif action == "cut" and fields:
            fields.pop()  # a name left without its value
    same(fields)
