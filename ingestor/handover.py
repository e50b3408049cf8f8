"""Moving a live feed to a renewed token without a gap: make-before-break.

A socket keeps the access token it authenticated with; a renewed token (:mod:`ingestor.
refresher` writes it into the token file) serves the next connection. Some feeds end a socket
whose token expired (the simulator's ``--close-at-token-exp``; whether Stockbit does is not
known), so before the socket's token expires :class:`Connections` opens a second connection
with the newer token, and ends the first only once the second streams. Both deliver the same
frames for a moment; the writer drops the doubles (snapshots on (side, seq, time), trades on
the trade number), so the files have neither a hole nor a duplicate.

When (:func:`ingestor.refresher.plan_handover`): a quarter of the token's lifetime before it
expires (at most two minutes), or ten minutes before the pre-opening when the token would
expire during that trading day and the file holds one lasting past the close guard.

If the new connection fails (refused, no data within :data:`OVERLAP_TIMEOUT_S`), the old one
carries on and the move is tried again a moment later, until the old token expires; if the old
connection ends first, its loss opens an outage that the new connection's first data frame
closes (the two protocols share one :class:`~ingestor.gaps.Outage`: ``FeedProtocol.sibling``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ingestor.credentials import (
    AuthFailedError,
    Credentials,
    CredentialsError,
    CredentialSource,
)
from ingestor.protocol import DataResumed, Event, FeedProtocol
from ingestor.refresher import plan_handover
from ingestor.session import STOPPED, ConnectError, Outcome, Session
from pipeline.calendar import TradingCalendar

log = logging.getLogger(__name__)

OVERLAP_TIMEOUT_S = 20.0
"""A new connection that brings no data within this long is given up (the old one stays)."""
RETRY_S = 1.0
"""While the old token is still valid: how often to look for a newer one."""
RETRY_EXPIRED_S = 5.0
"""After it expired (the feed still streams on it): how often to look."""
GUARD_RETRY_S = 30.0
"""A pre-opening move that found no token lasting past the close waits this long to try
again, and the ordinary move stays planned meanwhile."""

SessionFactory = Callable[
    [Credentials, FeedProtocol, asyncio.Event, Callable[[], None], Callable[[Event], None]],
    Session,
]
"""``(credentials, protocol, stop, on_connected, on_event) -> Session``: the service builds
sessions (it knows their other collaborators)."""


@dataclass
class _Live:
    creds: Credentials
    protocol: FeedProtocol
    stop: asyncio.Event
    task: asyncio.Task[Outcome]
    streaming: asyncio.Event = field(default_factory=asyncio.Event)
    opened: float = field(default_factory=time.monotonic)


def _utc() -> datetime:
    return datetime.now(UTC)


class Connections:
    """The ingestor's session(s): one, or two during a token handover."""

    def __init__(
        self,
        *,
        make_session: SessionFactory,
        credentials: CredentialSource,
        calendar: TradingCalendar,
        stop: asyncio.Event,
        on_connected: Callable[[], None],
        on_event: Callable[[Event], None],
        on_switch: Callable[[FeedProtocol, Credentials], None],
        on_lost: Callable[[FeedProtocol, str, str], None],
        clock: Callable[[], datetime] = _utc,
    ) -> None:
        """``on_switch(protocol, creds)``: the new connection took over (the service's
        protocol is now ``protocol``); ``on_lost(protocol, cause, detail)``: the old
        connection ended before the new one streamed (the service opens the outage)."""
        self.make_session = make_session
        self.credentials = credentials
        self.calendar = calendar
        self.stop = stop
        self.on_connected = on_connected
        self.on_event = on_event
        self.on_switch = on_switch
        self.on_lost = on_lost
        self.clock = clock
        self.handovers = 0

    def _start(self, creds: Credentials, protocol: FeedProtocol, *, first: bool) -> _Live:
        stop = asyncio.Event()
        streaming = asyncio.Event()

        def on_event(event: Event) -> None:
            if isinstance(event, DataResumed):
                streaming.set()
            self.on_event(event)

        connected = self.on_connected if first else _nothing
        session = self.make_session(creds, protocol, stop, connected, on_event)
        task = asyncio.create_task(session.run(), name="session" if first else "session-next")
        return _Live(creds, protocol, stop, task, streaming)

    async def run(self, creds: Credentials, protocol: FeedProtocol) -> Outcome:
        """Stream on ``creds`` until the connection ends or ``stop`` is set, moving to newer
        tokens on the way. Returns how the last connection ended; raises what it raised
        (:class:`AuthFailedError`, :class:`ConnectError`)."""
        current = self._start(creds, protocol, first=True)
        retry_at = 0.0
        guard_off_until = 0.0
        try:
            while True:
                wait = self._until_due(current.creds, time.monotonic() >= guard_off_until)
                if wait is not None:
                    wait = max(wait, retry_at - time.monotonic())
                await self._wait(current.task, wait)
                if self.stop.is_set():
                    current.stop.set()
                    return await current.task
                if current.task.done():
                    return current.task.result()
                guarded = time.monotonic() >= guard_off_until
                plan = self._plan(current.creds, guarded)
                covering = plan.covering if plan is not None else None
                fresh = await self._newer(current.creds, covering)
                if fresh is None:
                    if covering is not None:
                        guard_off_until = time.monotonic() + GUARD_RETRY_S
                    else:
                        retry_at = time.monotonic() + self._retry_s(current.creds)
                    continue
                nxt = self._start(fresh, current.protocol.sibling(), first=False)
                current = await self._overlap(current, nxt)
                if current is not nxt:
                    retry_at = time.monotonic() + self._retry_s(current.creds)
        finally:
            if not current.task.done():
                current.stop.set()
                with contextlib.suppress(Exception):
                    await current.task

    # -- timing ------------------------------------------------------------------------------

    def _plan(self, creds: Credentials, guarded: bool) -> _Plan | None:
        if creds.expires_at is None:
            return None  # a token without exp: nothing to plan
        lifetime = None
        if creds.issued_at is not None:
            lifetime = (creds.expires_at - creds.issued_at).total_seconds()
        plan = plan_handover(
            now=self.clock(),
            expires_at=creds.expires_at,
            lifetime_s=lifetime,
            calendar=self.calendar if guarded else None,
        )
        return _Plan(plan.at, plan.covering)

    def _until_due(self, creds: Credentials, guarded: bool) -> float | None:
        plan = self._plan(creds, guarded)
        if plan is None:
            return None
        return max(0.0, (plan.at - self.clock()).total_seconds())

    def _retry_s(self, creds: Credentials) -> float:
        expired = creds.expires_at is not None and creds.expires_at <= self.clock()
        return RETRY_EXPIRED_S if expired else RETRY_S

    async def _wait(self, task: asyncio.Task[Outcome], timeout: float | None) -> None:
        stopped = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait(
                {task, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopped.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopped

    async def _newer(self, current: Credentials, covering: datetime | None) -> Credentials | None:
        """Credentials for a token newer than ``current``'s (lasting past ``covering`` if
        given), or None. The file is looked at first; a key is fetched only for a newer one."""
        try:
            token, _, expires_at = await asyncio.to_thread(self.credentials.load)
        except (AuthFailedError, CredentialsError):
            return None
        if not _later(expires_at, current, token, covering):
            return None
        try:
            fresh = await asyncio.to_thread(self.credentials.obtain)
        except (AuthFailedError, CredentialsError) as exc:
            log.warning("token handover: cannot use the newer token yet (%s)", exc)
            return None
        return fresh if _later(fresh.expires_at, current, fresh.token.reveal(), covering) else None

    # -- the overlap -------------------------------------------------------------------------

    async def _overlap(self, current: _Live, nxt: _Live) -> _Live:
        """Run both until the new one streams (it takes over), fails (the old one stays) or
        the old one ends first (the new one takes over; the outage is the protocol's)."""
        streaming = asyncio.create_task(nxt.streaming.wait())
        stopped = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait(
                {streaming, stopped, current.task, nxt.task},
                timeout=OVERLAP_TIMEOUT_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for helper in (streaming, stopped):
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
        if self.stop.is_set():
            await _end(nxt)
            return current
        if nxt.streaming.is_set():
            await _end(current)
            self.handovers += 1
            self.on_switch(nxt.protocol, nxt.creds)
            log.info(
                "token handover: the connection on the renewed token streamed %.2f s after it "
                "opened; the old one is closed (%d handover(s) so far)",
                time.monotonic() - nxt.opened,
                self.handovers,
            )
            return nxt
        if current.task.done():
            cause, detail = _ending(current.task)
            log.warning(
                "token handover: the old connection ended (%s: %s) before the new one "
                "streamed; the new one takes over",
                cause,
                detail,
            )
            self.on_lost(current.protocol, cause, detail)
            self.handovers += 1
            self.on_switch(nxt.protocol, nxt.creds)
            return nxt
        if nxt.task.done():
            cause, detail = _ending(nxt.task)
            log.warning("token handover: the new connection failed (%s: %s)", cause, detail)
        else:
            log.warning(
                "token handover: the new connection brought no data in %.0f s; kept the old",
                OVERLAP_TIMEOUT_S,
            )
            await _end(nxt)
        return current


@dataclass(frozen=True)
class _Plan:
    at: datetime
    covering: datetime | None


def _nothing() -> None:
    return None


def _later(
    expires_at: datetime | None, current: Credentials, token: str, covering: datetime | None
) -> bool:
    if token == current.token.reveal():
        return False
    if expires_at is None:
        return False
    if current.expires_at is not None and expires_at <= current.expires_at:
        return False
    return covering is None or expires_at > covering


async def _end(live: _Live) -> None:
    live.stop.set()
    with contextlib.suppress(Exception):
        await live.task


def _ending(task: asyncio.Task[Outcome]) -> tuple[str, str]:
    """(cause, detail) of a finished session task, for logs and the outage."""
    error = task.exception()
    if isinstance(error, AuthFailedError):
        # The old token was refused while a valid one is already connecting: the process is
        # not auth_failed, the old socket simply ended.
        return "disconnect", f"the old token was refused: {error}"
    if isinstance(error, ConnectError):
        return "disconnect", str(error)
    if error is not None:
        return "disconnect", f"{type(error).__name__}: {error}"[:200]
    outcome = task.result()
    return (outcome.cause if outcome.cause != STOPPED else "disconnect"), outcome.detail
