"""The simulator's settings, as parsed from the command line by :mod:`simulator.service`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from simulator.credentials import DEFAULT_SECRET


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
    expire_token_after: float | None = None
    """Treat a token as expired this long after it authenticated a connection."""


@dataclass(frozen=True)
class Options:
    """Everything the server needs to run."""

    host: str = "127.0.0.1"
    port: int = 8765
    port_file: Path | None = None
    secret: str = DEFAULT_SECRET
    ping_window: float = 30.0
    levels: int = 60
    rate: float = 1.0
    max_rate: bool = False
    pace: float | None = None
    clock_start: datetime | None = None
    clock_speed: float = 1.0
    journal: Path | None = None
    seed: int | None = None
    faults: Faults = Faults()

    def __repr__(self) -> str:
        # The secret signs tokens: keep it out of any log line that prints the options.
        return f"Options(host={self.host!r}, port={self.port}, max_rate={self.max_rate}, ...)"
