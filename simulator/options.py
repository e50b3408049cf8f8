"""The simulator's settings, as parsed from the command line by :mod:`simulator.service`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from simulator.credentials import (
    DEFAULT_REFRESH_TTL,
    DEFAULT_SECRET,
    DEFAULT_TOKEN_TTL,
    DEFAULT_USER_ID,
)


@dataclass(frozen=True)
class Faults:
    """Deliberate misbehaviour, each off when None (seconds unless noted)."""

    drop_every: float | None = None
    """Abort each connection this long after it opened."""
    malformed_every: int | None = None
    """Replace every Nth data frame of a connection with undecodable bytes."""
    stall_every: float | None = None
    """Every this many seconds of a connection's life, go quiet (no data, no pongs)..."""
    stall_for: float = 5.0
    """...for this long."""
    mute_every: float | None = None
    """Every this many seconds of a connection's life, send no data but keep answering pings
    (a "zombie" subscription: alive, silent; a resubscribe does not cure it)..."""
    mute_for: float = 5.0
    """...for this long."""
    expire_token_after: float | None = None
    """Treat a token as expired this long after it authenticated a connection."""
    drop_trades_every: int | None = None
    """Never send every Nth running-trade frame of a connection (the exchange's LivePrice
    figures still count its prints: a capture with a known coverage shortfall)."""
    close_at_token_exp: bool = False
    """Close a socket when the access token that authenticated it reaches its ``exp``."""


@dataclass(frozen=True)
class Options:
    """Everything the server needs to run."""

    host: str = "127.0.0.1"
    port: int = 8765
    port_file: Path | None = None
    secret: str = DEFAULT_SECRET
    token_ttl: float = DEFAULT_TOKEN_TTL
    """Lifetime of the access tokens ``/login/refresh`` and ``/sim/relogin`` issue."""
    refresh_ttl: float = DEFAULT_REFRESH_TTL
    """Lifetime of the refresh tokens they issue."""
    user_id: int = DEFAULT_USER_ID
    """Whose pair ``/sim/relogin`` returns."""
    ping_window: float = 30.0
    levels: int = 60
    rate: float = 1.0
    max_rate: bool = False
    pace: float | None = None
    clock_start: datetime | None = None
    clock_speed: float = 1.0
    journal: Path | None = None
    seed: int | None = None
    lenient: bool = False
    """Stream a code's order book even without liveprice, iepiev and best_bid_offer for it
    on the same connection (the real server is believed not to: strict is the default)."""
    prints_per_batch: int | None = None
    """Prints in every live trade batch; None draws 1–3 per batch."""
    faults: Faults = Faults()

    def __repr__(self) -> str:
        # The secret signs tokens: keep it out of any log line that prints the options.
        return f"Options(host={self.host!r}, port={self.port}, max_rate={self.max_rate}, ...)"
