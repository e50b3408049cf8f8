"""The feed: runs the market on a schedule and delivers its frames to the subscribed links.

The market is shared: one BBCA BID snapshot is generated once and sent to every connection
subscribed to BBCA, so two ingestors watching the same ticker (hot standby) see identical
frames, and per-(ticker, side) seqs never skip on any connection.

Normal mode: each (ticker, side) gets a snapshot every ~1/rate seconds (jittered ±50 %), and
each ticker a trade batch at Poisson rate ``rate``. Max-rate mode: book frames go out as fast as
the slowest subscriber drains, round-robin over the subscribed (ticker, side) pairs, in
batches; trades keep their normal schedule, but their frames (and their LivePrice) go out with
the next round of books, in its one write per connection, as a busy server's writes carry
whatever channels were due. Written one by one they cost the client a wake-up each, which
its books, arriving 256 to a write, do not: the two would not be compared on equal terms.

Beside books and trades, in both modes: a LivePrice (wrapper 9) after every match batch, with
the session figures that batch left; a best-bid-offer frame (13) whenever a snapshot moved the
touch; and, only while the virtual clock is in a call auction (pre-opening, pre-closing), an
IEP/IEV frame (11) per ticker every ~1/rate seconds. A subscribe gets the current LivePrice
and best bid/offer of its codes (and their IEP/IEV during an auction) right after the books
and the tape backfill.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable

from simulator.frames import (
    BookPress,
    encode_book,
    encode_indicative,
    encode_live,
    encode_quote,
    encode_tape,
)
from simulator.link import Link
from simulator.market import BookSnapshot, Market
from simulator.subscriptions import Subscriptions, Wanted
from stockbit.book import SIDES
from stockbit.messages import Channel

log = logging.getLogger(__name__)

MAX_RATE_BATCH = 256
"""Book frames built per pump round in max-rate mode, written with one transport write."""

_IDLE_PAUSE = 0.05
_IEP = "iep"
"""Timer key suffix of a ticker's IEP/IEV schedule (book sides use the side, trades "")."""


