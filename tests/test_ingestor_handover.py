"""Make-before-break with fake sessions: the token handover's three outcomes."""

# The new connection takes over once it streams, the old one dying first opens the outage, a
# failed new one leaves the old one running.

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

from ingestor.credentials import Credentials, CredentialSource
from ingestor.entries import EntryPacker
from ingestor.handover import Connections
from ingestor.protocol import DataResumed, Event, FeedProtocol
from ingestor.session import STOPPED, ConnectError, Outcome, Session
from pipeline.calendar import TradingCalendar
from pipeline.keys import Keys
from pipeline.secret import Secret

LIFETIME = timedelta(seconds=1)
"""One-second tokens: the move is due a quarter second before expiry (a quarter of the life)."""


def creds(name: str, issued: datetime) -> Credentials:
    return Credentials("1", Secret("key"), Secret(name), issued + LIFETIME, issued)


class FakeSource:
    """The token file: whatever ``current`` holds."""

    def __init__(self, current: Credentials) -> None:
        self.current = current

    def load(self) -> tuple[str, str, datetime | None]:
        return self.current.token.reveal(), "1", self.current.expires_at

    def obtain(self) -> Credentials:
        return self.current


@dataclass
class Script:
    """What a fake session does: stream after ``stream_after`` s (None: never), end by itself
    after ``end_after`` s with ``outcome`` or by raising ``error``."""

    stream_after: float | None = 0.05
    end_after: float | None = None
    error: Exception | None = None
    outcome: Outcome = field(default_factory=lambda: Outcome("disconnect", "closed", 1.0))


class FakeSession:
    def __init__(
        self,
        script: Script,
        stop: asyncio.Event,
        on_connected: Callable[[], None],
        on_event: Callable[[Event], None],
    ) -> None:
        self.script, self.stop = script, stop
        self.on_connected, self.on_event = on_connected, on_event
        self.ended_by = ""

    async def run(self) -> Outcome:
        script = self.script
        self.on_connected()
        if script.stream_after is not None:
            await asyncio.sleep(script.stream_after)
            self.on_event(DataResumed("now"))
        waiter = asyncio.create_task(self.stop.wait())
        done, _ = await asyncio.wait({waiter}, timeout=script.end_after)
        waiter.cancel()
        if done:
            self.ended_by = "stop"
            return Outcome(STOPPED, "", 1.0)
        self.ended_by = "itself"
        if script.error is not None:
            raise script.error
        return script.outcome


class Harness:
    def __init__(self, scripts: list[Script]) -> None:
        self.base, self.started = datetime.now(UTC), time.monotonic()
        self.source = FakeSource(creds("t1", self.clock()))
        self.scripts = scripts
        self.sessions: list[FakeSession] = []
        self.switched: list[tuple[FeedProtocol, str]] = []
        self.lost: list[tuple[FeedProtocol, str]] = []
        self.events: list[Event] = []
        self.stop = asyncio.Event()
        self.protocol = FeedProtocol(
            EntryPacker(Keys(), "test", 1000), ping_interval_s=10, dead_after_s=30
        )

    def clock(self) -> datetime:
        """Wall time that moves with the monotonic clock the sessions sleep on."""
        return self.base + timedelta(seconds=time.monotonic() - self.started)

    def make(
        self,
        _creds: Credentials,
        _protocol: FeedProtocol,
        stop: asyncio.Event,
        on_connected: Callable[[], None],
        on_event: Callable[[Event], None],
    ) -> Session:
        session = FakeSession(self.scripts.pop(0), stop, on_connected, on_event)
        self.sessions.append(session)
        return cast(Session, session)

    def connections(self) -> Connections:
        return Connections(
            make_session=self.make,
            credentials=cast(CredentialSource, self.source),
            calendar=TradingCalendar(),
            stop=self.stop,
            on_connected=lambda: None,
            on_event=self.events.append,
            on_switch=lambda p, c: self.switched.append((p, c.token.reveal())),
            on_lost=lambda p, cause, _detail: self.lost.append((p, cause)),
            clock=self.clock,
        )

    def renew(self) -> None:
        self.source.current = creds(f"t{len(self.switched) + 2}", self.clock())


async def run_until(harness: Harness, seconds: float, renew_at: float | None = 0.5) -> Outcome:
    connections = harness.connections()

    async def driver() -> None:
        if renew_at is not None:
            await asyncio.sleep(renew_at)
            harness.renew()
        await asyncio.sleep(seconds - (renew_at or 0))
        harness.stop.set()

    task = asyncio.create_task(driver())
    outcome = await connections.run(harness.source.current, harness.protocol)
    await task
    return outcome


def test_the_new_connection_takes_over_once_it_streams() -> None:
    harness = Harness([Script(), Script()])
    outcome = asyncio.run(run_until(harness, 1.1))
    assert outcome.cause == STOPPED
    assert [s.ended_by for s in harness.sessions] == ["stop", "stop"]
    [(protocol, token)] = harness.switched
    assert token == "t2" and protocol is not harness.protocol
    assert protocol.stats is harness.protocol.stats and protocol.outage is harness.protocol.outage
    assert harness.lost == []


def test_the_old_one_dying_first_hands_over_through_the_outage() -> None:
    # The old socket is closed 0.8 s in (the feed ends it at expiry); the new one streams late.
    harness = Harness([Script(end_after=0.8), Script(stream_after=0.3)])
    outcome = asyncio.run(run_until(harness, 1.4))
    assert outcome.cause == STOPPED
    assert [cause for _, cause in harness.lost] == ["disconnect"]
    assert harness.lost[0][0] is harness.protocol, "the old protocol opens the outage"
    assert [t for _, t in harness.switched] == ["t2"]


def test_a_failed_new_connection_leaves_the_old_one_and_is_tried_again() -> None:
    refused = Script(stream_after=None, end_after=0.01, error=ConnectError("refused"))
    harness = Harness([Script(end_after=None), refused, Script()])
    outcome = asyncio.run(run_until(harness, 2.4))
    assert outcome.cause == STOPPED
    assert [s.ended_by for s in harness.sessions] == ["stop", "itself", "stop"]
    assert [t for _, t in harness.switched] == ["t2"] and harness.lost == []


def test_no_newer_token_keeps_the_socket_until_it_ends() -> None:
    harness = Harness([Script(end_after=1.3)])
    outcome = asyncio.run(run_until(harness, 1.5, renew_at=None))
    assert outcome.cause == "disconnect" and harness.switched == [] and len(harness.sessions) == 1
