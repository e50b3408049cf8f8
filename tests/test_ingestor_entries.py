"""Stream entries: the order-book fast path gives exactly what the ordinary decoder gives."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.entries import BID, OFFER, TRADE, Entry, EntryPacker, ReceivedClock, command
from pipeline import records
from pipeline.keys import Keys
from stockbit import wire, wrapper
from stockbit.book import Level, format_body
from stockbit.errors import ProtocolError
from stockbit.messages import OrderBook, RunningTrade, TradeBatch

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
