"""Stream entries: the order-book fast path gives exactly what the ordinary decoder gives."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.entries import BID, OFFER, PRICE, TRADE, Entry, EntryPacker, ReceivedClock, command
from pipeline import records
from pipeline.keys import Keys
from stockbit import wire, wrapper
from stockbit.book import Level, format_body
from stockbit.errors import ProtocolError
from stockbit.messages import LivePrice, OrderBook, RunningTrade, TradeBatch

KEYS = Keys("obpipe:", 16)
RECEIVED = b"2026-03-02T10:15:30.654321+07:00"
NOW = datetime(2026, 3, 2, 3, 15, 30, tzinfo=UTC)


def packer() -> EntryPacker:
    return EntryPacker(KEYS, "ing-1", 2_000_000)


def slow(frame: bytes, pk: EntryPacker) -> Entry:
    """The ordinary path: decode, build the record, pack its fields."""
    message = wrapper.decode(frame)
    assert isinstance(message, OrderBook)
    return pk.record(records.from_book(message, NOW, "ing-1"), RECEIVED)


def book_frame(  # noqa: PLR0917
    code: str = "BBCA",
    side: str = "BID",
    levels: tuple[Level, ...] = (Level(8200, 12, 450_000), Level(8175, 3, 10_000)),
    seq: int = 1234567,
    time_text: str = "2026-03-02T10:15:30.123456+07:00",
    itch_text: str | None = "2026-03-02T10:15:30.118734201+07:00",
    body: str | None = None,
) -> bytes:
    book = OrderBook(code, body or format_body(code, side, levels), seq, 42, None, 1, None)
    return wrapper.encode_orderbook(book, time_text=time_text, itch_text=itch_text)


def test_fast_path_matches_the_record_fields() -> None:
    pk = packer()
    frame = book_frame()
    entry = pk.book(frame, RECEIVED)
    assert entry is not None
    assert entry == slow(frame, pk)
    assert entry.code == "BBCA" and entry.kind == BID
    assert entry.levels == b"8200;12;450000|8175;3;10000"
    assert re.match(rb"\*22\r\n\$4\r\nXADD\r\n\$1[56]\r\nobpipe:stream:\d+\r\n", entry.command)
    assert (
        b"$5\r\nMAXLEN\r\n" not in entry.command and b"$6\r\nMAXLEN\r\n$1\r\n~\r\n" in entry.command
    )


def test_fractions_are_normalised_to_microseconds() -> None:
    pk = packer()
    for digits, expected in (("1", "100000"), ("1234", "123400"), ("123456789", "123456")):
        frame = book_frame(time_text=f"2026-03-02T10:15:30.{digits}+07:00")
        entry = pk.book(frame, RECEIVED)
        assert entry is not None and entry == slow(frame, pk)
        assert f"2026-03-02T10:15:30.{expected}+07:00".encode() in entry.command


def test_unusual_shapes_fall_back_to_the_ordinary_path() -> None:
    pk = packer()
    for frame in (
        book_frame(time_text="2026-03-02T03:15:30.123Z"),  # other offset
        book_frame(time_text="2026-03-02T10:15:30+07:00"),  # no fraction
        book_frame(body="#O|BBCA|BID|8200;1;100|ünïcode"),  # non-ASCII body
        wrapper.encode_pong(),
    ):
        assert pk.book(frame, RECEIVED) is None
    # The fallback still stores the first two, normalised like the fast path would.
    assert (
        b"2026-03-02T10:15:30.123000+07:00"
        in slow(book_frame(time_text="2026-03-02T03:15:30.123Z"), pk).command
    )


def test_frames_the_decoder_rejects_never_pass_the_fast_path() -> None:
    pk = packer()
    bad = [
        book_frame(time_text="2026-02-30T10:15:30.123456+07:00"),  # no such day
        book_frame(itch_text="2026-03-02T25:15:30.1+07:00"),  # bad ITCH time
        book_frame(body="#O|TLKM|BID|1;1;100"),  # body code differs
        book_frame(body="#O|BBCA|ASK|1;1;100"),  # no such side
        book_frame()[:-3],  # truncated
    ]
    for frame in bad:
        assert pk.book(frame, RECEIVED) is None
        try:
            slow(frame, pk)
        except ProtocolError:
            continue
        raise AssertionError("expected the decoder to refuse it")


def test_empty_side_has_no_levels() -> None:
    pk = packer()
    frame = book_frame(side="OFFER", levels=())
    entry = pk.book(frame, RECEIVED)
    assert entry is not None and entry == slow(frame, pk)
    assert entry.kind == OFFER and entry.levels == b""


def test_trades_pack_one_entry_per_print() -> None:
    pk = packer()
    trade = RunningTrade(NOW, "TLKM", 3300.0, 50_000.0, 1, 777, 1, 165_000_000.0)
    batch = wrapper.decode(wrapper.encode_trade_batch([trade, trade]))
    assert isinstance(batch, TradeBatch)
    entries = [pk.record(records.from_trade(t, NOW, "ing-1"), RECEIVED) for t in batch.trades]
    assert len(entries) == 2 and entries[0].kind == TRADE
    assert entries[0].command.startswith(b"*28\r\n$4\r\nXADD\r\n")
    assert b"$1\r\nn\r\n$3\r\n777\r\n" in entries[0].command


def test_received_clock_format() -> None:
    clock = ReceivedClock()
    stamp = clock.now().decode()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+07:00", stamp)
    assert abs(datetime.fromisoformat(stamp).timestamp() - datetime.now(UTC).timestamp()) < 5


def test_command_packs_resp() -> None:
    assert command("SELECT", 3) == b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"


codes = st.from_regex(r"[A-Z]{4}", fullmatch=True)
levels_st = st.lists(
    st.builds(
        Level,
        st.integers(50, 100_000),
        st.integers(1, 10_000),
        st.integers(0, 10**9),
    ),
    max_size=70,
).map(tuple)
fractions = st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,9}", fullmatch=True))
offsets = st.sampled_from(["+07:00", "+07:00", "+07:00", "Z", "+0700", ""])
times = st.builds(
    lambda day, clock, fraction, offset: f"2026-{day}T{clock}{fraction}{offset}",
    st.sampled_from(["03-02", "02-28", "02-29", "12-31", "13-01"]),
    st.sampled_from(["10:15:30", "23:59:59", "00:00:00", "24:00:00"]),
    fractions,
    offsets,
)


@settings(max_examples=300, deadline=None)
@given(
    code=codes,
    side=st.sampled_from(["BID", "OFFER"]),
    levels=levels_st,
    seq=st.integers(0, 2**64 - 1),
    time_text=times,
    itch_text=st.one_of(st.none(), times),
)
def test_fast_path_is_equivalent_to_the_decoder(  # noqa: PLR0917
    code: str, side: str, levels: tuple[Level, ...], seq: int, time_text: str, itch_text: str | None
) -> None:
    pk = packer()
    frame = book_frame(code, side, levels, seq, time_text, itch_text)
    fast = pk.book(frame, RECEIVED)
    try:
        expected = slow(frame, pk)
    except ProtocolError:
        assert fast is None
        return
    if fast is not None:
        assert fast == expected
    if time_text.endswith("+07:00") and "." in time_text and (itch_text is None or fast):
        # The common shape always takes the fast path when the decoder accepts it.
        assert fast is not None or itch_text is not None


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_corrupted_frames_never_pass_differently(data: st.DataObject) -> None:
    pk = packer()
    frame = bytearray(book_frame())
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(frame) - 1))
        frame[index] = data.draw(st.integers(0, 255))
    raw = bytes(frame)
    fast = pk.book(raw, RECEIVED)
    if fast is None:
        return
    assert fast == slow(raw, pk)


def test_unknown_varint_fields_are_skipped_like_the_decoder() -> None:
    pk = packer()
    frame = book_frame()
    inner = (frame[2:] if frame[1] < 0x80 else frame[3:]) + wire.varint_field(
        6, 2
    )  # field 6 (source enum)
    extended = wire.len_field(10, inner)
    entry = pk.book(extended, RECEIVED)
    assert entry is not None and entry == slow(extended, pk)


# ---- trades and live prices ----------------------------------------------------------------


def slow_tape(frame: bytes, pk: EntryPacker) -> list[Entry]:
    """The ordinary path for a trade batch, a single print or a LivePrice (raises on any fault)."""
    message = wrapper.decode(frame)
    if isinstance(message, TradeBatch | RunningTrade):
        prints = message.trades if isinstance(message, TradeBatch) else (message,)
        return [pk.record(records.from_trade(t, NOW, "ing-1"), RECEIVED) for t in prints]
    assert isinstance(message, LivePrice)
    return [pk.record(records.from_liveprice(message, NOW, "ing-1"), RECEIVED)]


def against_the_decoder(frame: bytes) -> tuple[bool, tuple[Entry, ...] | None]:
    """(whether the decoder accepts ``frame``, the tape fast path's entries): the fast path
    declines whatever the decoder refuses, and whatever it returns is what the decoder gives."""
    pk = packer()
    fast = pk.tape(frame, RECEIVED)
    try:
        expected = slow_tape(frame, pk)
    except ProtocolError:
        assert fast is None
        return False, None
    if fast is not None:
        assert list(fast) == expected
    return True, fast


def a_print(**changes: object) -> RunningTrade:
    fields: dict[str, object] = {
        "time": datetime(2026, 3, 2, 3, 15, 30, 123456, tzinfo=UTC),
        "code": "TLKM",
        "price": 3300.0,
        "shares": 50_000.0,
        "action": 1,
        "trade_number": 777,
        "board": 1,
        "value": 165_000_000.0,
    }
    fields.update(changes)
    return RunningTrade(**fields)  # type: ignore[arg-type]


def a_price(time_text: str = "2026-03-02T10:15:30.123456789+07:00", **changes: object) -> bytes:
    fields: dict[str, object] = {
        "code": "BBCA",
        "last": 8200.0,
        "shares": 1_234_500.0,
        "high": 8300.0,
        "low": 8100.0,
        "open": 8150.0,
        "frequency": 4321.0,
        "previous": 8125.0,
        "value": 1.0e10,
        "average": 8201.37,
        "foreign_buy": 1000.0,
        "foreign_sell": 2000.0,
    }
    fields.update(changes)
    return wrapper.encode_liveprice(LivePrice(**fields), time_text=time_text)  # type: ignore[arg-type]


def test_trade_batch_fast_path_matches_the_record_fields() -> None:
    pk = packer()
    frame = wrapper.encode_trade_batch([a_print(), a_print(trade_number=778, price=3312.5)])
    entries = pk.tape(frame, RECEIVED)
    assert entries is not None and list(entries) == slow_tape(frame, pk)
    assert [e.kind for e in entries] == [TRADE, TRADE]
    assert b"$1\r\np\r\n$6\r\n3312.5\r\n" in entries[1].command
    assert b"2026-03-02T10:15:30.123456+07:00" in entries[0].command


def test_single_print_and_live_price_take_the_fast_path() -> None:
    pk = packer()
    single = wire.len_field(wrapper.F_TRADE, wrapper.encode_trade(a_print()))
    for frame in (single, a_price(), a_price(sequence=2**40), a_price(sequence=0)):
        entries = pk.tape(frame, RECEIVED)
        assert entries is not None and list(entries) == slow_tape(frame, pk)
    (price,) = pk.tape(a_price(sequence=12), RECEIVED) or ()
    assert price.kind == PRICE and price.levels == b"8200;8125;1234500"
    assert price.command.startswith(b"*40\r\n") and b"$1\r\nq\r\n$2\r\n12\r\n" in price.command


def test_tape_declines_what_it_does_not_check() -> None:
    pk = packer()
    for frame in (
        book_frame(),
        wrapper.encode_pong(),
        wrapper.encode_trade_batch([]),  # empty batch: nothing to store either way
        wrapper.encode_trade_batch([a_print(time=None)]),  # no time: the decoder refuses it
        wrapper.encode_trade_batch([a_print(), a_print(code="")]),  # one bad print, whole frame
        wrapper.encode_trade_batch([a_print(time=datetime(1999, 12, 31, tzinfo=UTC))]),
        wrapper.encode_trade_batch([a_print(code="ÜNIC")]),
        a_price(time_text="2026-03-02T03:15:30.123Z"),  # another offset
        a_price(time_text="2026-02-30T10:15:30.1+07:00"),  # no such day
        a_price(sequence=-1),  # int64 -1: ten bytes on the wire
        a_price(code=""),
        wrapper.encode_trade_batch([a_print()])[:-2],  # truncated
    ):
        assert pk.tape(frame, RECEIVED) is None


def test_unknown_fields_are_skipped_like_the_decoder() -> None:
    pk = packer()
    body = (
        wrapper.encode_trade(a_print())
        + wire.varint_field(6, 3)
        + wire.str_field(7, "YP")
        + wire.tag(8, wire.FIXED32)
        + b"\x01\x02\x03\x04"
        + wire.double_field(12, 1.5)
    )
    frame = wire.len_field(wrapper.F_TRADE_BATCH, wire.len_field(1, body))
    entries = pk.tape(frame, RECEIVED)
    assert entries is not None and list(entries) == slow_tape(frame, pk)
    price = a_price()
    inner = price[2:] if price[1] < 0x80 else price[3:]
    extended = wire.len_field(wrapper.F_LIVEPRICE, inner + wire.varint_field(12, 9))
    got = pk.tape(extended, RECEIVED)
    assert got is not None and list(got) == slow_tape(extended, pk)
    # A known field with the wrong wire type fails in the decoder, so the fast path declines.
    wrong = wire.len_field(wrapper.F_LIVEPRICE, inner + wire.varint_field(2, 9))
    assert pk.tape(wrong, RECEIVED) is None


doubles = st.one_of(
    st.integers(0, 10**12).map(float),
    st.floats(min_value=0, max_value=1e15, allow_nan=False),
    st.floats(allow_nan=True, allow_infinity=True),
)
epochs = st.one_of(
    st.integers(1_700_000_000, 1_900_000_000),
    st.integers(0, 2**40),
)


@settings(max_examples=300, deadline=None)
@given(
    prints=st.lists(
        st.builds(
            RunningTrade,
            time=st.one_of(
                st.none(),
                st.builds(
                    lambda seconds, micros: datetime.fromtimestamp(seconds, UTC).replace(
                        microsecond=micros
                    ),
                    st.integers(0, 4_200_000_000),
                    st.integers(0, 999_999),
                ),
            ),
            code=st.one_of(codes, st.just(""), st.just("ÄBC")),
            price=doubles,
            shares=doubles,
            action=st.integers(0, 3),
            trade_number=st.integers(0, 2**64 - 1),
            board=st.integers(0, 2**63),
            value=doubles,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_trade_fast_path_is_equivalent_to_the_decoder(prints: list[RunningTrade]) -> None:
    accepted, fast = against_the_decoder(wrapper.encode_trade_batch(prints))
    if not accepted:
        return
    common = all(
        p.code.isascii()
        and p.time is not None
        and 2000 <= p.time.year < 2100
        and p.trade_number < 2**63
        and p.board < 2**63
        for p in prints
    )
    assert (fast is not None) == common


@settings(max_examples=300, deadline=None)
@given(
    figures=st.lists(doubles, min_size=11, max_size=11),
    code=st.one_of(codes, st.just(""), st.just("ÄBC")),
    time_text=times,
    sequence=st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
)
def test_live_price_fast_path_is_equivalent_to_the_decoder(
    figures: list[float], code: str, time_text: str, sequence: int | None
) -> None:
    names = "last shares high low open frequency previous value average foreign_buy foreign_sell"
    values = dict(zip(names.split(), figures, strict=True))
    accepted, fast = against_the_decoder(a_price(time_text, code=code, sequence=sequence, **values))
    if not accepted:
        return
    if time_text.endswith("+07:00") and "." in time_text and code.isascii():
        assert (fast is None) == (sequence is not None and sequence < 0)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), which=st.sampled_from(["batch", "price"]))
def test_corrupted_tape_frames_never_pass_differently(data: st.DataObject, which: str) -> None:
    pk = packer()
    clean = (
        wrapper.encode_trade_batch([a_print(), a_print(trade_number=9)])
        if which == "batch"
        else a_price(sequence=77)
    )
    frame = bytearray(clean)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(frame) - 1))
        frame[index] = data.draw(st.integers(0, 255))
    raw = bytes(frame)
    fast = pk.tape(raw, RECEIVED)
    if fast is None:
        return
    assert list(fast) == slow_tape(raw, pk)
