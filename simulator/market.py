"""A simulated IDX market: per-ticker order books and a market-wide trade tape.

Pure: time comes from an injected :class:`~simulator.clock.Clock` and randomness from an
injected :class:`random.Random`; nothing here does I/O. The server decides *when* to ask for a
book side or a trade batch; this module decides *what* it looks like:

- prices on the IDX tick grid (1/2/5/10/25 rupiah by band, the band chosen by each level's own
  price), never below Rp 50;
- a touch (best bid, best offer) that random-walks one side at a time, so best bid < best offer
  holds in every pair of snapshots a client can hold;
- ladders of up to ``levels`` levels, best first, with heavy-tailed order counts and lots
  (1 lot = 100 shares, so shares are multiples of 100);
- per-(ticker, side) sequence numbers and a market-wide daily trade counter, both strictly
  increasing and anchored on the time of day, so a restarted simulator continues above the
  numbers it sent before (downstream dedups on them);
- a recent tape per ticker (~40 prints) replayed as backfill on (re)subscribe;
- each ticker's session figures as LivePrice sends them, kept consistent with every print of
  the tape (the synthetic history included): cumulative volume in shares, trade count,
  turnover, open/high/low/last, previous close and average, reset at Jakarta midnight with
  the last price becoming the previous close;
- the auction phases (pre-opening, pre-closing) of :mod:`pipeline.calendar` at the virtual
  clock's time, during which IEP/IEV frames are due.
"""

from __future__ import annotations

import random
import re
import zlib
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from pipeline.calendar import Phase, TradingCalendar
from simulator.clock import Clock, WibText, from_ns, nanos_into_wib_day, wib_day
from stockbit.book import BID, OFFER, SIDES, Level, format_body
from stockbit.messages import LOT
from stockbit.timestamps import wib_iso

MIN_PRICE = 50
"""Lowest regular-board price: bids never go below it."""

TICK_BANDS: tuple[tuple[int, int], ...] = ((200, 1), (500, 2), (2_000, 5), (5_000, 10))
"""(exclusive upper bound, tick) of the IDX price bands below Rp 5 000."""
TOP_TICK = 25
"""Tick at and above Rp 5 000."""

TAPE_LENGTH = 40
"""Prints per ticker kept for the reconnect backfill (the real feed replays about 40)."""

BOARD_RG = 1
BOARD_NG = 3
ACTION_NONE = 0
ACTION_BUY = 1
ACTION_SELL = 2

AUCTIONS = frozenset({Phase.PRE_OPENING, Phase.PRE_CLOSING})
"""The call-auction phases, when the exchange publishes IEP/IEV."""

CODE_PATTERN = re.compile(r"[A-Z][A-Z0-9]{1,5}(?:-[A-Z0-9]{1,3})?\Z")

STARTING_PRICES: dict[str, int] = {
    "BBCA": 8000,
    "BBRI": 4000,
    "BMRI": 4210,
    "BBNI": 4400,
    "BRIS": 2700,
    "BBTN": 1200,
    "TLKM": 3300,
    "ISAT": 2300,
    "EXCL": 2250,
    "TOWR": 700,
    "ASII": 4800,
    "UNTR": 26000,
    "UNVR": 1900,
    "ICBP": 11000,
    "INDF": 7500,
    "KLBF": 1400,
    "AMRT": 2600,
    "MAPI": 1400,
    "ACES": 650,
    "ADRO": 2100,
    "PTBA": 2600,
    "ITMG": 24000,
    "ANTM": 2900,
    "INCO": 3800,
    "MDKA": 1800,
    "MBMA": 500,
    "AMMN": 7000,
    "MEDC": 1300,
    "PGAS": 1600,
    "PGEO": 1000,
    "AKRA": 1200,
    "SMGR": 3000,
    "INKP": 6000,
    "BRPT": 1900,
    "CPIN": 4700,
    "CTRA": 950,
    "JSMR": 4200,
    "GOTO": 60,
    "BUMI": 200,
    "PTRO": 5550,
}
"""Plausible 2026 prices for the liquid names; other codes get a price derived from the code."""

# Seq and trade numbers advance with the time of day at these rates at least (per side / market
# wide), so a simulator restarted later the same day starts above what it sent before.
_SEQ_NANOS_PER_STEP = 100_000
_TRADE_NANOS_PER_STEP = 250_000


