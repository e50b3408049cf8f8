"""Who wants what: the index from ticker to the connections subscribed to it (no I/O).

A connection's subscription is replaced as a whole by each request carrying a channel. Only
two channels produce data: ``order_book`` (wrapper field 10) and ``running_trade_batch``
(wrapper field 8, where ``*`` means every ticker the simulator is currently running).
Codes that cannot be IDX codes are ignored.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from simulator.market import valid_code
from stockbit.messages import Channel

WILDCARD = "*"

L = TypeVar("L", bound=Hashable)


@dataclass(frozen=True)
class Wanted:
    """One connection's subscription, cleaned up."""

    books: frozenset[str] = frozenset()
    trades: frozenset[str] = frozenset()
    all_trades: bool = False

    @classmethod
    def from_channel(cls, channel: Channel) -> Wanted:
        """Keep the valid codes of the two data channels; note a ``*`` trade subscription."""
        return cls(
            books=frozenset(c for c in channel.order_book if valid_code(c)),
            trades=frozenset(c for c in channel.running_trade_batch if valid_code(c)),
            all_trades=WILDCARD in channel.running_trade_batch,
        )


class Subscriptions(Generic[L]):
    """The subscription of every connection, indexed by ticker."""

    def __init__(self) -> None:
        self._wanted: dict[L, Wanted] = {}
        self._books: dict[str, set[L]] = {}
        self._trades: dict[str, set[L]] = {}
        self._all_trades: set[L] = set()
        self.version = 0
        """Bumped on every change, so a loop can notice that its view is stale."""

    def replace(self, link: L, wanted: Wanted) -> None:
        """Make ``wanted`` the whole subscription of ``link``."""
        self.remove(link)
        self._wanted[link] = wanted
        for code in wanted.books:
            self._books.setdefault(code, set()).add(link)
        for code in wanted.trades:
            self._trades.setdefault(code, set()).add(link)
        if wanted.all_trades:
            self._all_trades.add(link)
        self.version += 1

    def remove(self, link: L) -> None:
        """Forget ``link`` entirely."""
        old = self._wanted.pop(link, None)
        if old is None:
            return
        for code in old.books:
            _discard(self._books, code, link)
        for code in old.trades:
            _discard(self._trades, code, link)
        self._all_trades.discard(link)
        self.version += 1

    def wanted(self, link: L) -> Wanted:
        """The current subscription of ``link`` (empty if none)."""
        return self._wanted.get(link, Wanted())

    def book_links(self, code: str) -> set[L]:
        """Connections that want the order book of ``code``."""
        return self._books.get(code, set())

    def trade_links(self, code: str) -> set[L]:
        """Connections that want the trades of ``code`` (by name or by ``*``)."""
        named = self._trades.get(code)
        if not self._all_trades:
            return named or set()
        return self._all_trades | named if named else self._all_trades

    def book_codes(self) -> list[str]:
        """Every ticker with at least one book subscriber, sorted."""
        return sorted(self._books)

    def active_codes(self) -> set[str]:
        """Tickers the market must run: named in any connection's subscription."""
        return set(self._books) | set(self._trades)


def _discard(index: dict[str, set[L]], code: str, link: L) -> None:
    links = index.get(code)
    if links is not None:
        links.discard(link)
        if not links:
            del index[code]
