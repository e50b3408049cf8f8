"""Reconnect delays: exponential backoff with jitter, reset after a stable connection (pure)."""

from __future__ import annotations

import random


class Backoff:
    """Delays of ``base · 2ⁿ`` capped at ``cap``, each scaled by a random factor in [½, 1].

    The jitter keeps several ingestors that lost the same server from reconnecting in lock
    step. A connection that stayed up for ``stable_after`` seconds (authenticated, subscribed
    and streaming) proves the trouble is over, so the next failure starts again from ``base``:
    a feed that drops a working connection every few seconds is reconnected at once each
    time, while a server that refuses or kills connections immediately is backed off.
    """

    def __init__(
        self,
        base: float = 0.5,
        cap: float = 30.0,
        stable_after: float = 3.0,
        rng: random.Random | None = None,
    ) -> None:
        self.base = base
        self.cap = cap
        self.stable_after = stable_after
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling."""
        ceiling = min(self.cap, self.base * (2.0 ** min(self.attempt, 30)))
        self.attempt += 1
        return ceiling * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        """Start again from ``base``."""
        self.attempt = 0

    def connection_ended(self, lasted: float) -> None:
        """Record how long a connection lasted; a stable one resets the backoff."""
        if lasted >= self.stable_after:
            self.reset()