def valid_code(code: str) -> bool:
    """True for anything that looks like an IDX code (``BBCA``, ``LQ45``, ``BBCA-W``)."""
    return CODE_PATTERN.match(code) is not None


def tick_size(price: int) -> int:
    """The IDX tick for a level at ``price`` (Kep-00023/BEI/04-2016)."""
    for limit, tick in TICK_BANDS:
        if price < limit:
            return tick
    return TOP_TICK


def price_above(price: int) -> int:
    """The next valid price above an on-grid ``price``."""
    return price + tick_size(price)


def price_below(price: int) -> int:
    """The next valid price below an on-grid ``price`` (the tick of the band below applies)."""
    return price - tick_size(price - 1)


def on_grid(price: int) -> int:
    """The highest valid price at or below ``price`` (band edges are multiples of their ticks)."""
    price = max(price, MIN_PRICE)
    return price - price % tick_size(price)


def starting_price(code: str) -> int:
    """A plausible opening price: the known one, else a stable pseudo-random one from the code."""
    known = STARTING_PRICES.get(code)
    if known is not None:
        return known
    # Log-uniform between Rp 60 and Rp 12 000: most IDX names are cheap, few are expensive.
    draw = random.Random(zlib.crc32(code.encode())).uniform(4.1, 9.4)
    return on_grid(round(2.718281828459045**draw))


def ticks_between(low: int, high: int, limit: int = 10) -> int:
    """How many ticks separate two on-grid prices (counted up to ``limit``)."""
    steps = 0
    while low < high and steps < limit:
        low = price_above(low)
        steps += 1
    return steps


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """One side of one ticker's book as sent: the exact body, seq and time strings."""

    code: str
    side: str
    seq: int
    book_id: int
    time: str
    """Exchange time (Orderbook field 5), ISO-8601 WIB with 6–9 fractional digits."""
    itch_time: str
    """ITCH incoming time (field 9), slightly before ``time``."""
    body: str
    board: int = BOARD_RG


@dataclass(frozen=True, slots=True)
class Print:
    """One trade of the tape."""

    code: str
    trade_number: int
    price: int
    shares: int
    action: int
    board: int
    time: datetime

    @property
    def value(self) -> int:
        """Rupiah value: price × shares."""
        return self.price * self.shares


@dataclass(frozen=True, slots=True)
class Tape:
    """A batch of prints as sent in one frame; ``backfill`` marks a replay of the recent tape."""

    prints: tuple[Print, ...]
    backfill: bool = False


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """One ticker's session figures as a LivePrice message (wrapper field 9) carries them.

    ``shares``, ``value`` and ``frequency`` are cumulative over the Jakarta day; ``time`` is
    the exchange time of the match that produced them (field 11). Foreign buy and sell are
    simulated in shares (the real feed's unit is not attested).
    """

    code: str
    time: str
    last: int
    open: int
    high: int
    low: int
    previous: int
    shares: int
    value: int
    frequency: int
    foreign_buy: int
    foreign_sell: int

    @property
    def average(self) -> float:
        """The day's volume-weighted average price (0 before the first match)."""
        return self.value / self.shares if self.shares else 0.0


@dataclass(frozen=True, slots=True)
class Indicative:
    """An IEP/IEV frame (wrapper field 11) of one ticker during an auction phase."""

    code: str
    time: str
    """Virtual exchange time when it was sent (the frame itself carries only the code)."""
    phase: str


@dataclass(frozen=True, slots=True)
class Quote:
    """A best-bid-offer frame (wrapper field 13) of one ticker."""

    code: str
    bid: int
    offer: int
    time: str
    """Virtual exchange time when it was sent (the frame itself carries only the code)."""


Sent = BookSnapshot | Tape | LiveFigures | Indicative | Quote
"""Anything a data frame carries (what the journal records)."""


@dataclass(slots=True)
class _Session:
    """The running LivePrice figures of one ticker's Jakarta day."""

    day: int
    """The Jakarta date's ordinal (``date.toordinal()``)."""
    previous: int
    last: int = 0
    open: int = 0
    high: int = 0
    low: int = 0
    shares: int = 0
    value: int = 0
    frequency: int = 0
    foreign_buy: int = 0
    foreign_sell: int = 0
    time: datetime | None = None


@dataclass(slots=True)
class _Side:
    seq: int
    levels: dict[int, list[int]]
    """price → [orders, lots]; kept across snapshots so the ladder evolves, not re-rolls."""


