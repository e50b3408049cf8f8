"""The simulator's pure parts: tick grid, ladders, seqs, trades, live prices, auctions, the virtual clock, frame bytes."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.clock import VirtualClock, WibText, from_ns, to_ns
from simulator.frames import (
    BookPress,
    encode_book,
    encode_indicative,
    encode_live,
    encode_quote,
    encode_tape,
    garbage,
)
from simulator.market import (
    ACTION_BUY,
    ACTION_NONE,
    ACTION_SELL,
    BOARD_NG,
    BOARD_RG,
    MIN_PRICE,
    TAPE_LENGTH,
    Market,
    Print,
    on_grid,
    price_above,
    price_below,
    starting_price,
    tick_size,
    valid_code,
)
from stockbit import ProtocolError, wrapper
from stockbit.book import BID, OFFER, Body, parse_body
from stockbit.messages import BestBidOffer, IepIev, LivePrice, OrderBook, TradeBatch
from stockbit.timestamps import WIB, parse_iso, wib_iso


class FakeMonotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


def make_market(
    start: str = "2026-03-02T10:15:30+07:00", levels: int = 60, seed: int = 7
) -> tuple[Market, FakeMonotonic]:
    ticks = FakeMonotonic()
    clock = VirtualClock(datetime.fromisoformat(start), monotonic_ns=ticks)
    return Market(clock, random.Random(seed), levels=levels), ticks


# ---- tick grid --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "tick"),
    [
        (50, 1),
        (199, 1),
        (200, 2),
        (498, 2),
        (499, 2),
        (500, 5),
        (1_995, 5),
        (1_999, 5),
        (2_000, 10),
        (4_990, 10),
        (4_999, 10),
        (5_000, 25),
        (8_000, 25),
        (26_000, 25),
    ],
)
def test_tick_size_follows_the_idx_bands(price: int, tick: int) -> None:
    assert tick_size(price) == tick


@pytest.mark.parametrize(
    ("low", "high"),
    [(199, 200), (498, 500), (1_995, 2_000), (4_990, 5_000), (5_000, 5_025)],
)
def test_neighbours_across_a_band_boundary(low: int, high: int) -> None:
    assert price_above(low) == high
    assert price_below(high) == low


@given(st.integers(min_value=MIN_PRICE, max_value=100_000))
def test_grid_neighbours_invert_each_other(raw: int) -> None:
    price = on_grid(raw)
    assert price <= raw
    assert price % tick_size(price) == 0
    assert price_below(price_above(price)) == price
    if price > MIN_PRICE:
        assert price_above(price_below(price)) == price


def test_starting_prices_are_plausible_and_stable() -> None:
    assert starting_price("BBCA") == 8000
    assert starting_price("TLKM") == 3300
    assert starting_price("BUMI") == 200
    unknown = starting_price("ZZZZ")
    assert unknown == starting_price("ZZZZ")
    assert 50 <= unknown <= 13_000
    assert unknown % tick_size(unknown) == 0


@pytest.mark.parametrize(
    ("code", "ok"),
    [("BBCA", True), ("LQ45", True), ("BBCA-W", True), ("2BBCA", False), ("bbca", False)],
)
def test_valid_code(code: str, ok: bool) -> None:
    assert valid_code(code) is ok


# ---- ladders --------------------------------------------------------------------------------


def assert_ladder(body: Body, levels: int) -> None:
    prices = [lv.price for lv in body.levels]
    assert len(prices) == levels
    step = price_below if body.side == BID else price_above
    for here, there in itertools.pairwise(prices):
        assert there == step(here), "levels must be adjacent ticks, best first"
    for level in body.levels:
        assert level.price % tick_size(level.price) == 0
        assert level.orders >= 1
        assert level.shares % 100 == 0
        assert level.shares >= 100 * level.orders, "each order is at least one lot"


@pytest.mark.parametrize("code", ["BBCA", "TLKM", "BUMI", "PTRO", "ASII", "GOTO", "ZZZZ"])
def test_ladders_are_best_first_on_the_grid_and_uncrossed(code: str) -> None:
    market, ticks = make_market()
    for _ in range(50):
        ticks.advance(0.3)
        bid = parse_body(market.book(code, BID).body)
        offer = parse_body(market.book(code, OFFER).body)
        assert bid.code == offer.code == code
        assert (bid.side, offer.side) == (BID, OFFER)
        assert_ladder(bid, len(bid.levels))
        assert_ladder(offer, 60)
        assert 1 <= len(bid.levels) <= 60
        assert bid.levels[0].price < offer.levels[0].price


def test_a_ladder_crosses_the_5000_band_with_the_right_ticks() -> None:
    market, _ = make_market()
    bid = parse_body(market.book("PTRO", BID).body)  # ~5 550, 60 levels down crosses 5 000
    prices = [lv.price for lv in bid.levels]
    assert 5_000 in prices
    at = prices.index(5_000)
    assert prices[at - 1] == 5_025
    assert prices[at + 1] == 4_990


def test_cheap_ladders_stop_at_the_price_floor() -> None:
    market, _ = make_market()
    bid = parse_body(market.book("GOTO", BID).body)  # ~60: fewer than 60 levels above Rp 50
    assert bid.levels[-1].price >= MIN_PRICE
    assert len(bid.levels) < 60


def test_the_client_view_is_never_locked_or_crossed() -> None:
    # A client keeps the last BID and the last OFFER it received; whatever order the sides
    # arrive in, the pair must satisfy bid < offer.
    market, ticks = make_market(seed=3)
    rng = random.Random(5)
    last = {
        side: parse_body(market.book("BUMI", side).body).levels[0].price for side in (BID, OFFER)
    }
    for _ in range(3_000):
        ticks.advance(0.1)
        side = rng.choice((BID, OFFER))
        last[side] = parse_body(market.book("BUMI", side).body).levels[0].price
        assert last[BID] < last[OFFER]


def test_levels_option_sets_the_depth() -> None:
    market, _ = make_market(levels=5)
    assert len(parse_body(market.book("BBCA", OFFER).body).levels) == 5


# ---- seqs and times ---------------------------------------------------------------------------


def test_seq_rises_strictly_per_side_and_times_follow_the_clock() -> None:
    market, ticks = make_market()
    seen: dict[str, list[int]] = {BID: [], OFFER: []}
    times: list[datetime] = []
    for i in range(40):
        ticks.advance(0.05)
        snap = market.book("TLKM", BID if i % 3 else OFFER)
        seen[snap.side].append(snap.seq)
        exchange = parse_iso(snap.time)
        itch = parse_iso(snap.itch_time)
        assert snap.time.endswith("+07:00")
        digits = len(snap.time.split(".")[1]) - len("+07:00")
        assert 6 <= digits <= 9
        assert itch < exchange or (exchange - itch) < timedelta(microseconds=1)
        assert exchange - itch < timedelta(milliseconds=5)
        if snap.side == BID:
            times.append(exchange)
    for seqs in seen.values():
        assert seqs == sorted(set(seqs))
    assert times == sorted(times)


def test_seq_of_a_later_market_starts_above_an_earlier_one() -> None:
    # A restarted simulator must not reuse seqs the downstream already stored.
    first, ticks = make_market(start="2026-03-02T10:00:00+07:00")
    for _ in range(100):
        ticks.advance(0.01)
        last = first.book("BBCA", BID).seq
    later, _ = make_market(start="2026-03-02T10:00:05+07:00")
    assert later.book("BBCA", BID).seq > last


# ---- trades ---------------------------------------------------------------------------------


def test_a_fixed_batch_size_gives_that_many_prints_per_batch() -> None:
    ticks = FakeMonotonic()
    clock = VirtualClock(datetime.fromisoformat("2026-03-02T10:15:30+07:00"), monotonic_ns=ticks)
    market = Market(clock, random.Random(3), prints_per_batch=1)
    drawn, _ = make_market(seed=3)
    sizes = set()
    for _ in range(60):
        ticks.advance(0.2)
        assert len(market.trades("BBCA").prints) == 1
        sizes.add(len(drawn.trades("BBCA").prints))
    assert sizes == {1, 2, 3}
    with pytest.raises(ValueError, match="prints_per_batch"):
        Market(clock, random.Random(3), prints_per_batch=0)


def test_trades_print_at_the_touch_with_rising_numbers() -> None:
    market, ticks = make_market()
    numbers: list[int] = [p.trade_number for p in market.recent("BBCA").prints]
    kinds = set()
    for _ in range(400):
        ticks.advance(0.2)
        market.book("BBCA", BID)
        market.book("BBCA", OFFER)
        bid, offer = market.touch("BBCA")
        tape = market.trades("BBCA")
        assert 1 <= len(tape.prints) <= 3
        assert not tape.backfill
        for p in tape.prints:
            numbers.append(p.trade_number)
            assert p.shares % 100 == 0 and p.shares > 0
            assert p.value == p.price * p.shares
            kinds.add((p.action, p.board))
            if p.action == ACTION_BUY:
                assert (p.price, p.board) == (offer, BOARD_RG)
            elif p.action == ACTION_SELL:
                assert (p.price, p.board) == (bid, BOARD_RG)
            else:
                assert (p.action, p.board) == (ACTION_NONE, BOARD_NG)
    assert numbers == sorted(set(numbers))
    assert {(ACTION_BUY, BOARD_RG), (ACTION_SELL, BOARD_RG)} <= kinds


def test_recent_tape_replays_the_last_prints_with_their_numbers() -> None:
    market, ticks = make_market()
    history = market.recent("TLKM")
    assert history.backfill and len(history.prints) == TAPE_LENGTH
    live: list[Print] = []
    for _ in range(30):
        ticks.advance(0.5)
        live.extend(market.trades("TLKM").prints)
    replay = market.recent("TLKM").prints
    assert len(replay) == TAPE_LENGTH
    assert list(replay[-len(live) :]) == live[-TAPE_LENGTH:]


def test_trade_numbers_restart_on_a_new_jakarta_day() -> None:
    market, ticks = make_market(start="2026-03-02T23:59:59+07:00")
    before = market.trades("BBCA").prints[-1]
    ticks.advance(2)
    after = market.trades("BBCA").prints[0]
    assert before.time.date().isoformat() == "2026-03-02"
    assert after.time.date().isoformat() == "2026-03-03"
    assert after.trade_number < before.trade_number


# ---- live prices and auctions ---------------------------------------------------------------


def test_live_figures_sum_up_every_print_of_the_day() -> None:
    market, ticks = make_market(start="2026-03-02T10:00:00+07:00")
    tape = list(market.recent("TLKM").prints)  # a fresh ticker: its history is its day so far
    for _ in range(200):
        ticks.advance(0.3)
        market.book("TLKM", BID)
        tape.extend(market.trades("TLKM").prints)
        live = market.live("TLKM")
        assert live.frequency == len(tape)
        assert live.shares == sum(p.shares for p in tape)
        assert live.value == sum(p.value for p in tape)
        assert (live.open, live.last) == (tape[0].price, tape[-1].price)
        assert (live.high, live.low) == (max(p.price for p in tape), min(p.price for p in tape))
        assert live.average == live.value / live.shares
        assert live.previous == 3300 and live.time == wib_iso(tape[-1].time)
        assert 0 <= live.foreign_buy <= live.shares and 0 <= live.foreign_sell <= live.shares
    assert live.foreign_buy > 0 and live.foreign_sell > 0


def test_live_figures_start_afresh_at_jakarta_midnight() -> None:
    market, ticks = make_market(start="2026-03-02T23:59:59+07:00")
    before = market.trades("BBCA")
    evening = market.live("BBCA")
    assert evening.time.startswith("2026-03-02") and evening.frequency >= TAPE_LENGTH
    ticks.advance(2)
    after = market.trades("BBCA")
    morning = market.live("BBCA")
    assert morning.time.startswith("2026-03-03")
    assert morning.previous == before.prints[-1].price, "yesterday's last is the previous close"
    assert morning.frequency == len(after.prints)
    assert morning.shares == sum(p.shares for p in after.prints)


@pytest.mark.parametrize(
    ("moment", "phase"),
    [
        ("2026-03-02T08:44:59+07:00", None),
        ("2026-03-02T08:45:00+07:00", "pre_opening"),
        ("2026-03-02T08:59:59.9+07:00", "pre_opening"),
        ("2026-03-02T09:00:00+07:00", None),
        ("2026-03-02T15:49:59+07:00", None),
        ("2026-03-02T15:50:00+07:00", "pre_closing"),
        ("2026-03-02T16:00:59+07:00", "pre_closing"),
        ("2026-03-02T16:01:00+07:00", None),
        ("2026-03-07T08:50:00+07:00", None),  # a Saturday
        ("2026-12-31T08:50:00+07:00", None),  # IDX's year-end closure
    ],
)
def test_auctions_follow_the_trading_calendar(moment: str, phase: str | None) -> None:
    market, _ = make_market(start=moment)
    found = market.auction()
    assert (found.value if found is not None else None) == phase


# ---- clock ----------------------------------------------------------------------------------


def test_virtual_clock_crosses_midnight_wib() -> None:
    ticks = FakeMonotonic()
    clock = VirtualClock(
        datetime.fromisoformat("2026-03-02T23:59:58+07:00"), speed=10, monotonic_ns=ticks
    )
    assert wib_iso(from_ns(clock.now_ns())) == "2026-03-02T23:59:58.000000+07:00"
    ticks.advance(0.5)
    assert wib_iso(from_ns(clock.now_ns())) == "2026-03-03T00:00:03.000000+07:00"


def test_market_times_cross_midnight_with_the_clock() -> None:
    market, ticks = make_market(start="2026-03-02T23:59:59.5+07:00")
    first = market.book("BBCA", BID)
    ticks.advance(1)
    second = market.book("BBCA", BID)
    assert first.time.startswith("2026-03-02T23:59:59.5")
    assert second.time.startswith("2026-03-03T00:00:00.5")
    assert parse_iso(second.time).astimezone(WIB).date().isoformat() == "2026-03-03"


def test_clock_needs_an_offset_and_a_positive_speed() -> None:
    with pytest.raises(ValueError, match="offset"):
        VirtualClock(datetime(2026, 3, 2))
    with pytest.raises(ValueError, match="speed"):
        VirtualClock(speed=0)


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9), st.integers(1, 9))
def test_wib_text_matches_the_codec(ns: int, digits: int) -> None:
    text = WibText().format(ns, digits)
    assert text.endswith("+07:00")
    assert len(text.split(".")[1]) == digits + len("+07:00")
    truncated = ns - ns % 10 ** (9 - min(digits, 6)) if digits < 6 else ns
    assert parse_iso(text) == from_ns(truncated)
    assert to_ns(parse_iso(text)) // 1_000 == truncated // 1_000


# ---- frame bytes ----------------------------------------------------------------------------


def test_book_frames_decode_to_the_snapshot() -> None:
    market, _ = make_market()
    snap = market.book("BBCA", BID)
    frame = wrapper.decode(encode_book(snap))
    assert isinstance(frame, OrderBook)
    assert (frame.code, frame.body, frame.seq, frame.book_id, frame.board) == (
        "BBCA",
        snap.body,
        snap.seq,
        snap.book_id,
        1,
    )
    assert frame.time == parse_iso(snap.time)
    assert frame.itch_time == parse_iso(snap.itch_time)


def test_max_rate_press_is_byte_identical_to_the_codec() -> None:
    market, ticks = make_market()
    press = BookPress(market, variants=4)
    bodies: set[str] = set()
    seqs: list[int] = []
    for _ in range(12):
        ticks.advance(0.001)
        payload, snap = press.press("BUMI", OFFER)
        assert payload == encode_book(snap)
        bodies.add(snap.body)
        seqs.append(snap.seq)
    assert len(bodies) == 4
    assert seqs == sorted(set(seqs))


def test_trade_frames_decode_to_the_prints() -> None:
    market, _ = make_market()
    tape = market.recent("BBCA")
    frame = wrapper.decode(encode_tape(tape))
    assert isinstance(frame, TradeBatch)
    assert [
        (t.code, t.trade_number, t.price, t.shares, t.action, t.board, t.value, t.time)
        for t in frame.trades
    ] == [
        (p.code, p.trade_number, p.price, p.shares, p.action, p.board, p.value, p.time)
        for p in tape.prints
    ]


def test_live_price_iep_and_quote_frames_decode() -> None:
    market, _ = make_market(start="2026-03-02T08:50:00+07:00")
    live = market.live("BBCA")
    frame = wrapper.decode(encode_live(live))
    assert isinstance(frame, LivePrice) and frame.time is not None
    assert wib_iso(frame.time) == live.time
    assert (frame.code, frame.last, frame.open, frame.high, frame.low, frame.previous) == (
        "BBCA",
        live.last,
        live.open,
        live.high,
        live.low,
        live.previous,
    )
    assert (frame.shares, frame.value, frame.frequency, frame.average) == (
        live.shares,
        live.value,
        live.frequency,
        live.average,
    )
    assert (frame.foreign_buy, frame.foreign_sell, frame.sequence) == (
        live.foreign_buy,
        live.foreign_sell,
        None,
    )
    phase = market.auction()
    assert phase is not None
    # Field 1 = code is all these two frames carry: their other fields are unattested.
    assert wrapper.decode(encode_indicative(market.indicative("BBCA", phase))) == IepIev("BBCA")
    quote = market.quote("BBCA")
    assert wrapper.decode(encode_quote(quote)) == BestBidOffer("BBCA")
    assert quote.bid < quote.offer


@given(st.integers())
def test_garbage_never_decodes(seed: int) -> None:
    with pytest.raises(ProtocolError):
        wrapper.decode(garbage(random.Random(seed)))
