"""Who wants what: the index from ticker to the connections subscribed to it (no I/O).

A connection's subscription is replaced as a whole by each request carrying a channel. Five
channels produce data: ``order_book`` (wrapper field 10), ``running_trade_batch`` (field 8,
where ``*`` means every ticker the simulator is currently running), ``liveprice`` (9),
``iepiev`` (11) and ``best_bid_offer`` (13). Codes that cannot be IDX codes are ignored.

**Strict mode** (the default): a code's order book streams to a connection only while that
same connection's subscription also carries ``liveprice``, ``iepiev`` and ``best_bid_offer``
for the code. One source states, "verified upstream", that the real server behaves so
(stockbit-protocol.md §2.4); a client that subscribes ``order_book`` alone would then record
no book at all in production, so the simulator makes that failure visible in tests. Book
codes held back for that reason are kept as :attr:`Wanted.withheld` (the server logs them).
``--lenient`` turns strict mode off.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from simulator.market import valid_code
from stockbit.messages import Channel

WILDCARD = "*"

L = TypeVar("L", bound=Hashable)


def _codes(codes: Iterable[str]) -> frozenset[str]:
    return frozenset(c for c in codes if valid_code(c))


@dataclass(frozen=True)
class Wanted:
    """One connection's subscription, cleaned up."""

    books: frozenset[str] = frozenset()
    """Codes whose order book streams (in strict mode: only those with all companions)."""
    trades: frozenset[str] = frozenset()
    all_trades: bool = False
    prices: frozenset[str] = frozenset()
    ieps: frozenset[str] = frozenset()
    bbos: frozenset[str] = frozenset()
    withheld: frozenset[str] = frozenset()
    """Codes whose order book was asked for without liveprice, iepiev and best_bid_offer:
    nothing streams for them in strict mode."""

    @classmethod
    def from_channel(cls, channel: Channel, strict: bool = True) -> Wanted:
        """Keep the valid codes of the data channels; note a ``*`` trade subscription.

        With ``strict``, an ``order_book`` code streams only if the same channel also carries
        it in ``liveprice``, ``iepiev`` and ``best_bid_offer``.
        """
        books = _codes(channel.order_book)
        prices = _codes(channel.liveprice)
        ieps = _codes(channel.iepiev)
        bbos = _codes(channel.best_bid_offer)
        withheld = books - (prices & ieps & bbos) if strict else frozenset()
        return cls(
            books=books - withheld,
            trades=_codes(channel.running_trade_batch),
            all_trades=WILDCARD in channel.running_trade_batch,
            prices=prices,
            ieps=ieps,
            bbos=bbos,
            withheld=withheld,
        )


_INDEXED = ("books", "trades", "prices", "ieps", "bbos")
"""The :class:`Wanted` attributes indexed by code."""


class Subscriptions(Generic[L]):
    """The subscription of every connection, indexed by ticker."""

    def __init__(self) -> None:
        self._wanted: dict[L, Wanted] = {}
        self._index: dict[str, dict[str, set[L]]] = {name: {} for name in _INDEXED}
        self._all_trades: set[L] = set()
        self.version = 0
        """Bumped on every change, so a loop can notice that its view is stale."""

    def replace(self, link: L, wanted: Wanted) -> None:
        """Make ``wanted`` the whole subscription of ``link``."""
        self.remove(link)
        self._wanted[link] = wanted
        for name, index in self._index.items():
            codes: frozenset[str] = getattr(wanted, name)
            for code in codes:
                index.setdefault(code, set()).add(link)
        if wanted.all_trades:
            self._all_trades.add(link)
        self.version += 1

    def remove(self, link: L) -> None:
        """Forget ``link`` entirely."""
        old = self._wanted.pop(link, None)
        if old is None:
            return
        for name, index in self._index.items():
            codes: frozenset[str] = getattr(old, name)
            for code in codes:
                _discard(index, code, link)
        self._all_trades.discard(link)
        self.version += 1

    def wanted(self, link: L) -> Wanted:
        """The current subscription of ``link`` (empty if none)."""
        return self._wanted.get(link, Wanted())

    def book_links(self, code: str) -> set[L]:
        """Connections the order book of ``code`` streams to."""
        return self._index["books"].get(code, set())

    def trade_links(self, code: str) -> set[L]:
        """Connections that want the trades of ``code`` (by name or by ``*``)."""
        named = self._index["trades"].get(code)
        if not self._all_trades:
            return named or set()
        return self._all_trades | named if named else self._all_trades

    def price_links(self, code: str) -> set[L]:
        """Connections that want the LivePrice frames of ``code``."""
        return self._index["prices"].get(code, set())

    def iep_links(self, code: str) -> set[L]:
        """Connections that want the IEP/IEV frames of ``code``."""
        return self._index["ieps"].get(code, set())

    def bbo_links(self, code: str) -> set[L]:
        """Connections that want the best-bid-offer frames of ``code``."""
        return self._index["bbos"].get(code, set())

    def book_codes(self) -> list[str]:
        """Every ticker whose book streams to at least one connection, sorted."""
        return sorted(self._index["books"])

    def active_codes(self) -> set[str]:
        """Tickers the market must run: named in any connection's data channels (book codes
        withheld by strict mode are not: nothing would be sent for them)."""
        active: set[str] = set()
        for index in self._index.values():
            active.update(index)
        return active


def _discard(index: dict[str, set[L]], code: str, link: L) -> None:
    links = index.get(code)
    if links is not None:
        links.discard(link)
        if not links:
            del index[code]