@dataclass(slots=True)
class _Ticker:
    code: str
    reference: int
    bid: int
    offer: int
    book_id: int
    lots_per_order: float
    liquidity: float
    buy_share: float
    sides: dict[str, _Side]
    tape: deque[Print]
    session: _Session
    foreign_share: float
    flow: random.Random
    """Draws which prints had a foreign side (its own stream, so adding the LivePrice figures
    left the market's main random sequence, and every seeded test of it, unchanged)."""


class Market:
    """Books and trades of every ticker anyone asked for, created on first use."""

    def __init__(
        self,
        clock: Clock,
        rng: random.Random,
        levels: int = 60,
        walk: bool = True,
        prints_per_batch: int | None = None,
    ) -> None:
        if levels < 1:
            raise ValueError("levels must be at least 1")
        if prints_per_batch is not None and prints_per_batch < 1:
            raise ValueError("prints_per_batch must be at least 1")
        self._batch = prints_per_batch
        self._clock = clock
        self._rng = rng
        self._levels = levels
        self._walk = walk
        self._tickers: dict[str, _Ticker] = {}
        self._calendar = TradingCalendar()
        self._text = WibText()
        self._trade_day = -1
        self._trade_number = 0

    # ---- tickers ---------------------------------------------------------------------------

    def ticker(self, code: str) -> _Ticker:
        """The state of ``code``, created (with a synthetic recent tape) on first use."""
        state = self._tickers.get(code)
        if state is None:
            state = self._create(code)
            self._tickers[code] = state
        return state

    def touch(self, code: str) -> tuple[int, int]:
        """Current (best bid, best offer) of ``code``."""
        state = self.ticker(code)
        return state.bid, state.offer

    def _create(self, code: str) -> _Ticker:
        # Per-ticker character comes from the code, so BBCA looks the same in every run.
        traits = random.Random(zlib.crc32(code.encode()) ^ 0x5EED)
        reference = starting_price(code)
        bid = on_grid(reference)
        now = self._clock.now_ns()
        seq0 = nanos_into_wib_day(now) // _SEQ_NANOS_PER_STEP
        state = _Ticker(
            code=code,
            reference=reference,
            bid=bid,
            offer=price_above(bid),
            book_id=1 + zlib.crc32(code.encode()) % 900_000,
            # Cheap stocks trade in far bigger lots: ~25 lots/order on BBCA, ~1 000 on BUMI.
            lots_per_order=max(3.0, min(3_000.0, 200_000 / reference)) * traits.uniform(0.5, 2),
            liquidity=traits.uniform(2.0, 40.0),
            buy_share=traits.uniform(0.3, 0.7),
            sides={BID: _Side(seq0, {}), OFFER: _Side(seq0, {})},
            tape=deque(maxlen=TAPE_LENGTH),
            session=_Session(day=from_ns(now).toordinal(), previous=reference),
            foreign_share=traits.uniform(0.1, 0.5),
            flow=random.Random(zlib.crc32(code.encode()) ^ 0xF10E),
        )
        # The real server replays the recent tape on subscribe; a fresh ticker gets a plausible
        # history from the last minute so the very first subscriber sees a backfill too.
        start = now - 60 * 1_000_000_000
        for k in range(TAPE_LENGTH):
            moment = start + k * 1_500_000_000 + self._rng.randrange(1_000_000_000)
            prints = self._prints(state, min(moment, now), count=1, numbered_at=now)
            state.tape.extend(prints)
            self._match(state, prints)
        return state

    # ---- books -----------------------------------------------------------------------------

    def book(self, code: str, side: str) -> BookSnapshot:
        """Evolve one side of ``code`` and return its full snapshot with a fresh seq and time."""
        state = self.ticker(code)
        if self._walk:
            self._step_touch(state, side)
        return self.stamp(code, side, self._ladder_body(state, side))

    def bodies(self, code: str, side: str, count: int) -> list[str]:
        """``count`` successive ladder bodies of one side at the current touch (max-rate mode)."""
        state = self.ticker(code)
        return [self._ladder_body(state, side) for _ in range(count)]

    def stamp(self, code: str, side: str, body: str) -> BookSnapshot:
        """Wrap ``body`` with the next seq of (code, side) and the current exchange/ITCH times."""
        state = self.ticker(code)
        book_side = state.sides[side]
        book_side.seq += 1
        seq = book_side.seq
        now = self._clock.now_ns()
        # ITCH receipt precedes the exchange stamp by 20 µs – 2 ms; exchange times carry 6–9
        # fractional digits as different feed paths do.
        itch = now - 20_000 - (seq * 7_919) % 1_980_000
        return BookSnapshot(
            code=code,
            side=side,
            seq=seq,
            book_id=state.book_id,
            time=self._text.format(now, 6 + seq % 4),
            itch_time=self._text.format(itch, 9),
            body=body,
        )

    def _step_touch(self, state: _Ticker, side: str) -> None:
        """Move this side's best price by at most one tick, never locking or crossing the book.

        Only the side being sent moves, so the client's last BID and last OFFER always satisfy
        bid < offer: a side may step toward the other only while the spread is ≥ 2 ticks.
        """
        rng = self._rng
        spread = ticks_between(state.bid, state.offer)
        draw = rng.random()
        if spread >= 2 and draw < 0.6:
            # Close the gap: the spread averages about one tick, as on liquid IDX names.
            if side == BID:
                state.bid = price_above(state.bid)
            else:
                state.offer = price_below(state.offer)
            return
        if draw >= 0.85 or spread >= 3:
            return
        # Step away in the walk's direction; mean-revert toward the reference so a long run
        # does not drift to the price floor.
        mid = (state.bid + state.offer) / 2
        up_chance = 0.5 - max(-0.3, min(0.3, (mid / state.reference - 1) * 4))
        going_up = rng.random() < up_chance
        if side == BID and not going_up and price_below(state.bid) >= MIN_PRICE:
            state.bid = price_below(state.bid)
        elif side == OFFER and going_up:
            state.offer = price_above(state.offer)

    def _ladder_prices(self, state: _Ticker, side: str) -> list[int]:
        prices: list[int] = []
        if side == BID:
            price = state.bid
            while len(prices) < self._levels and price >= MIN_PRICE:
                prices.append(price)
                price = price_below(price)
        else:
            price = state.offer
            while len(prices) < self._levels:
                prices.append(price)
                price = price_above(price)
        return prices

    def _ladder_body(self, state: _Ticker, side: str) -> str:
        prices = self._ladder_prices(state, side)
        book = state.sides[side].levels
        rng = self._rng
        for depth, price in enumerate(prices):
            if price not in book:
                book[price] = self._fresh_level(state, depth)
        # A few levels change per snapshot, mostly near the touch where the action is.
        for _ in range(rng.randint(1, 4)):
            depth = min(int(rng.expovariate(0.25)), len(prices) - 1)
            self._churn(state, book, prices[depth], depth)
        if len(book) > 3 * self._levels:
            keep = set(prices)
            for price in [p for p in book if p not in keep]:
                del book[price]
        levels = [Level(p, book[p][0], book[p][1] * LOT) for p in prices]
        return format_body(state.code, side, levels)

    def _fresh_level(self, state: _Ticker, depth: int) -> list[int]:
        rng = self._rng
        # Pareto order counts (a few huge levels) and a lognormal average order size.
        orders = 1 + min(int(rng.paretovariate(1.4) * state.liquidity * (0.3 + depth / 20)), 2_000)
        per_order = state.lots_per_order * rng.lognormvariate(0.0, 0.8)
        return [orders, max(orders, round(orders * per_order))]

    def _churn(self, state: _Ticker, book: dict[int, list[int]], price: int, depth: int) -> None:
        rng = self._rng
        level = book[price]
        orders, lots = level
        if rng.random() < 0.55:
            added = 1 + int(rng.paretovariate(2.0))
            lots += max(added, round(added * state.lots_per_order * rng.lognormvariate(0.0, 1.0)))
            orders += added
        elif orders > 1:
            removed = rng.randint(1, max(1, orders // 4))
            lots -= min(lots - (orders - removed), round(lots * removed / orders))
            orders -= removed
        else:
            book[price] = self._fresh_level(state, depth)
            return
        level[0], level[1] = orders, max(orders, lots)

    # ---- trades ----------------------------------------------------------------------------

    def trades(self, code: str) -> Tape:
        """A live batch of 1–3 prints (or the fixed count the market was given) at the current
        touch (occasionally a negotiated print)."""
        state = self.ticker(code)
        count = self._batch or self._rng.choices((1, 2, 3), weights=(6, 3, 1))[0]
        now = self._clock.now_ns()
        prints = self._prints(state, now, count, numbered_at=now)
        state.tape.extend(prints)
        self._match(state, prints)
        return Tape(tuple(prints))

    def recent(self, code: str) -> Tape:
        """The recent tape of ``code`` (same trade numbers as before), for a subscribe backfill."""
        return Tape(tuple(self.ticker(code).tape), backfill=True)

    def _prints(self, state: _Ticker, at: int, count: int, numbered_at: int) -> list[Print]:
        # ``numbered_at`` is "now" even for the synthetic history, so the daily counter only
        # ever moves forward (a history reaching into yesterday must not reset it).
        rng = self._rng
        # Prints of one aggressive order share one millisecond and carry consecutive numbers.
        moment = from_ns(at - at % 1_000_000)
        if rng.random() < 0.01:
            lots = round(state.lots_per_order * rng.lognormvariate(3.0, 1.0)) + 1
            number = self._next_trade_number(numbered_at)
            return [Print(state.code, number, state.bid, lots * LOT, ACTION_NONE, BOARD_NG, moment)]
        buying = rng.random() < state.buy_share
        action = ACTION_BUY if buying else ACTION_SELL
        price = state.offer if buying else state.bid
        prints = []
        for _ in range(count):
            lots = max(1, round(state.lots_per_order * rng.lognormvariate(-0.5, 1.2)))
            number = self._next_trade_number(numbered_at)
            prints.append(Print(state.code, number, price, lots * LOT, action, BOARD_RG, moment))
        return prints

    def _match(self, state: _Ticker, prints: list[Print]) -> None:
        """Add prints to the session figures (a new Jakarta day starts them afresh)."""
        session = state.session
        flow = state.flow
        for p in prints:
            day = p.time.toordinal()  # a WIB datetime: its date is the Jakarta day
            if day != session.day:
                # The day's last price becomes the previous close, as at the exchange.
                session = state.session = _Session(
                    day=day, previous=session.last or session.previous
                )
            if session.frequency == 0:
                session.open = session.high = session.low = p.price
            session.high = max(session.high, p.price)
            session.low = min(session.low, p.price)
            session.last = p.price
            session.shares += p.shares
            session.value += p.value
            session.frequency += 1
            if flow.random() < state.foreign_share:
                session.foreign_buy += p.shares
            if flow.random() < state.foreign_share:
                session.foreign_sell += p.shares
            session.time = p.time

    def live(self, code: str) -> LiveFigures:
        """The LivePrice figures of ``code`` as of its last match."""
        session = self.ticker(code).session
        moment = session.time
        stamp = self._text.format(self._clock.now_ns(), 6) if moment is None else wib_iso(moment)
        return LiveFigures(
            code=code,
            time=stamp,
            last=session.last or session.previous,
            open=session.open,
            high=session.high,
            low=session.low,
            previous=session.previous,
            shares=session.shares,
            value=session.value,
            frequency=session.frequency,
            foreign_buy=session.foreign_buy,
            foreign_sell=session.foreign_sell,
        )

    # ---- auctions and the touch --------------------------------------------------------------

    def auction(self) -> Phase | None:
        """The auction phase at the virtual clock's time (pre-opening, pre-closing), or None."""
        phase = self._calendar.phase_at(from_ns(self._clock.now_ns()))
        return phase if phase in AUCTIONS else None

    def indicative(self, code: str, phase: Phase) -> Indicative:
        """An IEP/IEV frame's content for ``code`` now, in ``phase``."""
        return Indicative(code, self._text.format(self._clock.now_ns(), 6), phase.value)

    def quote(self, code: str) -> Quote:
        """A best-bid-offer frame's content: the current touch of ``code``."""
        state = self.ticker(code)
        return Quote(code, state.bid, state.offer, self._text.format(self._clock.now_ns(), 6))

    def _next_trade_number(self, now: int) -> int:
        # A market-wide counter per Jakarta day; see _TRADE_NANOS_PER_STEP for the floor.
        floor = nanos_into_wib_day(now) // _TRADE_NANOS_PER_STEP
        day = wib_day(now)
        if day != self._trade_day:
            self._trade_day = day
            self._trade_number = floor
        self._trade_number = max(self._trade_number + 1, floor)
        return self._trade_number


__all__ = [
    "AUCTIONS",
    "BID",
    "OFFER",
    "SIDES",
    "BookSnapshot",
    "Indicative",
    "LiveFigures",
    "Market",
    "Print",
    "Quote",
    "Sent",
    "Tape",
    "on_grid",
    "price_above",
    "price_below",
    "starting_price",
    "tick_size",
    "valid_code",
]
