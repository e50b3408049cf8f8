"""The order-book body grammar: ``#O|CODE|SIDE|price;orders;shares|...``.

Prices are integer rupiah, ``orders`` the number of resting orders, ``shares`` the resting
quantity in shares (lots = shares / 100). Levels come best first.
"""

from __future__ import annotations

from dataclasses import dataclass

from stockbit.errors import ProtocolError
from stockbit.messages import LOT

BID = "BID"
OFFER = "OFFER"
SIDES = (BID, OFFER)
_PREFIX = "#O|"


@dataclass(frozen=True, slots=True)
class Level:
    """One price level of one side."""

    price: int
    orders: int
    shares: int

    @property
    def lots(self) -> float:
        """Shares in lots (whole numbers on the regular board)."""
        return self.shares / LOT

    @property
    def value(self) -> int:
        """Resting value in rupiah: price × shares."""
        return self.price * self.shares


@dataclass(frozen=True, slots=True)
class Body:
    """A parsed order-book body."""

    code: str
    side: str
    levels: tuple[Level, ...]


def split_header(body: str) -> tuple[str, str, str]:
    """Return (code, side, level text) without parsing the levels.

    The level text is what follows ``#O|CODE|SIDE|`` (empty for an empty side). This is the
    cheap part of parsing, done once per frame by the ingestor.
    """
    if not body.startswith(_PREFIX):
        raise ProtocolError(f"book body does not start with {_PREFIX!r}")
    bar = body.find("|", 3)
    if bar < 0:
        raise ProtocolError("book body has no side")
    code = body[3:bar]
    nxt = body.find("|", bar + 1)
    side = body[bar + 1 :] if nxt < 0 else body[bar + 1 : nxt]
    if side not in SIDES:
        raise ProtocolError(f"book side {side[:12]!r} is neither BID nor OFFER")
    if not code:
        raise ProtocolError("book body has an empty code")
    return code, side, "" if nxt < 0 else body[nxt + 1 :]


def parse_levels(text: str) -> tuple[Level, ...]:
    """Parse ``price;orders;shares|...`` into levels; empty parts are skipped."""
    levels = []
    for part in text.split("|"):
        if not part:
            continue
        pieces = part.split(";")
        if len(pieces) != 3 or not all(p.isdigit() and p.isascii() for p in pieces):
            raise ProtocolError(f"bad book level {part[:40]!r}")
        levels.append(Level(int(pieces[0]), int(pieces[1]), int(pieces[2])))
    return tuple(levels)


def parse_body(body: str) -> Body:
    """Parse a whole body."""
    code, side, text = split_header(body)
    return Body(code, side, parse_levels(text))


def format_body(code: str, side: str, levels: tuple[Level, ...] | list[Level]) -> str:
    """Build a body string (the simulator's side of the grammar)."""
    parts = [f"{lv.price};{lv.orders};{lv.shares}" for lv in levels]
    return "|".join(["#O", code, side, *parts])