class Feed:
    """Market schedule plus fan-out to subscribers."""

    def __init__(
        self,
        market: Market,
        rng: random.Random,
        rate: float = 1.0,
        max_rate: bool = False,
        pace: float | None = None,
        *,
        strict: bool = True,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._market = market
        self._rng = rng
        self._rate = rate
        self._max_rate = max_rate
        self._pace = pace
        """Max-rate mode only: at most this many book frames per second in all (None = no cap)."""
        self._strict = strict
        """Books stream only with liveprice, iepiev and best_bid_offer (see subscriptions)."""
        self._subs: Subscriptions[Link] = Subscriptions()
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._press = BookPress(market)
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._pumping = False
        """Max-rate mode, books streaming: the pump's rounds carry the tape's frames too."""
        self._riders: set[Link] = set()
        """Links with tape or LivePrice frames queued for the pump's next write."""
        self.book_frames = 0
        self.trade_frames = 0
        self.price_frames = 0
        self.iep_frames = 0
        self.bbo_frames = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the max-rate pump (timers start as tickers are subscribed)."""
        if self._max_rate and self._pump_task is None:
            self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    async def stop(self) -> None:
        """Stop every timer and the pump."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
            self._pump_task = None

    # ---- subscriptions ---------------------------------------------------------------------

    def subscribe(self, link: Link, channel: Channel) -> Wanted:
        """Replace the subscription of ``link``; send it the current books and the recent tape.

        The fresh BID and OFFER snapshots go to every subscriber of those codes (they are new
        market states, with new seqs); the backfill, a replay of ~40 recent prints per code
        with their original trade numbers, goes to ``link`` only, as do the current LivePrice
        and best bid/offer of its codes, and their IEP/IEV during an auction. The LivePrice is
        the last one sent (same figures, same time), as a reconnecting client gets it again.
        """
        wanted = Wanted.from_channel(channel, strict=self._strict)
        before = self._subs.active_codes()
        self._subs.replace(link, wanted)
        self._retime(before)
        touched = {link}
        for code in sorted(wanted.books):
            for side in SIDES:
                touched |= self._deliver_book(self._market.book(code, side))
        tape_codes = set(wanted.trades)
        if wanted.all_trades:
            tape_codes |= self._subs.active_codes()
        for code in sorted(tape_codes):
            tape = self._market.recent(code)
            if tape.prints:
                link.data(encode_tape(tape), tape)
                self.trade_frames += 1
        market = self._market
        for code in sorted(wanted.prices):
            figures = market.live(code)
            link.data(encode_live(figures), figures)
            self.price_frames += 1
        for code in sorted(wanted.bbos):
            quote = market.quote(code)
            link.data(encode_quote(quote), quote)
            self.bbo_frames += 1
        phase = market.auction() if wanted.ieps else None
        if phase is not None:
            for code in sorted(wanted.ieps):
                indicative = market.indicative(code, phase)
                link.data(encode_indicative(indicative), indicative)
                self.iep_frames += 1
        for each in touched:
            each.flush()
        return wanted

    def remove(self, link: Link) -> None:
        """Stop sending anything to ``link``."""
        before = self._subs.active_codes()
        self._subs.remove(link)
        self._retime(before)

    def _retime(self, before: set[str]) -> None:
        after = self._subs.active_codes()
        loop = asyncio.get_running_loop()
        rng = self._rng
        for code in sorted(after - before):
            if not self._max_rate:
                for side in SIDES:
                    delay = rng.uniform(0.0, 1.0) / self._rate
                    self._timers[(code, side)] = loop.call_later(delay, self._book_tick, code, side)
            delay = rng.expovariate(self._rate)
            self._timers[(code, "")] = loop.call_later(delay, self._trade_tick, code)
            delay = rng.uniform(0.0, 1.0) / self._rate
            self._timers[(code, _IEP)] = loop.call_later(delay, self._iep_tick, code)
        for code in before - after:
            for key in ((code, side) for side in (*SIDES, "", _IEP)):
                handle = self._timers.pop(key, None)
                if handle is not None:
                    handle.cancel()
        self._wake.set()

    # ---- normal mode ---------------------------------------------------------------------

    def _book_tick(self, code: str, side: str) -> None:
        def once() -> None:
            market = self._market
            touch = market.touch(code)
            links = self._deliver_book(market.book(code, side))
            if market.touch(code) != touch:
                links = links | self._deliver_quote(code)
            self._flush(links)

        self._guarded(once)
        delay = self._rng.uniform(0.5, 1.5) / self._rate
        self._reschedule((code, side), delay, lambda: self._book_tick(code, side))

    def _trade_tick(self, code: str) -> None:
        def once() -> None:
            tape = self._market.trades(code)
            links = self._subs.trade_links(code)
            if links:
                payload = encode_tape(tape)
                self.trade_frames += 1
                for link in links:
                    link.data(payload, tape)
            # The exchange updates LivePrice after each match: one per batch, after its prints.
            prices = self._subs.price_links(code)
            if prices:
                figures = self._market.live(code)
                payload = encode_live(figures)
                self.price_frames += 1
                for link in prices:
                    link.data(payload, figures)
            if self._pumping:
                # Max-rate mode: the frames ride with the next round of books (one write,
                # within one round), as a busy server's do, instead of a write per batch.
                self._riders |= links | prices
            else:
                self._flush(links | prices)

        self._guarded(once)
        self._reschedule(
            (code, ""), self._rng.expovariate(self._rate), lambda: self._trade_tick(code)
        )

    def _iep_tick(self, code: str) -> None:
        def once() -> None:
            links = self._subs.iep_links(code)
            phase = self._market.auction() if links else None
            if phase is not None:
                indicative = self._market.indicative(code, phase)
                payload = encode_indicative(indicative)
                self.iep_frames += 1
                for link in links:
                    link.data(payload, indicative)
                self._flush(links)

        self._guarded(once)
        delay = self._rng.uniform(0.5, 1.5) / self._rate
        self._reschedule((code, _IEP), delay, lambda: self._iep_tick(code))

    def _deliver_quote(self, code: str) -> set[Link]:
        links = self._subs.bbo_links(code)
        if links:
            quote = self._market.quote(code)
            payload = encode_quote(quote)
            self.bbo_frames += 1
            for link in links:
                link.data(payload, quote)
        return links

    def _reschedule(self, key: tuple[str, str], delay: float, again: Callable[[], None]) -> None:
        # A timer cancelled while its callback ran (ticker dropped) must not come back.
        if key in self._timers:
            self._timers[key] = asyncio.get_running_loop().call_later(delay, again)

    def _guarded(self, step: Callable[[], None]) -> None:
        # An exception in a timer callback would silently end that ticker's schedule.
        try:
            step()
        except Exception:
            log.exception("feed step failed")

    def _deliver_book(self, snapshot: BookSnapshot) -> set[Link]:
        links = self._subs.book_links(snapshot.code)
        if links:
            payload = encode_book(snapshot)
            self.book_frames += 1
            for link in links:
                link.data(payload, snapshot)
        return links

    @staticmethod
    def _flush(links: Iterable[Link]) -> None:
        for link in links:
            link.flush()

    # ---- max-rate mode -------------------------------------------------------------------

    async def _pump(self) -> None:
        version = -1
        pairs: list[tuple[str, str, list[Link]]] = []
        links: list[Link] = []
        turn = 0
        loop = asyncio.get_running_loop()
        paced_since, paced_sent = loop.time(), 0
        while True:
            if version != self._subs.version:
                version = self._subs.version
                paced_since, paced_sent = loop.time(), 0
                pairs = [
                    (code, side, list(self._subs.book_links(code)))
                    for code in self._subs.book_codes()
                    for side in SIDES
                ]
                links = list({link for _, _, targets in pairs for link in targets})
            self._pumping = bool(pairs)
            if not pairs:
                self._flush(self._riders)
                self._riders.clear()
                self._wake.clear()
                await self._wake.wait()
                continue
            if not any(link.open and not link.stalled and not link.silent for link in links):
                # Nobody can receive (stalled or closing): don't burn the CPU building frames.
                await asyncio.sleep(_IDLE_PAUSE)
                continue
            press = self._press.press
            count = len(pairs)
            for _ in range(MAX_RATE_BATCH):
                code, side, targets = pairs[turn % count]
                turn += 1
                payload, snapshot = press(code, side)
                for link in targets:
                    link.data(payload, snapshot)
            self.book_frames += MAX_RATE_BATCH
            for link in links:
                link.flush()
            if self._riders:
                self._flush(self._riders)  # those without books of their own
                self._riders.clear()
            for link in links:
                await link.drain()
            if self._pace is not None:
                # A fixed offered load from prebuilt frames, for "what rate is sustained" runs.
                paced_sent += MAX_RATE_BATCH
                ahead = paced_since + paced_sent / self._pace - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                    continue
            # Let the receive side (pings, subscription changes) run between batches.
            await asyncio.sleep(0)
